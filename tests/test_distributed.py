"""Training with DistributedDataParallel: two gloo processes on this machine against one process.

Dropout is off in the runs compared (``model.dropout=0``, ``model.attn_dropout=0``): dropout
masks come from each process's own random stream, so two processes draw other masks for their
shares of a batch than one process draws for the whole; their gradients agree in expectation,
not step by step. Everything else (initial weights, batches, negatives) is drawn from the seed
identically on every rank, so without dropout the curves must agree up to float rounding.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from recscope.cli import app
from recscope.config import load
from recscope.data import load_dataset, split_of
from recscope.distributed import BatchLoss, Distributed
from recscope.model import SeqRec
from recscope.train import TrainingData, _length_batches, _step_loss, with_data_sizes

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SPEC = "synthetic:users=200,items=120,seed=5"
# Dropout off (see above); no item text: encoding the titles would only add seconds to every process.
NO_DROPOUT = ["--set", "model.dropout=0", "--set", "model.attn_dropout=0", "--set", "model.use_text=false"]
LOSS_RTOL = 1e-5  # float32 sums in another order (shards, all-reduce); measured ~5e-8 after 3 epochs
TIMEOUT = 180  # seconds for a multi-process run on a busy 2-core machine (a hang must fail, not block)


def _train_here(out: Path, *more: str) -> Path:
    """One process, in this one (tiny config, dropout off)."""
    args = ["train", "--data", SPEC, "--out", str(out), "--config", TINY, *NO_DROPOUT, *more]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def _history(run: Path) -> list[dict]:
    return json.loads((run / "run.json").read_text())["state"]["history"]


def _same_curve(got: list[dict], want: list[dict]) -> None:
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert g["loss"] == pytest.approx(w["loss"], rel=LOSS_RTOL), g["epoch"]
        assert g["valid"]["NDCG@10"] == pytest.approx(w["valid"]["NDCG@10"], abs=1e-4), g["epoch"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The reference: one process, 3 epochs."""
    return _train_here(tmp_path_factory.mktemp("one") / "run")


# ---------------------------------------------------------------------- two processes (torch.multiprocessing)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, ports: list[int], out: str, log: str, runs: list[list[str]]) -> None:
    """One rank, set up as torchrun would, training ``runs`` one after the other (each its own
    process group: one start-up pays for several runs); records every file event under ``out``,
    each run's exit status and the rank's stderr."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    root = str(Path(out).resolve())
    touched: list[str] = []

    def audit(event: str, details: tuple) -> None:  # opens, renames, mkdirs, removals in the run directory
        if event in ("open", "os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
            paths = [d for d in details[: 2 if event == "os.rename" else 1] if isinstance(d, str | bytes | os.PathLike)]
            if any(str(Path(os.fsdecode(p)).resolve()).startswith(root) for p in paths):
                touched.append(f"{event} {os.fsdecode(paths[-1])}")

    with open(Path(log, f"rank{rank}.err"), "w") as err:
        os.dup2(err.fileno(), 2)
    sys.addaudithook(audit)
    from recscope.train import main  # what torchrun runs in each process

    codes = []
    for port, args in zip(ports, runs, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        try:
            main(["--data", SPEC, "--out", out, "--config", TINY, *NO_DROPOUT, *args])
            codes.append(0)
        except SystemExit as e:
            codes.append(e.code)
    Path(log, f"rank{rank}.json").write_text(json.dumps({"touched": touched, "codes": codes}))


def _two_processes(out: Path, log: Path, *runs: list[str]) -> list[dict]:
    """Train ``runs`` in two gloo processes; returns per rank its file events in ``out``, the
    runs' exit statuses and its stderr."""
    log.mkdir()
    ports = [_free_port() for _ in runs]
    context = mp.start_processes(
        _rank, args=(2, ports, str(out), str(log), list(runs)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, "the two processes did not finish"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    ranks = [json.loads((log / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank, got in enumerate(ranks):
        got["stderr"] = (log / f"rank{rank}.err").read_text()
    return ranks


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Two processes, 2 epochs, the same global batch (train.batch_size) as ``one_process``; then
    the same command again, into the run it wrote (refused: it holds a run)."""
    root = tmp_path_factory.mktemp("two")
    epochs = ["--set", "train.epochs=2"]
    return root / "run", _two_processes(root / "run", root / "log", epochs, epochs)


def test_two_processes_follow_the_loss_curve_of_one(one_process, two_processes):
    run, _ = two_processes
    _same_curve(_history(run), _history(one_process)[:2])


def test_only_rank_0_touches_the_run_directory(two_processes):
    run, ranks = two_processes
    assert [r["codes"][0] for r in ranks] == [0, 0], ranks
    assert ranks[1]["touched"] == []  # not a file opened, renamed, made or removed by rank 1
    names = {Path(event.split(" ", 1)[1]).name for event in ranks[0]["touched"]}
    assert {".lock", "run.json", "model.safetensors", "last.safetensors", "optimizer.safetensors"} <= names, names
    assert (run / "versions" / "current").exists() and not (run / ".lock").exists()
    assert "epoch   2" in ranks[0]["stderr"] and "epoch" not in ranks[1]["stderr"]  # rank 0 alone prints


def test_what_stops_rank_0_stops_every_rank_once(two_processes):
    run, ranks = two_processes
    assert [r["codes"][1] for r in ranks] == [2, 2]  # the second run: refused, and no rank left waiting
    assert ranks[0]["stderr"].count("already holds a run") == 1
    assert "already holds a run" not in ranks[1]["stderr"]  # said once, by rank 0
    assert len(_history(run)) == 2


def test_a_run_of_two_processes_resumes_in_one(one_process, two_processes, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_processes[0], run)
    _train_here(run, "--resume", "--set", "train.epochs=3")
    _same_curve(_history(run), _history(one_process))


# ---------------------------------------------------------------------- recscope train --nproc (torchrun)
def _recscope(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from recscope.cli import main; main(sys.argv[1:])", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def test_nproc_resumes_a_run_of_one_process_in_two(one_process, tmp_path):
    run = _train_here(tmp_path / "run", "--set", "train.epochs=2")
    common = ["train", "--nproc", "2", "--data", SPEC, "--out", str(run), "--config", TINY, *NO_DROPOUT]
    resumed = _recscope(*common, "--resume", "--set", "train.epochs=3")
    assert resumed.returncode == 0, resumed.stderr
    assert "x 2 processes (DistributedDataParallel)" in " ".join(resumed.stderr.split())  # rich wraps lines
    _same_curve(_history(run), _history(one_process))


def test_nproc_refuses_a_bad_config_before_starting_processes(tmp_path):
    result = _recscope("train", "--nproc", "2", "--data", SPEC, "--out", str(tmp_path / "r"), "--set", "train.nope=1")
    assert result.returncode == 2 and "train.nope" in result.stderr
    assert "torchrun" not in result.stderr and not (tmp_path / "r").exists()


# What torchrun runs in each process, reporting whether it loaded the CLI on the way.
ENTRY = """import runpy, sys
try:
    runpy.run_module("recscope.train", run_name="__main__", alter_sys=True)
finally:
    print("cli imported" if "recscope.cli" in sys.modules else "cli not imported")
"""


@pytest.mark.parametrize(
    ("args", "said"),
    [(["--set", "train.nope=1"], "train.nope"), (["--nope"], "unrecognized arguments: --nope")],
    ids=["bad config", "unknown option"],
)
def test_the_torchrun_entry_parses_its_options_without_the_cli(args, said, tmp_path):
    command = [sys.executable, "-c", ENTRY, "--data", SPEC, "--out", str(tmp_path / "r"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 2 and result.stdout.strip() == "cli not imported", result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], result.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- the normalisation, in numbers
@pytest.mark.parametrize("towers", [1, 2])
def test_sharded_losses_average_to_the_gradient_of_the_whole_batch(towers):
    """DDP averages the ranks' gradients; each rank's loss is its share's sum x world / (targets per
    global batch), so the average must be one process's gradient of the whole batch. Two towers
    with their own batches (towers, B): each rank takes its share of every tower's batch."""
    overrides = ["model.dropout=0", "model.attn_dropout=0", "model.use_text=false"]
    if towers > 1:
        overrides += [f"model.towers={towers}", "train.tower_batches=own"]
    config = load(TINY, overrides)
    data = load_dataset(SPEC)
    config = with_data_sizes(config, data)
    windows = TrainingData.build(data, split_of(data, config), config, None)
    torch.manual_seed(0)
    model = SeqRec(config.model)
    model.set_item_fields({f.name: torch.from_numpy(f.values) for f in data.fields})
    batch_loss = BatchLoss(model, windows.loss)
    batches = _length_batches(windows.windows, 64, torch.Generator().manual_seed(0), towers)
    index = max(batches, key=lambda b: b.shape[-1])[..., :-1]  # an odd size: the two shares differ by one window
    assert index.shape[:-1] == ((towers,) if towers > 1 else ())
    per_batch = windows.targets() / len(batches)

    def gradients(dist: Distributed) -> list[torch.Tensor]:
        model.zero_grad()
        _step_loss(batch_loss, index, None, None, None, per_batch, dist).backward()
        return [p.grad.clone() for p in model.parameters()]

    whole = gradients(Distributed())
    shares = [gradients(Distributed(rank=r, world=2, local_world=2)) for r in (0, 1)]
    assert Distributed(rank=0, world=2).shard(index).shape[-1] != Distributed(rank=1, world=2).shard(index).shape[-1]
    for w, a, b in zip(whole, shares[0], shares[1], strict=True):
        torch.testing.assert_close((a + b) / 2, w, rtol=1e-4, atol=1e-7)
    # Without the world-size factor the average would be half the gradient: the check can fail.
    assert not torch.allclose((shares[0][0] + shares[1][0]) / 2 / 2, whole[0], rtol=1e-4, atol=1e-7)
