"""Training on a shared machine: threads sized to the CPUs this process may use, a passive
OpenMP pool; and a progress display whose clocks keep running after the first epoch."""

import io
import os
import subprocess
import sys
import time

from rich.console import Console

from recscope.cpu import _cgroup_quota, available_cpus, use_threads
from recscope.train import TrainingProgress


def test_available_cpus_is_within_the_affinity_mask():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_quota(tmp_path) == 0.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_quota(tmp_path) is None
    assert _cgroup_quota(tmp_path / "absent") is None


def test_train_threads_overrides_the_count():
    import torch

    from recscope import cpu

    before, chosen = torch.get_num_threads(), cpu._chosen
    try:
        cpu._chosen = None
        assert use_threads(0) == available_cpus()
        assert use_threads(1) == 1 and torch.get_num_threads() == 1
        assert use_threads(0) == 1, "0 keeps the count the process chose (a model loaded after serve --threads 1)"
    finally:
        cpu._chosen = chosen
        torch.set_num_threads(before)


# CPU time a process burns while its main thread sleeps between small parallel ops: a
# spinning OpenMP pool keeps every worker busy through the sleeps, a passive one does not.
SPIN = """
import os, resource, sys, time
import recscope, torch
torch.set_num_threads(2)
x = torch.randn(256, 256)
t0 = resource.getrusage(resource.RUSAGE_SELF)
for _ in range(100):
    x @ x
    time.sleep(0.002)
t1 = resource.getrusage(resource.RUSAGE_SELF)
print(os.environ["OMP_WAIT_POLICY"], t1.ru_utime + t1.ru_stime - t0.ru_utime - t0.ru_stime)
"""


def test_importing_recscope_makes_the_openmp_pool_passive():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    result = subprocess.run([sys.executable, "-c", SPIN], env=env, capture_output=True, text=True, check=True)
    policy, cpu_seconds = result.stdout.split()
    assert policy == "PASSIVE"
    # Spinning workers burn ~0.2 s of CPU per 0.1 s of sleeping here; passive ones next to nothing.
    assert float(cpu_seconds) < 0.5, cpu_seconds


def test_a_policy_the_user_set_is_kept():
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    code = "import os, recscope; print(os.environ['OMP_WAIT_POLICY'])"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == (
        "ACTIVE"
    )


def test_progress_clocks_keep_running_after_the_first_epoch():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with TrainingProgress(console, epochs=3) as bar:
        tasks = {t.id: t for t in bar.progress.tasks}
        for epoch in (1, 2):
            bar.start_epoch(epoch, steps=2)
            for _ in range(2):
                time.sleep(0.02)
                bar.step(1.0)
            bar.end_epoch("best valid NDCG@10 0.1")
        bar.start_epoch(3, steps=2)
        run, epoch = tasks[bar.run], tasks[bar.epoch]
        assert not epoch.finished and epoch.completed == 0, "a new epoch starts unfinished, from 0"
        assert epoch.elapsed < 0.02 < run.elapsed, "the epoch clock restarts; the run clock does not"
        first = run.elapsed
        time.sleep(0.02)
        assert run.elapsed > first and not run.finished, "the run clock keeps running"
        assert epoch.description == "epoch 3" and run.completed == 2


def test_a_long_epoch_in_a_pipe_prints_a_line_every_few_seconds():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with TrainingProgress(console, epochs=1, every=0.05) as bar:
        bar.start_epoch(1, steps=4)
        bar.step(2.0)  # sooner than `every`: no line yet
        assert out.getvalue() == ""
        time.sleep(0.06)
        bar.step(4.0)
        bar.step(6.0)  # right after a line: none again
    lines = [line for line in out.getvalue().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("epoch 1: step 2/4, loss 3.0000 ("), lines


PINNED = """
import resource, threading, time
import torch
from recscope.cpu import in_this_thread, use_threads

use_threads(1)
x = torch.randn(32, 256, 256)
torch.bmm(x, x)
ratios = {}

def busy(pin):
    if pin:
        in_this_thread()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(40):
        torch.bmm(x, x)
    after = resource.getrusage(resource.RUSAGE_SELF)
    ratios[pin] = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / (time.perf_counter() - start)

for pin in (False, True):
    thread = threading.Thread(target=busy, args=(pin,))
    thread.start()
    thread.join()
print(ratios[False], ratios[True])
"""


def test_a_thread_started_later_computes_with_the_process_torch_threads():
    """OpenMP keeps its thread count per thread: a server's request thread, started after
    ``use_threads(1)``, multiplied matrices on OMP_NUM_THREADS threads until it took the process's
    setting (``in_this_thread``, which the model's turn calls): CPU time over wall time is then 1."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", PINNED], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    unpinned, pinned = map(float, done.stdout.split())
    print(f"CPU / wall of a later thread: {unpinned:.2f} unpinned, {pinned:.2f} pinned")
    assert pinned < 1.15, f"a pinned thread used {pinned:.2f} CPUs"


def test_loading_a_model_keeps_the_threads_the_process_chose():
    """``recscope serve --threads 1`` chose one thread; loading the run's model (which sizes the
    pool to the CPUs when nothing was chosen) used to set it back to every CPU."""
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "tiny_run"
    script = (
        "import torch\n"
        "from recscope.cpu import use_threads\n"
        "from recscope.run import load_model\n"
        "use_threads(1)\n"
        f"load_model({str(fixture)!r})\n"
        "print(torch.get_num_threads())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1"
