"""Forgetting one user: shared towers against sharded towers (``train.tower_shards``) on Beauty.

Both runs use configs/beauty.yaml's model (4 towers) with the epochs pinned below so that a run
takes minutes, not half an hour. Measured: test NDCG@10 / HR@10 (full ranking) of each, the
seconds of a full training of each (the cost of forgetting by retraining from scratch), and the
seconds to forget one user on the sharded run (``recscope.forget.forget``: the tombstone, the one
shard that held the user trained again, the splice, its validation and publishing). The bar
(issue 24): forgetting one user costs at most 1/K of a full retrain's seconds.

    flock /tmp/bench.lock nice -n 5 .venv/bin/python bench/forget.py [NAME]
    flock /tmp/bench.lock nice -n 5 .venv/bin/python bench/forget.py forget_ml100k \\
        --data movielens:../shared/data/ml-100k --config configs/ml-100k.yaml \\
        --set train.epochs=10 --set model.max_len=50

writes bench/results/NAME.json (default forget_beauty). Both runs of one call share the pinned
overrides below, then the --set ones.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from _common import SHARED, load_average, write
from recscope import config as config_mod
from recscope.data import column_map, load_dataset
from recscope.evaluate import evaluate_run
from recscope.forget import forget
from recscope.recommend import Recommender
from recscope.serve.store import Store
from recscope.shards import shard_of
from recscope.train import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "beauty.yaml"
OVERRIDES = ["model.towers=4", "train.epochs=6", "train.eval_every=2", "train.patience=3"]
SPEC = "s3rec:" + str(SHARED / "beauty")


def test_metrics(run: Path) -> dict:
    metrics = evaluate_run(Recommender.load(run), "test", "full")["recscope"]
    return {k: round(metrics[k], 5) for k in ("NDCG@10", "HR@10")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", nargs="?", default="forget_beauty")
    parser.add_argument("--data", default=SPEC)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    name, spec, overrides = args.name, args.data.replace("../shared/data", str(SHARED)), [*OVERRIDES, *args.set]
    console = Console(stderr=True)
    shared_cfg = config_mod.load(args.config, overrides)
    sharded_cfg = config_mod.load(args.config, [*overrides, "train.tower_shards=true"])
    data = load_dataset(spec, None, shared_cfg.data, column_map(None))
    work = Path(tempfile.mkdtemp(prefix="bench-forget-"))
    try:
        tic = time.perf_counter()
        fit(data, shared_cfg, work / "shared", data_spec=spec, console=console)
        shared_seconds = time.perf_counter() - tic
        shared = test_metrics(work / "shared")

        from recscope.shards import fit_sharded

        tic = time.perf_counter()
        fit_sharded(data, sharded_cfg, work / "sharded", data_spec=spec, console=console)
        sharded_seconds = time.perf_counter() - tic
        sharded = test_metrics(work / "sharded")

        user = data.user_ids[len(data.user_ids) // 2]
        load = load_average()
        with Store.for_run(work / "sharded") as store:
            tic = time.perf_counter()
            result = forget(work / "sharded", user, store, console=console)
            forget_seconds = time.perf_counter() - tic
        after = test_metrics(work / "sharded")
        towers = sharded_cfg.model.towers
        write(
            name,
            {
                "data": spec.replace(str(SHARED), "../shared/data"),
                "config": f"configs/{args.config.name}",
                "overrides": overrides,
                "users": data.n_users,
                "towers": towers,
                "shared": {"test": shared, "train_seconds": round(shared_seconds, 1)},
                "sharded": {"test": sharded, "train_seconds": round(sharded_seconds, 1)},
                "forget": {
                    "user_shard": shard_of(user, towers),
                    "shards_retrained": result["shards_retrained"],
                    "seconds": round(forget_seconds, 1),
                    "test_after": after,
                    "load_average": load,
                },
                "forget_share_of_shared_retrain": round(forget_seconds / shared_seconds, 4),
                "forget_share_of_sharded_retrain": round(forget_seconds / sharded_seconds, 4),
                "bar": f"<= 1/{towers} = {1 / towers:.4f} of a full retrain's seconds",
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
