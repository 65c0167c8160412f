"""Sampled against full softmax (issue 11): accuracy and cost on Beauty, throughput and memory at 1M items.

    python bench/sampled_softmax.py beauty [--set k=v ...]     # -> bench/results/sampled_beauty.json
    python bench/sampled_softmax.py epoch [--epochs 3]          # -> bench/results/sampled_beauty_epoch.json
    python bench/sampled_softmax.py million [--steps 300]       # -> bench/results/sampled_million.json

beauty: trains configs/beauty.yaml on s3rec:../shared/data/beauty twice, ``train.loss=ce`` and
``train.loss=sampled``, side by side (two processes started together, 1 torch thread each, so
both see the same machine), then evaluates each selected model once on test (full ranking).
Extra ``--set`` options go to both (default: ``model.use_text=false``, no title encoding).

million: writes a 1,000,000-item, ~2M-event interactions parquet with numpy into a temp folder
(users browse "neighbourhoods" of nearby item ids, so the next item is learnable), loads it with
``parquet:FILE`` and trains ``--steps`` steps of sampled softmax (``train.loss=auto`` picks it)
with the training loop's own epoch function, recording training events per second and the
process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, peak_rss_mib, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "from recscope.cli import main; main()"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def beauty(args: argparse.Namespace) -> None:
    from recscope.evaluate import evaluate_run
    from recscope.recommend import Recommender
    from recscope.run import load_info

    data = SHARED / "beauty"
    if not data.exists():
        sys.exit(f"{data} is absent: this benchmark needs ../shared/data/beauty")
    sets = args.set or ["model.use_text=false"]
    sets = [*sets, "train.threads=1"]
    out = Path(args.runs)
    loads = [load_average()]
    procs = {}
    for loss in ("ce", "sampled"):
        run = out / f"beauty_{loss}"
        command = [sys.executable, "-c", TRAIN, "train", "--data", f"s3rec:{data}", "--out", str(run)]
        command += ["--config", str(ROOT / "configs" / "beauty.yaml"), "--set", f"train.loss={loss}"]
        command += [a for s in sets for a in ("--set", s)]
        log = open(out / f"beauty_{loss}.log", "w")
        procs[loss] = (run, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), time.perf_counter())
    rows = {}
    for loss, (run, proc, started) in procs.items():
        if proc.wait() != 0:
            sys.exit(f"training {loss} failed: see {out / f'beauty_{loss}.log'}")
        wall = time.perf_counter() - started
        loads.append(load_average())
        info = load_info(run)
        history = info.state["history"]
        rec = Recommender.load(run)
        test = evaluate_run(rec, "test")["recscope"]
        rows[loss] = {
            "run": str(run),
            "epochs": info.state["epoch"],
            "best_epoch": info.state["best_epoch"],
            "valid_NDCG@10": info.state["best_valid"]["NDCG@10"],
            "test": {k: test[k] for k in ("HR@10", "NDCG@10", "HR@20", "NDCG@20")},
            "median_epoch_seconds": round(statistics.median(r["train_seconds"] for r in history), 2),
            "epoch_seconds": [r["train_seconds"] for r in history],
            "wall_seconds": round(wall, 1),
        }
        print(loss, json.dumps(rows[loss]))
    ce, sampled = rows["ce"]["test"]["NDCG@10"], rows["sampled"]["test"]["NDCG@10"]
    write(
        "sampled_beauty",
        {
            "command": "python bench/sampled_softmax.py beauty " + " ".join(f"--set {s}" for s in args.set or []),
            "data": f"s3rec:{data}",
            "config": "configs/beauty.yaml",
            "sets": sets,
            "load_average": loads,
            "ce": rows["ce"],
            "sampled": rows["sampled"],
            "test_NDCG@10_sampled_over_full": round(sampled / ce, 4),
            "bar_within_5_percent": sampled >= 0.95 * ce,
            "epoch_time_sampled_over_full": round(
                rows["sampled"]["median_epoch_seconds"] / rows["ce"]["median_epoch_seconds"], 3
            ),
        },
    )


def epoch_time(args: argparse.Namespace) -> None:
    """Seconds per Beauty epoch of each loss, measured alternately (ce, sampled, ce, ...) in one
    process so both see the same machine; the training loop's own epoch function, no evaluation."""
    import torch

    from recscope import config as config_mod
    from recscope.cpu import use_threads
    from recscope.data import load_dataset, split_of, training_windows
    from recscope.model import SeqRec
    from recscope.sampling import make_optimizer
    from recscope.train import TrainingData, _train_epoch, with_data_sizes

    data = load_dataset(f"s3rec:{SHARED / 'beauty'}")
    sets = ["model.use_text=false", "train.threads=1", *(args.set or [])]
    loads, seconds, models = [load_average()], {"ce": [], "sampled": []}, {}
    for loss in seconds:
        cfg = with_data_sizes(config_mod.load(ROOT / "configs" / "beauty.yaml", [*sets, f"train.loss={loss}"]), data)
        use_threads(cfg.train.threads)
        torch.manual_seed(0)
        model = SeqRec(cfg.model)
        model.set_item_fields({f.name: torch.from_numpy(f.values) for f in data.fields})
        windows = torch.from_numpy(training_windows(data, split_of(data, cfg).train, cfg.model.max_len))
        models[loss] = (cfg, model, make_optimizer(model, cfg), TrainingData("next_item", windows))
    for epoch in range(args.epochs):
        for loss, (cfg, model, optimizer, batches) in models.items():
            tic = time.perf_counter()
            _train_epoch(model, optimizer, batches, cfg, epoch)
            seconds[loss].append(round(time.perf_counter() - tic, 2))
            print(loss, epoch + 1, seconds[loss][-1])
    loads.append(load_average())
    medians = {loss: statistics.median(s) for loss, s in seconds.items()}
    write(
        "sampled_beauty_epoch",
        {
            "command": f"python bench/sampled_softmax.py epoch --epochs {args.epochs}",
            "data": f"s3rec:{SHARED / 'beauty'}",
            "config": "configs/beauty.yaml",
            "sets": sets,
            "epoch_seconds": seconds,
            "median_epoch_seconds": medians,
            "sampled_over_full": round(medians["sampled"] / medians["ce"], 3),
            "load_average": loads,
        },
    )


def shop_parquet(folder: Path, users: int, items: int, events: int, seed: int = 0) -> None:
    """``folder/interactions.parquet`` with item locality: each user walks through nearby items
    (small steps, now and then a jump elsewhere), and ``folder/catalog.parquet`` of all
    ``items`` items (most are bought, not all: the catalog makes the 1M) with a ``category`` per
    64 neighbouring items. Item ids are shuffled, so a neighbourhood is no id range.
    Vectorised: no Python object per event."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    lengths = rng.poisson(events / users - 3, users) + 3  # every user has >= 3 events (valid and test)
    user = np.repeat(np.arange(users), lengths)
    n = len(user)
    start = np.repeat(rng.integers(0, items, users), lengths)  # the user's neighbourhood
    position = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    jump = rng.random(n) < 0.05  # now and then a new neighbourhood
    offset = np.cumsum(jump * rng.integers(0, items, n))
    offset -= np.repeat(offset[np.cumsum(lengths) - lengths], lengths)  # per user, from 0
    step = rng.integers(-2, 5, n)  # small moves, mostly forward
    walk = np.cumsum(step) - np.repeat(np.cumsum(step)[np.cumsum(lengths) - lengths], lengths)
    item = (start + offset + walk) % items
    ids = rng.permutation(items)  # nearby items get unrelated ids
    events_table = {
        "user_id": pa.array(user.astype(np.int64)),
        "item_id": pa.array(ids[item].astype(np.int64)),
        "timestamp": pa.array(position.astype(np.int64) + 1_600_000_000),
    }
    pq.write_table(pa.table(events_table), folder / "interactions.parquet")
    category = np.char.add("c", (np.arange(items) // 64).astype(str))  # text: an attribute, not a price band
    catalog = {"item_id": pa.array(ids.astype(np.int64)), "category": pa.array(category)}
    pq.write_table(pa.table(catalog), folder / "catalog.parquet")


def million(args: argparse.Namespace) -> None:
    import torch

    from recscope import config as config_mod
    from recscope.cpu import use_threads
    from recscope.data import load_dataset, split_of, training_windows
    from recscope.model import SeqRec
    from recscope.sampling import describe_loss, make_optimizer
    from recscope.train import TrainingData, _train_epoch, with_data_sizes

    loads = [load_average()]
    generate_s = 0.0
    if args.data:  # e.g. prepared:DIR of `recscope data generate` + `recscope data prepare`: the shop itself
        tic = time.perf_counter()
        data = load_dataset(args.data)
        load_s = time.perf_counter() - tic
    else:
        with tempfile.TemporaryDirectory() as tmp:
            tic = time.perf_counter()
            shop_parquet(Path(tmp), args.users, args.items, args.events)
            generate_s = time.perf_counter() - tic
            tic = time.perf_counter()
            data = load_dataset(f"parquet:{tmp}/interactions.parquet", catalog=f"{tmp}/catalog.parquet")
            load_s = time.perf_counter() - tic
    print(f"{data.describe()} (generated in {generate_s:.1f} s, loaded in {load_s:.1f} s)")
    sets = [f"train.threads={args.threads}", f"train.batch_size={args.batch_size}", *(args.set or [])]
    cfg = with_data_sizes(config_mod.load(ROOT / "configs" / "default.yaml", sets), data)
    threads = use_threads(cfg.train.threads)
    print(describe_loss(cfg))
    split = split_of(data, cfg)
    windows = torch.from_numpy(training_windows(data, split.train, cfg.model.max_len))
    torch.manual_seed(0)
    model = SeqRec(cfg.model)
    model.set_item_fields({f.name: torch.from_numpy(f.values) for f in data.fields})
    optimizer = make_optimizer(model, cfg)
    # A few hundred steps: a random subset of the windows, trained by the loop's own epoch function.
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0))
    subset = TrainingData("next_item", windows[order[: args.steps * cfg.train.batch_size]])
    events = subset.targets()
    tic = time.perf_counter()
    loss = _train_epoch(model, optimizer, subset, cfg, 0)
    seconds = time.perf_counter() - tic
    loads.append(load_average())
    rate = events / seconds
    rss = peak_rss_mib()
    print(f"{events:,.0f} events in {seconds:.1f} s: {rate:,.0f} events/s; loss {loss:.3f}; peak RSS {rss:,.0f} MiB")
    write(
        args.name,
        {
            "command": "python bench/sampled_softmax.py million "
            + f"--items {args.items} --steps {args.steps} --batch-size {args.batch_size} --threads {args.threads}"
            + "".join(f" --set {s}" for s in args.set or [])
            + (f" --data {args.data}" if args.data else ""),
            "data": args.data
            or f"numpy shop: {args.users:,} users, {args.items:,} items, ~{args.events:,} events (seed 0)",
            "dataset": data.describe(),
            "generate_seconds": round(generate_s, 1),
            "load_seconds": round(load_s, 1),
            "loss": describe_loss(cfg),
            "torch_threads": threads,
            "steps": -(-len(subset.windows) // cfg.train.batch_size),
            "batch_size": cfg.train.batch_size,
            "train_events": int(events),
            "train_seconds": round(seconds, 2),
            "events_per_second": round(rate),
            "mean_loss": round(loss, 4),
            "peak_rss_mib": round(rss),
            "load_average": loads,
            "bar_events_per_second": rate >= 20_000,
            "bar_peak_rss_12_gib": rss <= 12 * 1024,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    b = sub.add_parser("beauty")
    b.add_argument("--set", action="append", help="section.key=value for both runs (default: model.use_text=false)")
    b.add_argument("--runs", default=str(ROOT / "runs"), help="folder of the two runs (and their logs)")
    e = sub.add_parser("epoch")
    e.add_argument("--epochs", type=int, default=3)
    e.add_argument("--set", action="append", help="section.key=value for both")
    m = sub.add_parser("million")
    m.add_argument("--data", help="a data spec to train on instead of the numpy shop (e.g. prepared:DIR)")
    m.add_argument("--users", type=int, default=200_000)
    m.add_argument("--items", type=int, default=1_000_000)
    m.add_argument("--events", type=int, default=2_000_000)
    m.add_argument("--steps", type=int, default=300)
    m.add_argument("--batch-size", type=int, default=256)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--set", action="append", help="section.key=value")
    m.add_argument("--name", default="sampled_million", help="result file bench/results/NAME.json")
    args = parser.parse_args()
    if args.part == "beauty":
        Path(args.runs).mkdir(parents=True, exist_ok=True)
        beauty(args)
    else:
        {"epoch": epoch_time, "million": million}[args.part](args)


if __name__ == "__main__":
    main()
