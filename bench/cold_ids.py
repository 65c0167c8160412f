"""Borrowed ids for held-out items (issue 23, ``model.cold_ids``).

A ``cold_items`` run's held-out items are given the mean id embedding of their k nearest trained
items by content (``SeqRec.borrow_ids``), times a scale s in (0, 1] (``model.cold_id_scale``), for a
grid of (k, s), against zero ids (the default). For each: HR@10 / NDCG@10 of the cold and the warm
valid targets, ranked over the whole catalog with the history excluded. (k, s) is chosen on valid:
the best cold NDCG@10 among the settings whose warm NDCG@10 loses at most 3% against zero ids.
Valid rows already in the output file (an earlier run on the same RUN) are reused, not measured again.
Then zero ids, the chosen setting and k=1 s=1 are measured on test, with the attributes-only
baseline on the test's cold cases.

    recscope train --data s3rec:../shared/data/beauty --config configs/beauty.yaml \\
        --set data.split=cold_items --out RUN
    python bench/cold_ids.py RUN bench/results/cold_ids_beauty.json

A third argument, an earlier result file (``REFERENCE``), sets the warm floor from *its* zero-id
valid warm NDCG@10 instead of this run's: a run trained differently (id dropout) is held to the
warm accuracy of the reference model, not to its own.

    python bench/cold_ids.py RUN2 bench/results/cold_ids_dropout_beauty.json bench/results/cold_ids_scale_beauty.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recscope.data import split_of
from recscope.evaluate import AttributesOnlyScorer, evaluate, model_scorer, protocol_options
from recscope.recommend import Recommender

NEIGHBOURS = (1, 2, 3, 5)
SCALES = (0.5, 0.7, 0.85, 1.0)
FINER = ((1, 0.75), (1, 0.8))  # between k=1's last scale within the warm cost and its first beyond
WARM_COST = 0.03  # the most warm valid NDCG@10 may lose


def main(run: str, out: str, reference: str | None = None) -> None:
    rec = Recommender.load(run)
    cfg, model = rec.config, rec.model
    parts = split_of(rec.data, cfg)
    cold = torch.as_tensor(parts.cold, dtype=torch.long)
    known = torch.ones(model.cfg.n_items + 1, dtype=torch.bool)
    known[0] = False
    known[cold] = False
    known = known.nonzero().flatten()
    options = protocol_options(cfg, "full")
    codes = None if rec.inputs is None else rec.inputs.codes

    def measure(cases, scorer=None) -> dict:
        is_cold = np.isin(cases.targets, parts.cold)
        result = {}
        for group, subset in (("cold", cases.subset(is_cold)), ("warm", cases.subset(~is_cold))):
            metrics = evaluate(
                scorer or model_scorer(model),
                rec.data,
                subset,
                cfg.model.max_len,
                cfg.eval.ks,
                events=codes if scorer is None else None,
                **options,
            )
            result[group] = {"cases": len(subset), **{k: round(metrics[k], 4) for k in ("HR@10", "NDCG@10")}}
        return result

    results: dict = {"run": run, "cold_items": len(cold)}
    done = json.loads(Path(out).read_text()) if Path(out).exists() else {}
    text = model.text_vectors.numpy() if cfg.model.text_dim else None
    results["attributes_only_test"] = measure(parts.test, AttributesOnlyScorer(rec.data, text))["cold"]
    print("attributes_only", results["attributes_only_test"], flush=True)

    def borrow(k: int, scale: float) -> None:
        with torch.no_grad():
            model.item_emb.weight[cold] = 0.0
        if k:
            model.cfg = dataclasses.replace(model.cfg, cold_neighbours=k, cold_id_scale=scale)
            model.borrow_ids(cold, known)

    def name(k: int, scale: float) -> str:
        return f"k={k} s={scale:g}" if k else "zero"

    grid = [(0, 1.0)] + [(k, s) for k in NEIGHBOURS for s in SCALES] + list(FINER)
    for k, scale in grid:
        if name(k, scale) in done:  # measured by an earlier run of this script on the same run: deterministic
            results[name(k, scale)] = {"valid": done[name(k, scale)]["valid"]}
            continue
        borrow(k, scale)
        tic = time.time()
        results[name(k, scale)] = {"valid": measure(parts.valid)}
        print(name(k, scale), json.dumps(results[name(k, scale)]), f"{time.time() - tic:.1f} s", flush=True)
    warm = json.loads(Path(reference).read_text())["zero"] if reference else results["zero"]
    floor = (1 - WARM_COST) * warm["valid"]["warm"]["NDCG@10"]
    if reference:
        results["reference"] = {"file": reference, "zero": warm}
    allowed = [g for g in grid if results[name(*g)]["valid"]["warm"]["NDCG@10"] >= floor]
    chosen = max(allowed, key=lambda g: results[name(*g)]["valid"]["cold"]["NDCG@10"])
    results["chosen_on_valid"] = {"setting": name(*chosen), "warm_floor": round(floor, 4)}
    for k, scale in dict.fromkeys([(0, 1.0), chosen, (1, 1.0)]):
        borrow(k, scale)
        results[name(k, scale)]["test"] = measure(parts.test)
        print(name(k, scale), "test", json.dumps(results[name(k, scale)]["test"]), flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
