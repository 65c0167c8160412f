"""Approximate retrieval against exact scoring, per query, on one item table.

    python bench/retrieval.py --items 1000000 --out bench/results/retrieval_1m.json
    python bench/retrieval.py --run RUN --out bench/results/retrieval_run.json

Builds the index as recscope does (``retrieval.open_index``: the run's ``retrieval`` settings,
``--set`` to change them), which tunes its search depth to ``retrieval.target_recall`` on
held-out queries, then measures it on other queries. Writes ``{"items", "recall@10",
"exact_ms", "ann_ms", "speedup", "tuning", ...}``: medians per query over ``--queries``
queries, one at a time (as the service asks), both sides in the same process, interleaved
query by query so load on the shared machine hits them alike.

- ``exact_ms``: the fastest exact top-10: the table times the query (one matrix-vector
  product over every item) and ``torch.topk``.
- ``exact_path_ms``: what recscope's exact path does per query (scores, hiding, the tie-ruled
  ``ranking.top_k`` over the whole catalog): what the index replaces in ``recommend`` (on the
  first 30 queries).
- ``ann_ms``: ``retrieval.top_k``: the index's search for ``10 * pool`` candidates at the
  tuned depth, their exact scores and the tie-ruled top-10 among them.
- ``recall@10``: the share of the exact top-10 that the approximate top-10 holds, on the
  measured queries (``tuning.recall``: on the tuning queries, at build time).

The table: with ``--run``, the run's item table; the depth is tuned on its users' histories
as recscope tunes it (``retrieval.tuning_users``) and measured on the last hidden states of
``--queries`` other users' histories. Without, a structured random table of ``--items``
items (not isotropic Gaussian): each item's token is the sum of a category embedding (50),
a brand embedding (3,000 brands, each in one category), a price band (5) and an id part
whose scale grows with the log of a Zipf popularity, as the fused tokens of a trained run
are sums of field embeddings; queries are layer-normed means of three items' tokens plus
noise, as a hidden state summarises a history; the depth is tuned on ``tune_queries`` of
them drawn with another seed than the measured ones. ``--depths`` also measures other
search depths (ivf_probe or ef_search) on the one index built; ``--hide 50`` has every query
hide 50 random items from all three paths, as the service hides a user's history (the index
steps around them with FAISS's id selector).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import commit, machine, peak_rss_mib  # noqa: E402
from recscope import retrieval  # noqa: E402
from recscope.config import RetrievalConfig  # noqa: E402
from recscope.config import load as load_config  # noqa: E402
from recscope.cpu import use_threads  # noqa: E402
from recscope.ranking import hide, top_k  # noqa: E402

K = 10
PATH_QUERIES = 30  # queries exact_path_ms is measured on (it sorts the whole catalog: ~0.5 s at 1M items)


def structured_table(n: int, width: int, seed: int) -> torch.Tensor:
    """(n + 1, width) float32, row 0 padding: category + brand + price band + popularity-scaled id part."""
    rng = np.random.default_rng(seed)
    category = rng.standard_normal((50, width), dtype=np.float32)
    brand = rng.standard_normal((3000, width), dtype=np.float32) * np.float32(0.7)
    band = rng.standard_normal((5, width), dtype=np.float32) * np.float32(0.4)
    table = np.zeros((n + 1, width), dtype=np.float32)
    for start in range(1, n + 1, 100_000):  # in slices: bounded temporaries at any size
        m = min(100_000, n + 1 - start)
        b = rng.integers(0, 3000, m)
        scale = (0.3 + 0.2 * np.log1p(rng.zipf(1.3, m).clip(1, 1000))).astype(np.float32)
        ids = rng.standard_normal((m, width), dtype=np.float32) * scale[:, None]
        table[start : start + m] = category[b % 50] + brand[b] + band[rng.integers(0, 5, m)] + ids
    return torch.from_numpy(table)


def structured_queries(table: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, C) layer-normed means of three random items' tokens plus noise."""
    rng = np.random.default_rng(seed + 1)
    mean = table[torch.from_numpy(rng.integers(1, len(table), (n, 3)))].mean(1)
    noise = torch.from_numpy(rng.standard_normal(mean.shape, dtype=np.float32)) * 0.5
    return torch.nn.functional.layer_norm(mean + noise, mean.shape[1:])


def run_table(run: Path, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The run's item table and the last hidden states of ``n`` of its users' histories, none of
    them a user the depth is tuned on."""
    from recscope.recommend import Recommender

    rec = Recommender.load(run, retrieval_config=RetrievalConfig(ann="off"))
    with_events = np.flatnonzero(rec.data.lengths > 0)
    tuned = with_events[retrieval.tuning_users(len(with_events), rec.config.retrieval.tune_queries)]
    others = np.setdiff1d(np.arange(rec.data.n_users), tuned)
    users = np.random.default_rng(seed).choice(others, min(n, len(others)), replace=False)
    with torch.no_grad():
        hidden = torch.cat([rec.query(rec.history(rec.data.user_ids[u])) for u in users])
    return rec.snapshot.table, hidden, rec.version


def dot(query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return query @ tokens.T


def measure(index: retrieval.ItemIndex, table: torch.Tensor, queries: torch.Tensor, hidden: int = 0) -> dict:
    """Per-query medians of the three paths and the ANN's recall@10, queries interleaved; each
    query hides ``hidden`` random items (seeded) from all three, as the service hides a history."""
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"exact": [], "exact_path": [], "ann": []}
    recalls = []
    for i, q in enumerate(queries[:, None, :]):  # (1, C) each
        hide_now = np.unique(rng.integers(1, len(table), hidden))
        started = time.perf_counter()
        scores = dot(q, table[1:])[0]
        scores[hide_now - 1] = float("-inf")
        exact = torch.topk(scores, K).indices + 1
        times["exact"].append(time.perf_counter() - started)
        if i < PATH_QUERIES:  # the slow one: a sample is enough
            started = time.perf_counter()
            top_k(hide(dot(q, table)[0], exclude=hide_now), K)
            times["exact_path"].append(time.perf_counter() - started)
        started = time.perf_counter()
        found = retrieval.top_k(index, q, table, K, hide_now, dot)
        times["ann"].append(time.perf_counter() - started)
        recalls.append(len(set(found.indices.tolist()) & set(exact.tolist())) / K)
    out = {f"{name}_ms": round(statistics.median(t) * 1e3, 3) for name, t in times.items()}
    out["recall@10"] = round(float(np.mean(recalls)), 4)
    out["speedup"] = round(out["exact_ms"] / out["ann_ms"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="items of the random table (not with --run)")
    parser.add_argument("--run", type=Path, help="a trained run: its item table, its users' hidden states")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=64, help="d_model of the random table")
    parser.add_argument("--queries", type=int, default=300, help="queries measured (none of them tuned on)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", choices=sorted(retrieval.KINDS), help="retrieval.index (default: the config's)")
    parser.add_argument(
        "--depths", default="", help="more search depths to measure, e.g. 64,128 (ivf_probe / ef_search)"
    )
    parser.add_argument(
        "--set", action="append", default=[], help="a retrieval key, e.g. hnsw_m=48 or target_recall=0.99"
    )
    parser.add_argument("--cache", type=Path, help="keep the built index here and reuse it (retrieval's own cache)")
    parser.add_argument("--hide", type=int, default=0, help="random items each query hides (a history's worth: 50)")
    args = parser.parse_args()

    threads = use_threads()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    overrides = [f"retrieval.{s}" for s in args.set] + ["retrieval.ann=on"]
    overrides += [f"retrieval.index={args.index}"] if args.index else []
    cfg = load_config(None, overrides).retrieval
    started = time.perf_counter()
    if args.run:
        table, queries, version = run_table(args.run, args.queries, args.seed)
        source = f"the item table of run {args.run}; measured on the last hidden states of users not tuned on"
        tuning_queries = lambda: retrieval.run_queries(args.run, version, cfg.tune_queries)  # noqa: E731
        tuning_source = retrieval.run_source(cfg)
    else:
        table = structured_table(args.items, args.width, args.seed)
        queries = structured_queries(table, args.queries, args.seed)
        version = f"structured-{args.items}-{args.width}-{args.seed}"
        source = (
            "structured random (category 50 + brand 3000 + price band 5 + Zipf-scaled id part); "
            "queries: layer-normed means of 3 items + noise"
        )
        tune_seed = args.seed + 1000  # other queries than the measured ones, from the same distribution
        tuning_queries = lambda: structured_queries(table, cfg.tune_queries, tune_seed).numpy()  # noqa: E731
        tuning_source = f"{cfg.tune_queries} structured queries (seed {tune_seed}; measured: seed {args.seed})"
    generated = time.perf_counter() - started
    cache = args.cache or Path(tempfile.mkdtemp(prefix="recscope-retrieval-"))
    started = time.perf_counter()
    index = retrieval.open_index(cache, version, table, cfg, tuning_queries, tuning_source)
    opened = time.perf_counter() - started
    index_file = retrieval.folder(cache, version) / retrieval.INDEX_FILE
    print(json.dumps({"tuning": dataclasses.asdict(index.info.tuning) if index.info.tuning else None}), flush=True)

    key = index.kind.depth_key
    sweep = []
    for depth in sorted({index.depth, *(int(v) for v in args.depths.split(",") if v)}):
        at = retrieval.ItemIndex(index.index, index.info, cfg)
        at.depth = depth
        sweep.append({key: depth, "tuned": depth == index.depth, **measure(at, table, queries, args.hide)})
        print(json.dumps(sweep[-1]), flush=True)
    tuned = next(s for s in sweep if s["tuned"])
    result = {
        "items": len(table) - 1,
        "recall@10": tuned["recall@10"],
        "exact_ms": tuned["exact_ms"],
        "ann_ms": tuned["ann_ms"],
        "exact_path_ms": tuned["exact_path_ms"],
        "speedup": tuned["speedup"],
        "index": cfg.index,
        "settings": index.info.settings,
        key: index.depth,
        "tuning": dataclasses.asdict(index.info.tuning) if index.info.tuning else None,
        "pool": cfg.pool,
        "build_seconds": index.info.build_seconds,
        "open_seconds": round(opened, 1),
        "index_bytes": index_file.stat().st_size,
        "width": table.shape[1],
        "queries": len(queries),
        "hidden_per_query": args.hide,
        "table": source,
        "tuning_queries": tuning_source,
        "table_seconds": round(generated, 1),
        "sweep": sweep,
        "threads": threads,
        "loadavg_before": load_before,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        "peak_rss_mib": round(peak_rss_mib()),
        "command": "python bench/retrieval.py " + " ".join(sys.argv[1:]),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
