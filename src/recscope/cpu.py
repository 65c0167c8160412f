"""How many CPUs this process may really use, and torch's thread pools sized to them.

On a shared machine, torch's default is the number of cores it can see, and its OpenMP
workers spin while they wait for work, taking CPU from every other process (and, when a
core is taken, from each other). recscope/__init__.py makes the OpenMP pool passive
(OMP_WAIT_POLICY=PASSIVE, before torch is imported); here the pool is sized to the CPUs
this process may use: its affinity mask and its cgroup's CPU quota, whichever is smaller.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

_threads: int | None = None  # the process's torch threads, as use_threads set them
_chosen: int | None = None  # ... when a caller named a count (not 0: "the CPUs available")
_pinned = threading.local()  # .threads: what this thread's own OpenMP setting is


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota (v2 or v1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The cgroup's CPU quota in CPUs (e.g. 1.5), or None when there is none."""
    try:  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:  # cgroup v1: quota -1 means none
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def use_threads(threads: int = 0) -> int:
    """Size torch's intra-op pool: ``threads``; 0: what this process chose already (``recscope
    serve --threads``: loading a model must not undo it), else the CPUs available. Returns the count."""
    import torch

    global _threads, _chosen
    if threads:
        _chosen = threads
    n = threads or _chosen or available_cpus()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _threads = _pinned.threads = n
    try:
        torch.set_num_interop_threads(1)  # recscope runs no parallel graphs; one pool is enough
    except RuntimeError:
        pass  # only settable before torch's first parallel work; then it stays as it was
    return n


def in_this_thread() -> None:
    """Give the calling thread the process's torch threads (:func:`use_threads`), once per thread.

    OpenMP keeps its thread count per thread: ``torch.set_num_threads`` in the main thread does
    not reach a thread started later (a server's request threads), whose matrix products then use
    ``OMP_NUM_THREADS`` or every core. Measured on the 4-tower Beauty model, explanations computed
    in such a thread took 1.15 cores and 30% more CPU than with one thread pinned, and were slower."""
    if _threads is None or getattr(_pinned, "threads", None) == _threads:
        return
    import torch

    torch.set_num_threads(_threads)
    _pinned.threads = _threads
