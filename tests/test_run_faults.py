"""A damaged, foreign or mismatched run directory is one RunError naming the file and what to do.

One tiny run is trained per module; each case copies it into tmp_path and breaks one thing.
The same errors reach the user through the CLI as one line, exit status 2 (last test).
"""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from recscope import config as config_mod
from recscope import versions
from recscope.data import load_dataset
from recscope.errors import RunError
from recscope.evaluate import evaluate_run
from recscope.model import SeqRec
from recscope.recommend import Recommender
from recscope.run import load_info, record_evaluation, save_info, save_weights
from recscope.train import fit

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
SPEC = "synthetic:users=60,items=40,seed=1"
QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the module


def train(out: Path, spec: str = SPEC, *sets: str, resume: bool = False):
    cfg = config_mod.load(TINY, ["train.epochs=2", *sets])
    return fit(load_dataset(spec, config=cfg.data), cfg, out, data_spec=spec, resume=resume, console=QUIET)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    train(out)
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def foreign(path: Path) -> None:
    path.write_bytes(b"<html><body>404 Not Found</body></html>\n")


def edit_json(name: str, change):
    def apply(run: Path) -> None:
        raw = json.loads((run / name).read_text())
        change(raw)
        (run / name).write_text(json.dumps(raw))

    return apply


def weights(damage):
    """``damage`` applied to the best weights and to the served version's copy of them (a version
    is immutable, but a disk or a person can still break it)."""

    def apply(run: Path) -> None:
        damage(run / "model.safetensors")
        damage(versions.weights(run)[0])

    return apply


def other_model_weights(run: Path) -> None:
    """Weights of the same architecture at another width (as if copied from another run)."""
    raw = json.loads((run / "run.json").read_text())["config"]
    raw["model"]["d_model"] = 16
    for path in (run / "model.safetensors", versions.weights(run)[0]):
        save_weights(path, SeqRec(config_mod.Config.from_dict(raw).model))


def other_data(run: Path) -> None:
    cfg = config_mod.load(TINY)
    load_dataset("synthetic:users=60,items=40,seed=9", config=cfg.data).save(run)


def inconsistent_data(run: Path) -> None:
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(run / "data.safetensors"))
    arrays["items"] = arrays["items"] + 1000  # indices past the catalog
    save_file(arrays, str(run / "data.safetensors"))


# name -> (break the run, the file the message must name, a piece of the message)
LOAD_CASES = {
    "model.safetensors truncated": (weights(truncate), "model.safetensors", "safetensors"),
    "model.safetensors foreign": (weights(foreign), "model.safetensors", "safetensors"),
    "model.safetensors missing": (weights(Path.unlink), "model.safetensors", "missing"),
    "model.safetensors of another shape": (other_model_weights, "model.safetensors", "does not fit"),
    "run.json truncated": (lambda r: truncate(r / "run.json"), "run.json", "not readable JSON"),
    "run.json foreign": (lambda r: foreign(r / "run.json"), "run.json", "not readable JSON"),
    "run.json a list": (lambda r: (r / "run.json").write_text("[1, 2]"), "run.json", "not a JSON object"),
    "run.json missing": (lambda r: (r / "run.json").unlink(), "run", "no run.json"),
    "run.json without state": (edit_json("run.json", lambda j: j.pop("state")), "run.json", "lacks state"),
    "run.json from a newer version": (
        edit_json("run.json", lambda j: j.update(format=99, recscope_version="9.0")),
        "run.json",
        "newer recscope",
    ),
    "run.json config key of another version": (
        edit_json("run.json", lambda j: j["config"]["model"].update(n_experts=4)),
        "run.json",
        "unknown key 'n_experts'",
    ),
    "run.json config out of range": (
        edit_json("run.json", lambda j: j["config"]["model"].update(n_heads=0)),
        "run.json",
        "model.n_heads=0",
    ),
    "data.json truncated": (lambda r: truncate(r / "data.json"), "data.json", "not readable JSON"),
    "data.json foreign": (lambda r: foreign(r / "data.json"), "data.json", "not readable JSON"),
    "data.json missing": (lambda r: (r / "data.json").unlink(), "data.json", "missing"),
    "data.json without user ids": (
        edit_json("data.json", lambda j: j.pop("user_ids")),
        "data.json",
        "do not make one dataset",
    ),
    "data.safetensors truncated": (lambda r: truncate(r / "data.safetensors"), "data.safetensors", "safetensors"),
    "data.safetensors foreign": (lambda r: foreign(r / "data.safetensors"), "data.safetensors", "safetensors"),
    "data.safetensors missing": (lambda r: (r / "data.safetensors").unlink(), "data.safetensors", "missing"),
    "data.safetensors inconsistent": (inconsistent_data, "data.safetensors", "item indices outside"),
    "data files of another run": (other_data, "data.safetensors", "fingerprint"),
}


def assert_one_line(error: RunError, file: str, piece: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    assert file in message and piece in message, message
    assert error.fix, message


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_a_broken_run_is_one_error_naming_the_file(case, run):
    damage, file, piece = LOAD_CASES[case]
    damage(run)
    with pytest.raises(RunError) as caught:
        Recommender.load(run)
    assert_one_line(caught.value, file, piece)


class Payload:
    """Unpickling this would run code: create a file beside the run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickled(path: Path) -> None:
    payload = Payload(path.parent.parent / "pwned")
    with open(path, "wb") as f:
        pickle.dump({"state": {}, "param_groups": [payload]}, f)


RESUME_CASES = {
    "last.safetensors truncated": (lambda r: truncate(r / "last.safetensors"), "last.safetensors", "safetensors"),
    "last.safetensors missing": (lambda r: (r / "last.safetensors").unlink(), "last.safetensors", "missing"),
    "optimizer.safetensors truncated": (
        lambda r: truncate(r / "optimizer.safetensors"),
        "optimizer.safetensors",
        "optimizer state",
    ),
    "optimizer.safetensors is a pickle": (
        lambda r: pickled(r / "optimizer.safetensors"),
        "optimizer.safetensors",
        "optimizer state",
    ),
    "optimizer.safetensors missing": (
        lambda r: (r / "optimizer.safetensors").unlink(),
        "optimizer.safetensors",
        "missing",
    ),
    "run.json of format 1": (
        edit_json("run.json", lambda j: [j.pop(k) for k in ("format", "data_fingerprint")]),
        "run",
        "before runs recorded their data fingerprint",
    ),
}


@pytest.mark.parametrize("case", [*RESUME_CASES, *LOAD_CASES])
def test_resume_from_a_broken_run_is_one_error_naming_the_file(case, run):
    """Every file resume itself reads, and every file a load reads (resuming writes only what
    improves: a damaged best model or data file would outlive a resume that said it succeeded)."""
    damage, file, piece = {**LOAD_CASES, **RESUME_CASES}[case]
    damage(run)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunError) as caught:
        train(run, SPEC, "train.epochs=3", resume=True)
    assert_one_line(caught.value, file, piece)
    assert not (run.parent / "pwned").exists(), "the pickle ran"
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before, "a refused resume wrote"


def test_a_pickle_left_in_optimizer_pt_is_never_read(run):
    pickled(run / "optimizer.pt")
    info = train(run, SPEC, "train.epochs=3", resume=True)
    assert info.state.epoch == 3
    assert not (run.parent / "pwned").exists()


def test_optimizer_state_round_trips_without_pickle(run):
    from safetensors import safe_open

    with safe_open(str(run / "optimizer.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        groups = json.loads(f.metadata()["param_groups"])
    assert any(k.endswith(".exp_avg") for k in keys) and groups[0]["lr"] == pytest.approx(0.005)
    info = train(run, SPEC, "train.epochs=3", resume=True)
    assert [r["epoch"] for r in info.state.history] == [1, 2, 3]


def test_resume_on_other_data_is_refused(run):
    with pytest.raises(RunError) as caught:
        train(run, "synthetic:users=60,items=40,seed=2", "train.epochs=3", resume=True)
    message = str(caught.value)
    assert "fingerprints differ" in message and "seed=2" in message and "seed=1" in message, message


def test_resume_with_another_model_or_split_says_which_keys_differ(run):
    with pytest.raises(RunError) as caught:
        train(run, SPEC, "train.epochs=3", "model.d_model=64", "model.dropout=0.3", resume=True)
    message = str(caught.value)
    assert "model.d_model (32 -> 64)" in message and "model.dropout (0.1 -> 0.3)" in message, message
    with pytest.raises(RunError, match=r"data.split \('loo' -> 'temporal'\)"):
        train(run, SPEC, "train.epochs=3", "data.split=temporal", resume=True)


def test_resume_may_change_training_keys(run):
    info = train(run, SPEC, "train.epochs=3", "train.lr=0.001", "train.patience=5", resume=True)
    assert info.state.epoch == 3 and info.config.train.lr == 0.001


def test_run_json_state_of_another_version_reads_and_writes_back_as_it_was(run):
    """A state key of another recscope version is kept; one an older run lacks takes its default;
    read and written back, the state is the JSON it was, and the old way of reading it still works."""
    path = run / "run.json"
    raw = json.loads(path.read_text())
    raw["state"]["from_a_newer_version"] = {"kept": [1, 2]}
    del raw["state"]["inputs"]  # a run trained before the state said what the model reads
    path.write_text(json.dumps(raw))
    info = load_info(run)
    assert (info.state.epoch, info.state.best_epoch, info.state.inputs) == (2, raw["state"]["best_epoch"], None)
    assert info.state.history == raw["state"]["history"] and info.state.best_valid == raw["state"]["best_valid"]
    assert info.state["epoch"] == 2 and info.state.get("from_a_newer_version") == {"kept": [1, 2]}
    save_info(run, info)
    assert json.loads(path.read_text())["state"] == raw["state"]


def test_evaluations_are_recorded_beside_the_training_state(run):
    before = json.loads((run / "run.json").read_text())["state"]
    record_evaluation(run, "test/full", {"recscope": {"NDCG@10": 0.25}})
    info = record_evaluation(run, "valid/full", {"recscope": {"NDCG@10": 0.5}})
    assert info.state.evaluations == {
        "test/full": {"recscope": {"NDCG@10": 0.25}},
        "valid/full": {"recscope": {"NDCG@10": 0.5}},
    }
    after = json.loads((run / "run.json").read_text())["state"]
    assert after == before | {"evaluations": info.state.evaluations}


def test_a_failed_train_leaves_no_directory_behind(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(RunError, match="no user has enough events"):
        train(out, "synthetic:users=3,items=40,seed=1,min_len=2,max_len=2")
    assert not (tmp_path / "a").exists()


def test_the_cli_prints_one_line_and_exits_2(trained, tmp_path):
    """Through the console script, as a user runs it: a few of the cases above, side by side."""
    script = Path(sys.executable).parent / "recscope"
    runs = {}
    for name in ("model.safetensors truncated", "run.json from a newer version", "data files of another run"):
        runs[name] = tmp_path / name.replace(" ", "_")
        shutil.copytree(trained, runs[name])
        LOAD_CASES[name][0](runs[name])
    env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1"}
    procs = {
        name: subprocess.Popen(
            [str(script), "recommend", str(path), "--user", "U00001"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, path in runs.items()
    }
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        assert "Traceback" not in stdout + stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), stderr
        assert LOAD_CASES[name][1] in lines[0], stderr


def test_torch_never_unpickles_in_a_run():
    """run.py reads no pickle: no torch.load anywhere in it."""
    source = (ROOT / "src" / "recscope" / "run.py").read_text()
    assert "torch.load" not in source and "pickle" not in source.replace("Nothing is unpickled", "")
    assert torch is not None


def test_evaluate_writes_run_json_only_under_the_lock(run):
    """Recommender.evaluate records its metrics through run.update_state: refused while
    another process writes the run, saved once it is free."""
    import socket

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "command": "train"}))
        rec = Recommender.load(run)  # reading needs no lock
        with pytest.raises(RunError, match=f"pid {sleeper.pid}"):
            evaluate_run(rec, "valid")
    finally:
        sleeper.kill()
        sleeper.wait()
    evaluate_run(rec, "valid")  # the holder is gone: its stale lock is taken over
    state = json.loads((run / "run.json").read_text())["state"]
    assert "valid/full" in state["evaluations"] and state["epoch"] == 2
    assert not (run / ".lock").exists()
