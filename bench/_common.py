"""Shared bits of the benchmarks: machine facts and result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def machine() -> dict:
    """Where a figure was measured: the CPU model (/proc/cpuinfo "model name"), cores, torch's threads."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())  # the first processor's
    except OSError:
        pass
    return {
        "cpu": info.get("model name", "unknown"),
        # a model name can be as vague as "AMD EPYC": family / model / stepping name the generation
        "cpu_id": "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: other work on a shared machine slows a timing."""
    return [round(x, 2) for x in os.getloadavg()]


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    except OSError:
        return ""
    return done.stdout.rstrip("\n") if done.returncode == 0 else ""


def commit() -> str:
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def uncommitted() -> list[str]:
    """Tracked files under src/ and bench/ that differ from the commit: a figure measured with
    others' work in progress says so."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", "src", "bench")
    return [line[3:] for line in status.splitlines()]


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit(),
        "uncommitted": uncommitted(),
        "machine": machine(),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path
