"""Epoch time of the demo's training config, alone and beside CPU-bound processes.

    python bench/epoch_time.py --hogs 0,1 --epochs 3 --label after

Each measurement is a fresh `recscope train --data synthetic` process (the demo's data and
config, a few epochs, no early stop), so thread settings made at import take effect as they
would for a user. A hog is `python -c "while True: pass"`, started before training and
killed after it. The JSON records each epoch's training seconds (from run.json) and their
median per hog count, appended under --label to bench/results/epoch_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECSCOPE = Path(sys.executable).with_name("recscope")


def measure(hogs: int, epochs: int, extra: list[str]) -> dict:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            sets = [f"train.epochs={epochs}", f"train.patience={epochs + 1}", *extra]
            args = [str(RECSCOPE), "train", "--data", "synthetic", "--out", str(run)]
            tic = time.perf_counter()
            subprocess.run(
                [*args, *[a for s in sets for a in ("--set", s)]],
                check=True,
                capture_output=True,
                env={
                    k: v
                    for k, v in os.environ.items()
                    if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                },
            )
            wall = time.perf_counter() - tic
            history = json.loads((run / "run.json").read_text())["state"]["history"]
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    return {
        "wall_seconds": round(wall, 1),
        "epoch_seconds": [r["train_seconds"] for r in history],
        "eval_seconds": [r.get("eval_seconds") for r in history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", default="0,1", help="comma-separated numbers of CPU-bound processes beside training")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--label", default="current", help="name of this measurement, e.g. before / after")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra config overrides")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/epoch_time.json")
    args = parser.parse_args()
    results = {}
    for h in (int(x) for x in args.hogs.split(",")):
        r = measure(h, args.epochs, args.sets)
        r["median_epoch_seconds"] = statistics.median(r["epoch_seconds"])
        results[str(h)] = r
        print(f"{args.label}: beside {h} CPU-bound process(es): epochs {r['epoch_seconds']} s", flush=True)
    load = os.getloadavg()
    record = {
        "command": "python bench/epoch_time.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(), "loadavg": load},
        "hogs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[args.label] = record
    args.out.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
