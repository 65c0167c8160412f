"""Wall time of `recscope demo`, alone and beside CPU-bound processes, measured side by side.

    python bench/demo_time.py --hogs 0,1 --repeats 1 --out bench/results/demo_time.json

Each hog is a separate Python process spinning on one core (`while True: pass`), started
before the demo and killed after it: the situation of a shared machine where another job
runs. The demo's own output goes to a log beside the JSON; the JSON records the wall time
of each run and the median per hog count.
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


def run_demo(hogs: int, log) -> float:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tic = time.perf_counter()
            subprocess.run([str(RECSCOPE), "demo", "--out", tmp], check=True, stdout=log, stderr=log)
            return time.perf_counter() - tic
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", default="0,1", help="comma-separated numbers of CPU-bound processes beside the demo")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/demo_time.json")
    args = parser.parse_args()
    hog_counts = [int(h) for h in args.hogs.split(",")]
    runs: dict[int, list[float]] = {h: [] for h in hog_counts}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".log"), "w") as log:
        for _ in range(args.repeats):
            for h in hog_counts:  # interleaved, so drift in the machine's load hits every setting alike
                seconds = run_demo(h, log)
                runs[h].append(round(seconds, 1))
                print(f"demo beside {h} CPU-bound process(es): {seconds:.1f} s", flush=True)
    result = {
        "command": "python bench/demo_time.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "runs_seconds": {str(h): v for h, v in runs.items()},
        "median_seconds": {str(h): statistics.median(v) for h, v in runs.items()},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_seconds"]))


if __name__ == "__main__":
    main()
