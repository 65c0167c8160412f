"""The serving reshape changed no answer: a saved run gives the same scores, lists, what-ifs and
explanations, bit for bit, as the code before it (commit 6033471 wrote the golden file with
tests/golden_outputs.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from golden_outputs import FIXTURE, outputs

GOLDEN = FIXTURE.parent / "tiny_run_golden.json"


def test_a_saved_run_answers_exactly_as_before_the_reshape(tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    got, want = outputs(run), json.loads(GOLDEN.read_text())
    for user, expected in want["users"].items():
        for key, value in expected.items():
            assert got["users"][user][key] == value, f"user {user}: {key} differs from the golden answer"
    assert got == want
