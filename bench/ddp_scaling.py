"""Training throughput at 1 and 2 processes (DistributedDataParallel, gloo) side by side.

    python bench/ddp_scaling.py [--shop-epochs 3] [--beauty-epochs 2] [--repeats 2] [--skip-beauty]

Each row trains with `recscope train` in a subprocess, the layouts interleaved so that the
machine's changing load falls on all of them alike:

- 1 process x 2 threads (plain `recscope train`, all the cores it may use),
- 2 processes x 1 thread (`recscope train --nproc 2`: torchrun, the cores shared out),
- 1 process x 1 thread (what each of the 2 processes has: the ceiling 2 processes could reach
  if each had a core of its own, i.e. perfect scaling would be twice this row).

Data: the synthetic shop (`synthetic`, 3,000 users, default config) and Amazon Beauty
(`s3rec:../shared/data/beauty`, configs/beauty.yaml), both with `model.use_text=false` (no
title encoding in the timing). The global batch is the same in every layout (train.batch_size).
Throughput = training events / seconds of the epoch's training (evaluation excluded, from
run.json); the median over epochs and repeats. The load average is recorded before each run.

Writes bench/results/ddp_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope.data import load_dataset, split_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (processes, threads per process); threads=0: the CPUs each process may use (recscope's default)
LAYOUTS = [(1, 2), (2, 1), (1, 1)]
CLI = "import sys; from recscope.cli import main; main(sys.argv[1:])"


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def train_once(spec: str, config: str | None, sets: list[str], processes: int, threads: int, out: Path) -> dict:
    command = [sys.executable, "-c", CLI, "train", "--data", spec, "--out", str(out)]
    command += ["--config", config] if config else []
    for item in [*sets, f"train.threads={threads}"]:
        command += ["--set", item]
    command += ["--nproc", str(processes)] if processes > 1 else []
    load = loadavg()
    tic = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - tic
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    history = json.loads((out / "run.json").read_text())["state"]["history"]
    return {
        "processes": processes,
        "threads_per_process": threads,
        "loadavg_before": load,
        "wall_seconds": round(wall, 1),  # start-up, data, every epoch and evaluation
        "epoch_seconds": [r["train_seconds"] for r in history],
        "losses": [round(r["loss"], 5) for r in history],
    }


def bench(name: str, spec: str, config: str | None, epochs: int, repeats: int) -> dict:
    sets = ["model.use_text=false", f"train.epochs={epochs}", f"train.eval_every={epochs}"]
    cfg = config_mod.load(config, sets)
    data = load_dataset(spec, None, cfg.data)
    events = int(split_of(data, cfg).train.sum())
    runs = []
    with tempfile.TemporaryDirectory(prefix="ddp-scaling-") as tmp:
        for repeat in range(repeats):
            for processes, threads in LAYOUTS:
                out = Path(tmp) / f"{processes}x{threads}-{repeat}"
                run = train_once(spec, config, sets, processes, threads, out)
                runs.append(run)
                layout = f"{processes} process(es) x {threads} thread(s)"
                print(f"{name} {layout}: {run['epoch_seconds']} s/epoch", flush=True)
    rows = []
    for processes, threads in LAYOUTS:
        mine = [r for r in runs if (r["processes"], r["threads_per_process"]) == (processes, threads)]
        seconds = [s for r in mine for s in r["epoch_seconds"]]
        median = statistics.median(seconds)
        rows.append(
            {
                "processes": processes,
                "threads_per_process": threads,
                "median_epoch_seconds": round(median, 2),
                "events_per_second": round(events / median),
                "epochs_timed": len(seconds),
            }
        )
    return {"data": spec, "config": config or "defaults", "training_events": events, "rows": rows, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shop-epochs", type=int, default=3)
    parser.add_argument("--beauty-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="repeats of each layout on the shop")
    parser.add_argument("--skip-beauty", action="store_true")
    args = parser.parse_args()
    results = {"layouts": [f"{p} process(es) x {t} thread(s)" for p, t in LAYOUTS]}
    results["shop"] = bench("shop", "synthetic", None, args.shop_epochs, args.repeats)
    beauty = SHARED / "beauty"
    if args.skip_beauty or not beauty.exists():
        results["beauty"] = "skipped" if args.skip_beauty else f"{beauty} is absent"
    else:
        config = str(ROOT / "configs" / "beauty.yaml")
        results["beauty"] = bench("beauty", f"s3rec:{beauty}", config, args.beauty_epochs, 1)
    results["loadavg_after"] = loadavg()
    results["largest_process_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    write("ddp_scaling", results)


if __name__ == "__main__":
    main()
