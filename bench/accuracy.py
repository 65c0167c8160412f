"""Train a config on a data set, then evaluate on test: full ranking (+ baselines) and sampled.

    python bench/accuracy.py --data s3rec:../shared/data/beauty --config configs/beauty.yaml --name beauty
    python bench/accuracy.py --data movielens:../shared/data/ml-100k --config configs/ml-100k.yaml --name ml-100k

Writes bench/results/accuracy_<name>.json with the metrics, training time and peak memory.
A rerun keeps the earlier runs' headline figures in its "history" (oldest first), so a new
result never silently replaces the one the docs quoted. The config is selected on valid; test
is evaluated once, at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, peak_rss_mib, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope.data import load_dataset  # noqa: E402
from recscope.evaluate import evaluate_run  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from recscope.train import fit  # noqa: E402

HEADLINE = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


def history(name: str) -> list[dict]:
    """The earlier runs of ``accuracy_<name>.json``: theirs, then the file's own headline figures."""
    path = RESULTS / f"accuracy_{name}.json"
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    test = old.get("test_full", {}).get("recscope", {})
    keep = ("date", "commit", "config", "overrides", "best_epoch", "train_wall_seconds")
    earlier = {k: old.get(k) for k in keep}
    earlier["valid_NDCG@10"] = old.get("best_valid", {}).get("NDCG@10")
    earlier["test"] = {k: test.get(k) for k in HEADLINE}
    return [*old.get("history", []), earlier]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", default=None, help="run directory (default runs/<name>)")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out or f"runs/{args.name}")
    if out.exists():
        shutil.rmtree(out)
    cfg = config_mod.load(args.config, args.set)
    data = load_dataset(args.data, config=cfg.data)
    tic = time.perf_counter()
    info = fit(data, cfg, out, data_spec=args.data)
    wall = time.perf_counter() - tic
    rec = Recommender.load(out)
    full = evaluate_run(rec, "test", "full", baselines=True)
    sampled = evaluate_run(rec, "test", "sampled")
    write(
        f"accuracy_{args.name}",
        {
            "data": args.data,
            "config": args.config,
            "overrides": args.set,
            "run": str(out),
            "epochs_run": info.state["epoch"],
            "best_epoch": info.state["best_epoch"],
            "best_valid": info.state["best_valid"],
            "train_wall_seconds": round(wall, 1),
            "train_loop_seconds": info.state["train_seconds"],
            "test_full": full,
            "test_sampled": sampled["recscope"],
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "history": history(args.name),
        },
    )


if __name__ == "__main__":
    main()
