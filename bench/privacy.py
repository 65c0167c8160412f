"""User-level DP-SGD (train.privacy=dp): test accuracy at epsilon 1, 3, 8 and without DP, beside
popularity and item-kNN, on one pinned config; and whether a private model's explanations still
find the synthetic shop's planted causes.

    flock /tmp/bench.lock nice -n 5 .venv/bin/python bench/privacy.py --data s3rec:../shared/data/beauty \\
        --config configs/beauty.yaml --name beauty
    flock /tmp/bench.lock nice -n 5 .venv/bin/python bench/privacy.py --data movielens:../shared/data/ml-100k \\
        --config configs/ml-100k.yaml --name ml-100k
    flock /tmp/bench.lock nice -n 5 .venv/bin/python bench/privacy.py --data synthetic --name synthetic --explain

Every model of one data set trains the same pinned config (PIN over --config, then --set): one
tower, a fixed number of epochs evaluated once at the end, so the private and the non-private
model both keep their last epoch and differ only in the train.dp_* keys. Test is full ranking,
evaluated once per model. Popularity and item-kNN are not private: they read every training event.
Writes bench/results/privacy_<name>.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import load_average, peak_rss_mib, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope.data import load_dataset  # noqa: E402
from recscope.evaluate import evaluate_run  # noqa: E402
from recscope.explain.faithfulness import evaluate_faithfulness  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from recscope.train import fit  # noqa: E402

# What every model of a data set shares: small and one tower, so the whole table trains in about
# half an hour of CPU on 2 cores (epochs traded for width: d_model 32, not the tuned configs' 64 x 4).
PIN = [
    "model.towers=1",
    "model.d_model=32",
    "train.ema=0.0",
    "train.loss=ce",
    "train.lr_schedule=constant",
]
HEADLINE = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")
EXPLAIN_METHODS = ["occlusion", "integrated_gradients", "attention"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--name", required=True)
    parser.add_argument("--epsilons", default="1,3,8", help="comma-separated targets; the model without DP always")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512, help="users per step with DP, windows without")
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--clip", type=float, default=1.0, help="train.dp_max_grad_norm")
    parser.add_argument("--explain", action="store_true", help="measure planted-cause hits of explanations")
    parser.add_argument("--explain-users", type=int, default=300)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default="runs/privacy", help="where the runs are written (replaced)")
    args = parser.parse_args()
    pin = [
        *PIN,
        f"train.epochs={args.epochs}",
        f"train.eval_every={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        f"train.dp_max_grad_norm={args.clip}",
        *args.set,
    ]
    base = config_mod.load(args.config, pin)
    data = load_dataset(args.data, config=base.data)
    settings = [None, *(float(e) for e in args.epsilons.split(",") if e)]
    models, baselines = {}, None
    for epsilon in settings:
        name = "no DP" if epsilon is None else f"epsilon {epsilon:g}"
        extra = [] if epsilon is None else ["train.privacy=dp", f"train.dp_epsilon={epsilon}"]
        cfg = config_mod.load(args.config, pin + extra)
        out = Path(args.out) / f"{args.name}-{'nodp' if epsilon is None else f'eps{epsilon:g}'}"
        if out.exists():
            shutil.rmtree(out)
        tic = time.perf_counter()
        info = fit(data, cfg, out, data_spec=args.data)
        wall = time.perf_counter() - tic
        rec = Recommender.load(out)
        test = evaluate_run(rec, "test", "full", baselines=baselines is None)
        if baselines is None:
            baselines = {k: {m: test[k][m] for m in HEADLINE} for k in ("popularity", "item-kNN")}
        spent = info.state.privacy
        models[name] = {
            "test": {m: test["recscope"][m] for m in HEADLINE},
            "valid_NDCG@10": info.state.best_valid["NDCG@10"],
            "train_wall_seconds": round(wall, 1),
            "train_loop_seconds": info.state.train_seconds,
            "privacy": None if spent is None else spent.to_dict(),
        }
        if args.explain:
            faith = evaluate_faithfulness(rec, users=args.explain_users, methods=EXPLAIN_METHODS)
            models[name]["planted"] = {
                m: {k: faith["methods"][m].get(k) for k in ("planted_hit@1", "planted_hit@3", "planted_cases")}
                for m in EXPLAIN_METHODS
            }
        print(name, models[name], flush=True)
        # after every model, so that a run stopped part-way keeps the models it finished
        write(f"privacy_{args.name}", result(args, pin, data, models, baselines))


def result(args: argparse.Namespace, pin: list[str], data, models: dict, baselines: dict) -> dict:
    """The result file's body: the models trained so far, the baselines, and the bars they settle."""
    free = models["no DP"]["test"]["NDCG@10"]
    pop = baselines["popularity"]["NDCG@10"]
    bars = {}
    if "epsilon 8" in models:
        bars["epsilon 8 NDCG@10 / no DP"] = round(models["epsilon 8"]["test"]["NDCG@10"] / free, 3)
    if "epsilon 1" in models:
        bars["epsilon 1 NDCG@10 above popularity"] = models["epsilon 1"]["test"]["NDCG@10"] > pop
    bars["accountant epsilon within 5% of target"] = all(
        abs(m["privacy"]["epsilon"] - m["privacy"]["target_epsilon"]) <= 0.05 * m["privacy"]["target_epsilon"]
        for m in models.values()
        if m["privacy"]
    )
    return {
        "data": args.data,
        "config": args.config,
        "pinned": pin,
        "data_described": data.describe(),
        "models": models,
        "baselines": baselines,
        "bars": bars,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "load_average_at_end": load_average(),
    }


if __name__ == "__main__":
    main()
