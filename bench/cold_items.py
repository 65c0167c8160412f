"""Cold-start items: train a ``cold_items`` run and a normal leave-one-out run on the same data,
then report held-out (cold) test items against popularity and attributes-only, and the warm
test items against the normal model evaluated on the very same warm cases.

    python bench/cold_items.py --data s3rec:../shared/data/beauty --config configs/beauty.yaml --name beauty
    python bench/cold_items.py --data synthetic:users=1000 --config configs/tiny.yaml --name synthetic

Writes bench/results/cold_items_<name>.json. ``--set`` applies to both runs (``--cold-set``
only to the cold_items run, e.g. ``train.id_dropout=0.2``). ``--warm-run DIR`` reuses a normal
run already trained with the same data and config instead of training one.

The bar (issue 10): cold HR@10 >= 3x popularity's, warm NDCG@10 within 5% of the normal model's.
Popularity gives a held-out item no training count, so its full-catalog figure is 0 (a ratio
over it says nothing): the ratio is also given among the held-out items only, where popularity
is chance.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_mib, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope.data import load_dataset  # noqa: E402
from recscope.evaluate import evaluate, evaluate_run, model_scorer, protocol_options  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from recscope.train import fit  # noqa: E402

HEADLINE = ("HR@10", "NDCG@10")


def _train(data_spec: str, config: str, sets: list[str], out: Path) -> tuple[Recommender, float]:
    if out.exists():
        shutil.rmtree(out)
    cfg = config_mod.load(config, sets)
    data = load_dataset(data_spec, config=cfg.data)
    tic = time.perf_counter()
    fit(data, cfg, out, data_spec=data_spec)
    return Recommender.load(out), round(time.perf_counter() - tic, 1)


def _brief(metrics: dict) -> dict:
    return {k: metrics[k] for k in HEADLINE}


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else round(a / b, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", default=None, help="folder of the two runs (default runs/cold_<name>)")
    parser.add_argument("--set", action="append", default=[], help="override for both runs")
    parser.add_argument("--cold-set", action="append", default=[], help="override for the cold_items run only")
    parser.add_argument("--warm-run", default=None, help="reuse this normal (loo) run instead of training one")
    args = parser.parse_args()
    out = Path(args.out or f"runs/cold_{args.name}")

    cold_sets = [*args.set, "data.split=cold_items", *args.cold_set]
    cold, cold_seconds = _train(args.data, args.config, cold_sets, out / "cold_items")
    report = evaluate_run(cold, "test", "full")
    if args.warm_run:
        normal, normal_seconds = Recommender.load(args.warm_run), None
    else:
        normal, normal_seconds = _train(args.data, args.config, [*args.set, "data.split=loo"], out / "loo")

    # The normal model on the cold run's warm test cases: what holding the items out costs them.
    parts = cold.split()
    warm_cases = parts.test.subset(~np.isin(parts.test.targets, parts.cold))
    cfg = normal.config
    normal_warm = evaluate(
        model_scorer(normal.model),
        normal.data,
        warm_cases,
        cfg.model.max_len,
        cfg.eval.ks,
        **protocol_options(cfg, "full"),
    )
    c, w, among = report["cold_items"], report["warm_items"], report["cold_items_among_cold"]
    summary = {
        "cold_cases": report["cases"]["cold_items"],
        "warm_cases": report["cases"]["warm_items"],
        "held_out_items": len(parts.cold),
        "cold": {name: _brief(m) for name, m in c.items()},
        "cold_among_cold": {name: _brief(m) for name, m in among.items()},
        "warm": {name: _brief(m) for name, m in w.items()} | {"normal_model": _brief(normal_warm)},
        "cold_hr10_over_popularity": _ratio(c["recscope"]["HR@10"], c["popularity"]["HR@10"]),
        "cold_hr10_over_popularity_among_cold": _ratio(among["recscope"]["HR@10"], among["popularity"]["HR@10"]),
        "cold_hr10_over_attributes_only": _ratio(c["recscope"]["HR@10"], c["attributes_only"]["HR@10"]),
        "warm_ndcg10_vs_normal": _ratio(w["recscope"]["NDCG@10"], normal_warm["NDCG@10"]),
    }
    for key, value in summary.items():
        print(f"{key}: {value}")
    write(
        f"cold_items_{args.name}",
        {
            "data": args.data,
            "config": args.config,
            "overrides": args.set,
            "cold_overrides": cold_sets,
            "runs": {"cold_items": str(out / "cold_items"), "loo": str(args.warm_run or out / "loo")},
            "train_wall_seconds": {"cold_items": cold_seconds, "loo": normal_seconds},
            "best_epoch": {"cold_items": cold.info.state["best_epoch"], "loo": normal.info.state["best_epoch"]},
            "summary": summary,
            "test_full": report,
            "normal_model_on_warm_cases": normal_warm,
            "peak_rss_mib": round(peak_rss_mib(), 1),
        },
    )


if __name__ == "__main__":
    main()
