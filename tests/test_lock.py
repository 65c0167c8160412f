"""One writer per run directory: RUN/.lock, taken atomically, released on every way out,
taken over when its holder is gone; two real trainings into one --out: exactly one writes.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from recscope.errors import RunError
from recscope.lock import LOCK_NAME, RunLock, holds

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SCRIPT = Path(sys.executable).parent / "recscope"


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"))  # noqa: SIM115


def holder(run: Path) -> dict:
    return json.loads((run / LOCK_NAME).read_text())


def write_lock(run: Path, **fields) -> None:
    run.mkdir(parents=True, exist_ok=True)
    base = {"pid": os.getpid(), "host": socket.gethostname(), "command": "train", "started": "then"}
    (run / LOCK_NAME).write_text(json.dumps({**base, **fields}))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_says_who_holds_it_and_goes_away(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, "train", quiet()):
        info = holder(run)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["command"] == "train"
        assert holds(run)
    assert not (run / LOCK_NAME).exists() and not holds(run)


def test_reentrant_in_one_process(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, "demo", quiet()):
        with RunLock(run, "train", quiet()):
            assert holder(run)["command"] == "demo"
        assert (run / LOCK_NAME).exists(), "the inner block must not release the outer lock"
    assert not (run / LOCK_NAME).exists()


def test_released_on_an_exception_and_on_ctrl_c(tmp_path):
    run = tmp_path / "run"
    for error in (ValueError, KeyboardInterrupt):
        with pytest.raises(error):
            with RunLock(run, "train", quiet()):
                raise error()
        assert not (run / LOCK_NAME).exists()


def test_a_live_holder_is_refused_with_its_pid(tmp_path):
    run = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(run, pid=sleeper.pid, command="train --out run")
        with pytest.raises(RunError) as caught:
            with RunLock(run, "train", quiet()):
                pass
        message = str(caught.value)
        assert f"pid {sleeper.pid}" in message and "train --out run" in message and "\n" not in message
        assert holder(run)["pid"] == sleeper.pid, "a refused writer must leave the holder's lock alone"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path):
    run = tmp_path / "run"
    write_lock(run, pid=dead_pid())
    console = Console(record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    with RunLock(run, "train", console):
        assert holder(run)["pid"] == os.getpid()
    assert "took over the stale lock" in console.export_text()
    assert not (run / LOCK_NAME).exists()


def test_a_reused_pid_is_stale(tmp_path):
    run = tmp_path / "run"
    write_lock(run, pid=os.getppid(), process_start=1)  # alive, but not the process that wrote the lock
    with RunLock(run, "train", quiet()):
        assert holder(run)["pid"] == os.getpid()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    run = tmp_path / "run"
    write_lock(run, pid=dead_pid(), host="elsewhere.example")
    with pytest.raises(RunError, match=f"on elsewhere.example.*delete {run / LOCK_NAME}"):
        with RunLock(run, "train", quiet()):
            pass


def test_an_unreadable_lock_waits_then_counts_as_stale(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("")  # its writer died between creating and writing it
    old = time.time() - 60
    os.utime(run / LOCK_NAME, (old, old))
    with RunLock(run, "train", quiet()):
        assert holder(run)["pid"] == os.getpid()


def test_release_leaves_a_lock_someone_else_took_over(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, "train", quiet()):
        write_lock(run, pid=12345, command="someone else")
    assert holder(run)["pid"] == 12345


def test_a_failed_start_removes_only_the_directories_it_made(tmp_path):
    (tmp_path / "mine").mkdir()
    run = tmp_path / "mine" / "a" / "run"
    with pytest.raises(ValueError):
        with RunLock(run, "train", quiet()):
            raise ValueError
    assert not (tmp_path / "mine" / "a").exists() and (tmp_path / "mine").is_dir()


def test_an_existing_run_is_needed_when_not_creating(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        with RunLock(tmp_path / "nope", "explain-eval", quiet(), create=False):
            pass
    assert not (tmp_path / "nope").exists()


def test_sigterm_releases_the_lock(tmp_path):
    run = tmp_path / "run"
    code = (
        "import sys, time\n"
        "from recscope.lock import RunLock\n"
        f"with RunLock({str(run)!r}, 'train'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert not (run / LOCK_NAME).exists()


def recscope(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_two_trainings_into_one_out_exactly_one_writes(tmp_path):
    """Real processes: the first holds the lock (a long run), a second train, an explain-eval
    and an evaluate of the same run are refused naming its pid; SIGTERM ends the first cleanly."""
    run = tmp_path / "run"
    spec = "synthetic:users=60,items=40,seed=1"
    train = ["train", "--data", spec, "--out", str(run), "--config", TINY]
    first = recscope(*train, "--set", "train.epochs=100000", "--set", "train.patience=100000")
    try:
        wait_for(run / "run.json", first)  # training, past its first epoch
        second = recscope(*train, "--set", "train.epochs=1")
        measuring = recscope("explain-eval", str(run), "--users", "5")
        evaluating = recscope("evaluate", str(run))
        for proc in (second, measuring, evaluating):
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 2, stderr
            errors = [line for line in stderr.splitlines() if line.startswith("error:")]  # after data notes
            assert len(errors) == 1 and "Traceback" not in stdout + stderr, stderr
            assert stderr.strip().endswith(errors[0]) and f"pid {first.pid}" in errors[0], stderr
        assert holder(run)["pid"] == first.pid
        assert first.poll() is None, "the first training must be unaffected"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM
    assert not (run / LOCK_NAME).exists()
    state = json.loads((run / "run.json").read_text())["state"]
    assert state["epoch"] >= 1 and all(r["epoch"] == i + 1 for i, r in enumerate(state["history"]))
