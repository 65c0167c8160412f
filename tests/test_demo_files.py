"""`recscope demo --out DIR` checks its arguments before touching DIR, and replaces DIR/run
only when a previous demo wrote it, removing only a run's own files."""

import json
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from recscope import config as config_mod
from recscope.cli import app
from recscope.data import load_dataset
from recscope.demo import _check_replaceable, _clear_previous_run, _is_demo_run
from recscope.errors import ConfigError, RunError
from recscope.lock import LOCK_NAME
from recscope.run import RUN_FILES
from recscope.train import fit

ROOT = Path(__file__).resolve().parents[1]
SMALL = "synthetic:users=40,items=30,seed=1"


def demo(out: Path, *sets: str):
    args = ["demo", "--out", str(out), "--data", SMALL, "--explain-users", "5"]
    return CliRunner().invoke(app, args + [a for s in sets for a in ("--set", s)])


@pytest.fixture
def users_dir(tmp_path) -> Path:
    """DIR/run holding a file the user keeps there."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    return tmp_path


def test_a_bad_setting_fails_before_anything_is_touched(users_dir):
    result = demo(users_dir, "train.lr=-1")
    assert isinstance(result.exception, ConfigError), result.output
    assert (users_dir / "run" / "notes.txt").read_text() == "mine"


def test_a_folder_the_demo_did_not_write_is_left_alone(users_dir):
    result = demo(users_dir, "train.epochs=1")
    assert isinstance(result.exception, RunError), result.output
    message = str(result.exception)
    assert "not a previous recscope demo run" in message and "notes.txt" in message and "another --out" in message
    assert sorted(p.name for p in (users_dir / "run").iterdir()) == ["notes.txt"]


def test_a_file_named_run_is_left_alone(tmp_path):
    (tmp_path / "run").write_text("mine")
    result = demo(tmp_path, "train.epochs=1")
    assert isinstance(result.exception, RunError) and "is a file" in str(result.exception)
    assert (tmp_path / "run").read_text() == "mine"


def test_a_run_recscope_train_wrote_is_not_replaced(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"format": 2, "origin": "train", "config": {}}))
    with pytest.raises(RunError, match="not a previous recscope demo run"):
        _check_replaceable(tmp_path / "run", tmp_path)


def test_a_previous_demo_run_loses_only_its_own_files(tmp_path):
    run = tmp_path / "run"
    cfg = config_mod.load(ROOT / "configs" / "tiny.yaml", ["train.epochs=1"])
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    fit(load_dataset(SMALL, config=cfg.data), cfg, run, data_spec=SMALL, console=quiet, origin="demo")
    (run / "notes.txt").write_text("mine")
    (run / "model.safetensors.tmp").write_bytes(b"half")
    assert _is_demo_run(run, tmp_path)
    _check_replaceable(run, tmp_path)
    _clear_previous_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_a_demo_run_from_before_the_marker_is_recognised_by_demo_json(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {}, "data_spec": "synthetic", "state": {}}))
    assert not _is_demo_run(run, tmp_path)
    (tmp_path / "demo.json").write_text(json.dumps({"run": str(run)}))
    assert _is_demo_run(run, tmp_path)


def test_run_files_cover_what_a_run_holds(tmp_path):
    from recscope.data.dataset import SKIPPED_FILE

    assert SKIPPED_FILE in RUN_FILES and LOCK_NAME not in RUN_FILES
