"""The serving reshape changed no answer: a saved run gives the same scores, lists, what-ifs and
explanations, bit for bit, as the code before it (commit 6033471 wrote the golden file with
tests/golden_outputs.py).

One exception, by design: since 58f9849 a counterfactual scores its steps against the items
that can still reach the candidate's rank, not the whole catalog, so its three scores
(``score_before``, ``score_after``, ``cutoff``) come from a matrix product of another shape and
may differ in the last bits (at most 1e-6 relative here). What the counterfactual says (the
items removed, the new rank, the item that replaces it, whether one was found) is still
compared exactly.

And one change of output, by design: since 1455283 Shapley's sampled orders follow a budget of
item positions (recscope.explain.shapley.POSITIONS), so the explanations of the fixture's one
long history (U00002: its Shapley weights, the counterfactual those weights order and its
sentence, 89 values) changed, and nothing else did; the golden file was written again at that
change by tests/golden_outputs.py.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from golden_outputs import FIXTURE, outputs

GOLDEN = FIXTURE.parent / "tiny_run_golden.json"
COUNTERFACTUAL_SCORES = ("score_before", "score_after", "cutoff")


def differences(got, want, path: str = "") -> list[str]:
    """Where ``got`` differs from ``want``: exactly, but for a counterfactual's scores (1e-6)."""
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return [f"{path}: keys {sorted(set(got) ^ set(want))}"]
        return [d for k in want for d in differences(got[k], want[k], f"{path}/{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{path}: {len(got)} entries, golden {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True)) for d in differences(g, w, f"{path}[{i}]")]
    in_counterfactual = "/counterfactual/" in path and path.rsplit("/", 1)[-1] in COUNTERFACTUAL_SCORES
    if in_counterfactual and isinstance(got, str) and isinstance(want, str):
        if math.isclose(float(got), float(want), rel_tol=1e-6, abs_tol=1e-6):
            return []
    return [] if got == want else [f"{path}: {str(got)[:60]} != golden {str(want)[:60]}"]


def test_a_saved_run_answers_exactly_as_before_the_reshape(tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    found = differences(outputs(run), json.loads(GOLDEN.read_text()))
    assert not found, "\n".join(found[:10])


def test_the_comparison_sees_a_changed_last_bit_outside_a_counterfactual():
    want = {"scores": ["1.0"], "e": [{"counterfactual": {"cutoff": "1.0", "new_rank": 11}}]}
    assert differences(want, want) == []
    assert differences({**want, "scores": ["1.0000001"]}, want) == ["/scores[0]: 1.0000001 != golden 1.0"]
    near = {**want, "e": [{"counterfactual": {"cutoff": "1.0000001", "new_rank": 11}}]}
    assert differences(near, want) == []
    moved = {**want, "e": [{"counterfactual": {"cutoff": "1.0", "new_rank": 12}}]}
    assert differences(moved, want) == ["/e[0]/counterfactual/new_rank: 12 != golden 11"]
