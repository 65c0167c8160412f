"""Bad input through the real console script: exit status 2, one message that says where, no traceback.

Each case is its own process (that is what a user runs). They start torch, so they run
concurrently, once per module.
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SCRIPT = Path(sys.executable).parent / "recscope"  # the [project.scripts] entry point of this venv


def recscope(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # Wide, or rich wraps long paths at 80 columns; one thread each, as the cases run side by side.
    env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def train_then_recommend_unknown_user(tmp: Path) -> subprocess.CompletedProcess:
    run = tmp / "run"
    spec = "synthetic:users=40,items=40,seed=1"
    trained = recscope("train", "--data", spec, "--out", str(run), "--config", TINY, "--set", "train.epochs=1", cwd=tmp)
    assert trained.returncode == 0, trained.stderr
    return recscope("recommend", str(run), "--user", "nobody", cwd=tmp)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "empty.csv").write_text("")
    (tmp / "two_columns.csv").write_text("user_id,item_id\nu,a\n")
    (tmp / "bad_time.csv").write_text("user_id,item_id,timestamp\nu,a,1\nu,b,2\nv,a,abc\n")
    (tmp / "Bad.txt").write_text("1 1 2 3\n2 4 x 5\n")
    return tmp


# name -> (arguments, pieces the message must name)
CASES = {
    "unknown prefix": (["train", "--data", "json:events.json"], ["unknown data format 'json'", "csv:"]),
    "missing file": (["train", "--data", "csv:{tmp}/nope.csv"], ["{tmp}/nope.csv", "does not exist"]),
    "empty csv": (["train", "--data", "csv:{tmp}/empty.csv"], ["{tmp}/empty.csv", "the file is empty"]),
    "missing column": (
        ["train", "--data", "csv:{tmp}/two_columns.csv"],
        ["{tmp}/two_columns.csv", "column 'timestamp'", "--map timestamp="],
    ),
    "bad timestamp": (
        ["train", "--data", "csv:{tmp}/bad_time.csv"],
        ["{tmp}/bad_time.csv, line 4, column 'timestamp'", "'abc'", "skip_bad_rows"],
    ),
    "bad s3rec token": (
        ["train", "--data", "s3rec:{tmp}/Bad.txt"],
        ["{tmp}/Bad.txt, line 2, column 'token 3'", "'x'"],
    ),
    "unknown config key": (
        ["train", "--data", "synthetic:users=20", "--set", "train.nope=1"],
        ["--set train.nope=1", "unknown key 'nope'", "epochs"],
    ),
    "missing run": (["recommend", "{tmp}/no-run", "--user", "U00001"], ["{tmp}/no-run", "no run.json"]),
}


@pytest.fixture(scope="module")
def results(tmp) -> dict[str, subprocess.CompletedProcess]:
    assert SCRIPT.exists(), f"no console script at {SCRIPT}: install the package into this venv"

    def run_case(args: list[str]) -> subprocess.CompletedProcess:
        args = [a.format(tmp=tmp) for a in args]
        if args[0] == "train":
            args += ["--out", str(tmp / "out-never-written")]
        return recscope(*args, cwd=tmp)

    with ThreadPoolExecutor(max_workers=len(CASES) + 1) as pool:
        futures = {name: pool.submit(run_case, args) for name, (args, _) in CASES.items()}
        futures["unknown user"] = pool.submit(train_then_recommend_unknown_user, tmp)
        return {name: future.result() for name, future in futures.items()}


def assert_user_error(result: subprocess.CompletedProcess, pieces: list[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert result.stderr.startswith("error:"), result.stderr
    for piece in pieces:
        assert piece in result.stderr, f"{piece!r} not in {result.stderr!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_a_located_message(name, results, tmp):
    assert_user_error(results[name], [p.format(tmp=tmp) for p in CASES[name][1]])
    if CASES[name][0][0] == "train":
        assert not (tmp / "out-never-written").exists(), "a failed train leaves no run behind"


def test_data_errors_say_how_to_fix(results):
    for name in ("unknown prefix", "missing file", "empty csv", "missing column", "bad timestamp", "bad s3rec token"):
        assert "how to fix:" in results[name].stderr, name


def test_unknown_user_on_a_trained_run(results):
    assert_user_error(results["unknown user"], ["unknown user 'nobody'", "U00000"])


def test_usage_error_exits_2_without_a_traceback(tmp):
    result = recscope("train", "--data", "synthetic", cwd=tmp)  # --out is required
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert "--out" in result.stderr
