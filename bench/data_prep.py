"""Data prep at scale: `recscope data prepare` of 10M events (1M users, 1M items) from Parquet and CSV.

    python bench/data_prep.py [--users 1000000 --items 1000000 --events 10000000] [--repeats 3]
                              [--data-dir DIR] [--before-src ../main/src] [--out bench/results/data_prep.json]

The shop is generated once with `recscope data generate` (timed, peak memory recorded) into
--data-dir (default: the temp folder), and written again as CSV; both are kept for later runs.
Each measurement is a fresh process, timed from start to exit, its peak RSS taken from the
kernel's rusage of that child (os.wait4):

- ``prepare``: `recscope data prepare FMT:interactions.FMT --catalog catalog.FMT --out DIR`
  (read, check, map ids, write the prepared set);
- ``load prepared``: what `train --data prepared:DIR` then spends loading it;
- ``load (before)``, with --before-src: the same raw load (`load_dataset`) by another source
  tree, e.g. main before this change, for a side-by-side.

Runs are interleaved (round-robin over the jobs), medians quoted. The machine is shared: the
load average is recorded before and after every run. Bars (issue 11): from Parquet <= 60 s
and <= 6 GiB peak; from CSV <= 120 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# No polars or torch here (nor bench/_common, which imports torch): a child's peak RSS counts the
# memory of the process it was started from, so this one stays small.
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RECSCOPE = Path(sys.executable).with_name("recscope")
BARS = {"parquet": {"seconds": 60, "peak_gib": 6.0}, "csv": {"seconds": 120, "peak_gib": None}}
LOAD = "import sys; from recscope.data import load_dataset; load_dataset(sys.argv[1], *sys.argv[2:])"
TO_CSV = "import sys, polars as pl; pl.scan_parquet(sys.argv[1]).sink_csv(sys.argv[2])"


def commit() -> str:
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return run.stdout.strip() or "unknown"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(args: list[str], pythonpath: Path) -> dict:
    """Run ``args`` in a fresh process: wall seconds, CPU seconds and peak RSS of that child."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    before = loadavg()
    tic = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:  # never a full pipe
        child = subprocess.Popen(args, env=env, stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not all children's maximum
        wall = time.perf_counter() - tic
        stdout.seek(0), stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code  # reaped by wait4: Popen must not wait for it again
    if code:
        raise SystemExit(f"{' '.join(args)} failed ({code}):\n{out}\n{err}")
    return {
        "seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_gib": round(usage.ru_maxrss / 1024**2, 3),  # ru_maxrss is in KiB on Linux
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "output": out.strip().splitlines()[-1:] if out.strip() else [],
    }


def generated(folder: Path, users: int, items: int, events: int, seed: int) -> dict:
    """The shop in ``folder`` as Parquet and CSV, generated once; how long generating took."""
    record = folder / "generated.json"
    if record.exists():
        return json.loads(record.read_text())
    args = [str(RECSCOPE), "data", "generate", "--users", str(users), "--items", str(items)]
    args += ["--events", str(events), "--seed", str(seed), "--out", str(folder)]
    result = {"command": " ".join(["recscope", *args[1:]]), **timed(args, ROOT / "src")}
    for name in ("interactions", "catalog"):
        subprocess.run([sys.executable, "-c", TO_CSV, folder / f"{name}.parquet", folder / f"{name}.csv"], check=True)
    result["files_mib"] = {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(folder.glob("*.*"))}
    record.write_text(json.dumps(result, indent=2))
    return result


def _memory_gib() -> float:
    with open("/proc/meminfo") as f:
        return round(int(f.readline().split()[1]) / 1024**2, 1)  # MemTotal, in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", default="parquet,csv")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "recscope-bench-data")
    parser.add_argument("--before-src", type=Path, help="another source tree's src/ for a side-by-side raw load")
    parser.add_argument("--out", type=Path, default=RESULTS / "data_prep.json")
    a = parser.parse_args()

    folder = a.data_dir / f"u{a.users}-i{a.items}-e{a.events}-s{a.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    generation = generated(folder, a.users, a.items, a.events, a.seed)
    print(f"generated: {generation['seconds']} s, peak {generation['peak_gib']} GiB", flush=True)

    jobs: dict[str, tuple[list[str], Path]] = {}
    with tempfile.TemporaryDirectory(dir=a.data_dir) as tmp:
        for fmt in a.formats.split(","):
            raw, catalog = f"{fmt}:{folder / f'interactions.{fmt}'}", str(folder / f"catalog.{fmt}")
            prepared = Path(tmp) / f"prepared-{fmt}"
            jobs[f"prepare {fmt}"] = (
                [str(RECSCOPE), "data", "prepare", raw, "--catalog", catalog, "--out", str(prepared)],
                ROOT / "src",
            )
            jobs[f"load prepared ({fmt})"] = ([sys.executable, "-c", LOAD, f"prepared:{prepared}"], ROOT / "src")
            if a.before_src:
                jobs[f"load {fmt} (before)"] = ([sys.executable, "-c", LOAD, raw, catalog], a.before_src.resolve())
        runs: dict[str, list[dict]] = {name: [] for name in jobs}
        for r in range(a.repeats):
            for name, (args, src) in jobs.items():
                runs[name].append(timed(args, src))
                last = runs[name][-1]
                print(f"{r + 1}/{a.repeats} {name}: {last['seconds']} s, peak {last['peak_gib']} GiB", flush=True)

    results = {}
    for name, rs in runs.items():
        results[name] = {
            "median_seconds": statistics.median(r["seconds"] for r in rs),
            "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
            "max_peak_gib": max(r["peak_gib"] for r in rs),
            "runs": rs,
        }
    bars = {}
    for fmt, bar in BARS.items():
        if f"prepare {fmt}" in results:
            got = results[f"prepare {fmt}"]
            ok = got["median_seconds"] <= bar["seconds"]
            if bar["peak_gib"] is not None:
                ok = ok and got["max_peak_gib"] <= bar["peak_gib"]
            bars[f"prepare {fmt}"] = {"bar": bar, "median_seconds": got["median_seconds"], "met": ok}
    payload = {
        "benchmark": "data_prep",
        "command": "python " + " ".join(["bench/data_prep.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit(),
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "memory_gib": _memory_gib()},
        "data": {"users": a.users, "items": a.items, "events": a.events, "seed": a.seed, "folder": str(folder)},
        "generate": generation,
        "before_src": str(a.before_src) if a.before_src else None,
        "results": results,
        "bars": bars,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(bars, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
