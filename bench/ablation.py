"""Ablation of the item token's fields on one data set: ids only, + attributes, + text, + both.

    python bench/ablation.py --data s3rec:../shared/data/beauty --config configs/beauty.yaml --name beauty
    python bench/ablation.py ... --variants ids attributes   # a subset; the others stay in the result file
    python bench/ablation.py ... --variants both --reuse both=runs/beauty   # a run already trained

Every variant trains the same config (plus ``--set`` overrides) with only ``model.use_attributes``
and ``model.use_text`` changed; the training loop selects each on valid (NDCG@10, early stopping)
and the test split is evaluated once per variant, at the end. One variant trains at a time (a
Beauty variant is ~8-10 min on 2 cores), so ``--variants`` runs part of the table and the result
file ``bench/results/ablation_<name>.json`` keeps the variants measured before with the same
data, config and overrides (each with its own commit). ``--reuse VARIANT=RUN`` takes an existing
run instead of training, after checking that its resolved config is the variant's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, commit, peak_rss_mib, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope.data import load_dataset  # noqa: E402
from recscope.evaluate import evaluate_run  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from recscope.train import fit  # noqa: E402

VARIANTS = {
    "ids": ["model.use_attributes=false", "model.use_text=false"],
    "attributes": ["model.use_attributes=true", "model.use_text=false"],
    "text": ["model.use_attributes=false", "model.use_text=true"],
    "both": ["model.use_attributes=true", "model.use_text=true"],
}
SHOWN = ("HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR@10")


def _comparable(config: dict) -> dict:
    """A resolved config without the sizes filled from the data (a reused run has them set)."""
    model = {k: v for k, v in config["model"].items() if k not in config_mod.DERIVED}
    return {**config, "model": model}


def run_variant(name: str, overrides: list[str], args, data, reuse: Path | None) -> dict:
    cfg = config_mod.load(args.config, overrides)
    if reuse is not None:
        rec = Recommender.load(reuse)
        if _comparable(rec.config.to_dict()) != _comparable(cfg.to_dict()):
            raise SystemExit(f"--reuse {name}={reuse}: the run's config is not the {name} variant's")
        out, wall = reuse, rec.info.state.get("train_seconds")
    else:
        out = Path(args.runs) / f"ablation_{args.name}_{name}"
        if out.exists():
            shutil.rmtree(out)
        tic = time.perf_counter()
        fit(data, cfg, out, data_spec=args.data)
        wall = round(time.perf_counter() - tic, 1)
        rec = Recommender.load(out)
    state = rec.info.state
    test = evaluate_run(rec, "test", "full")["recscope"]  # once, after selection on valid
    return {
        "overrides": overrides,
        "run": str(out),
        "commit": commit(),
        "reused": reuse is not None,
        "text_field": bool(rec.config.model.text_dim),
        "attribute_fields": [f[0] for f in rec.config.model.fields] if rec.config.model.use_attributes else [],
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "train_wall_seconds": wall,
        "train_loop_seconds": state["train_seconds"],
        "valid": state["best_valid"],
        "test": test,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="s3rec:../shared/data/beauty")
    parser.add_argument("--config", default="configs/beauty.yaml")
    parser.add_argument("--name", default="beauty")
    parser.add_argument("--runs", default="runs", help="folder of the variants' run directories")
    parser.add_argument("--set", action="append", default=[], help="override shared by every variant")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--reuse", action="append", default=[], help="VARIANT=RUN: take a trained run")
    args = parser.parse_args()
    reuse = dict(item.split("=", 1) for item in args.reuse)

    path = RESULTS / f"ablation_{args.name}.json"
    variants: dict = {}
    if path.exists():
        old = json.loads(path.read_text())
        if (old.get("data"), old.get("config"), old.get("overrides")) == (args.data, args.config, args.set):
            variants = old.get("variants", {})
    cfg = config_mod.load(args.config, args.set)
    data = load_dataset(args.data, config=cfg.data)
    for name in args.variants:
        variants[name] = run_variant(
            name, args.set + VARIANTS[name], args, data, Path(reuse[name]) if name in reuse else None
        )
        print(
            f"{name}: valid NDCG@10 {variants[name]['valid']['NDCG@10']:.4f}  test "
            + "  ".join(f"{k} {variants[name]['test'][k]:.4f}" for k in SHOWN)
        )
    order = [v for v in VARIANTS if v in variants]
    write(
        f"ablation_{args.name}",
        {
            "data": args.data,
            "config": args.config,
            "overrides": args.set,
            "selection": "valid NDCG@10 (early stopping); test evaluated once per variant",
            "variants": {v: variants[v] for v in order},
            "peak_rss_mib": round(peak_rss_mib(), 1),
        },
    )


if __name__ == "__main__":
    main()
