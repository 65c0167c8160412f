"""Train a config on a data set, then evaluate on test: full ranking (+ baselines) and sampled.

    python bench/accuracy.py --data s3rec:../shared/data/beauty --config configs/beauty.yaml --name beauty
    python bench/accuracy.py --data movielens:../shared/data/ml-100k --config configs/ml-100k.yaml --name ml-100k

Writes bench/results/accuracy_<name>.json with the metrics, training time and peak memory.
The config is selected on valid; test is evaluated once, at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_mib, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope.data import load_dataset  # noqa: E402
from recscope.evaluate import evaluate_run  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from recscope.train import fit  # noqa: E402


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
        },
    )


if __name__ == "__main__":
    main()
