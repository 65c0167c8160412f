"""Borrowed ids for held-out items (issue 23, ``model.cold_ids``).

A ``cold_items`` run's held-out items are given the mean id embedding of their k nearest trained
items by content (``SeqRec.borrow_ids``) for several k, against zero ids (the default). For each:
HR@10 / NDCG@10 of the cold and the warm test targets on valid (to choose k) and on test, ranked
over the whole catalog with the history excluded; and the attributes-only baseline on the test's
cold cases. k is chosen on valid, under the rule that warm NDCG@10 loses at most 3%.

    recscope train --data s3rec:../shared/data/beauty --config configs/beauty.yaml \\
        --set data.split=cold_items --out RUN
    python bench/cold_ids.py RUN bench/results/cold_ids_beauty.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np
import torch

from recscope.data import split_of
from recscope.evaluate import AttributesOnlyScorer, evaluate, model_scorer, protocol_options
from recscope.recommend import Recommender

NEIGHBOURS = (0, 1, 5, 10, 20, 50, 200)  # 0: zero ids


def main(run: str, out: str) -> None:
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
    text = model.text_vectors.numpy() if cfg.model.text_dim else None
    results["attributes_only_test"] = measure(parts.test, AttributesOnlyScorer(rec.data, text))["cold"]
    print("attributes_only", results["attributes_only_test"], flush=True)
    for k in NEIGHBOURS:
        with torch.no_grad():
            model.item_emb.weight[cold] = 0.0
        if k:
            model.cfg = dataclasses.replace(model.cfg, cold_neighbours=k)
            model.borrow_ids(cold, known)
        tic = time.time()
        results[f"k={k}" if k else "zero"] = row = {"valid": measure(parts.valid), "test": measure(parts.test)}
        print(k, json.dumps(row), f"{time.time() - tic:.1f} s", flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
