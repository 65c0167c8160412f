"""Federated training (Flower simulation, FedAvg) against centralised training of the same config.

    flock /tmp/bench.lock nice -n 5 .venv/bin/python bench/federated.py
    flock /tmp/bench.lock nice -n 5 .venv/bin/python bench/federated.py --rounds 15 --local-epochs 5 --name federated

MovieLens-100K, configs/ml-100k.yaml, users dealt to 10 clients by a hash of their id. Both runs
train at most the same epochs (rounds x local epochs; the centralised run stops early as its
config says) and are selected on valid; test is evaluated once per run, at the end. Records the
valid metrics per round beside the centralised run's per evaluation, the bytes sent per round,
and the bar: federated test NDCG@10 >= 80% of centralised. Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, load_average, peak_rss_mib, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope.data import load_dataset  # noqa: E402
from recscope.evaluate import evaluate_run  # noqa: E402
from recscope.federated import Federation, federate  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from recscope.train import fit  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ml-100k.yaml"
HEADLINE = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")
BAR = 0.8


def test_metrics(run: Path) -> dict:
    full = evaluate_run(Recommender.load(run), "test", "full")["recscope"]
    return {k: round(full[k], 4) for k in HEADLINE}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=f"movielens:{SHARED / 'ml-100k'}")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--dp-noise", type=float, default=0.0)
    parser.add_argument("--dp-clip", type=float, default=0.0)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--name", default="federated")
    parser.add_argument("--skip-central", action="store_true", help="federated only (exploring rounds and epochs)")
    args = parser.parse_args()
    epochs = args.rounds * args.local_epochs
    overrides = [*args.set, f"train.epochs={epochs}"]
    cfg = config_mod.load(CONFIG, overrides)
    data = load_dataset(args.data, config=cfg.data)
    work = Path(tempfile.mkdtemp(prefix="bench-federated-"))
    try:
        plan = Federation(args.clients, args.rounds, args.local_epochs, args.fraction, args.dp_noise, args.dp_clip)
        tic = time.perf_counter()
        fed = federate(data, cfg, work / "federated", plan, data_spec="movielens:ml-100k")
        fed_wall = time.perf_counter() - tic
        federation = fed.state.other["federation"]
        result = {
            "data": "movielens:ml-100k (../shared/data/ml-100k)",
            "config": "configs/ml-100k.yaml",
            "overrides": overrides,
            "federation": {k: v for k, v in federation.items() if k not in ("rounds_log",)},
            "federated": {
                "best_round": fed.state.best_epoch // args.local_epochs,
                "best_valid": {k: round(fed.state.best_valid[k], 4) for k in HEADLINE},
                "test": test_metrics(work / "federated"),
                "wall_seconds": round(fed_wall, 1),
                "per_round": [
                    {
                        "round": r["round"],
                        "epochs": r["round"] * args.local_epochs,
                        "loss": round(r["loss"], 4),
                        "valid_NDCG@10": round(r["valid"]["NDCG@10"], 4),
                        "valid_HR@10": round(r["valid"]["HR@10"], 4),
                        "bytes_down": r["bytes_down"],
                        "bytes_up": r["bytes_up"],
                    }
                    for r in federation["rounds_log"]
                ],
            },
            "load_average_after_federated": load_average(),
        }
        if not args.skip_central:
            tic = time.perf_counter()
            central = fit(data, cfg, work / "central", data_spec="movielens:ml-100k")
            result["central"] = {
                "best_epoch": central.state.best_epoch,
                "epochs_run": central.state.epoch,
                "best_valid": {k: round(central.state.best_valid[k], 4) for k in HEADLINE},
                "test": test_metrics(work / "central"),
                "wall_seconds": round(time.perf_counter() - tic, 1),
                "per_epoch_valid_NDCG@10": [
                    [h["epoch"], round(h["valid"]["NDCG@10"], 4)] for h in central.state.history if "valid" in h
                ],
            }
            ratio = result["federated"]["test"]["NDCG@10"] / result["central"]["test"]["NDCG@10"]
            result["bar"] = {
                "federated_over_central_test_NDCG@10": round(ratio, 3),
                "target": BAR,
                "met": ratio >= BAR,
            }
        result["peak_rss_mib"] = round(peak_rss_mib(), 1)
        write(args.name, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
