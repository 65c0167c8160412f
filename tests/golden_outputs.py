"""What a saved run answers, as exact JSON: scores, lists, explanations and what-ifs of the
fixture run (tests/fixtures/tiny_run: 2 towers, synthetic shop, model.safetensors only).

    python tests/golden_outputs.py OUT.json      # with PYTHONPATH=<a checkout's src> to pin the code

tests/test_same_outputs.py compares the code of the checkout with the golden file written by
the code before the serving reshape (commit 6033471), bit for bit: floats are written with
repr (exact), timings are left out.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny_run"
USERS = 3
METHODS = ("shapley", "occlusion", "integrated_gradients", "attention")


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k != "ms"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value


def outputs(run: Path) -> dict:
    from recscope.recommend import Recommender

    torch.set_num_threads(1)
    rec = Recommender.load(run)
    users = rec.data.user_ids[:USERS]
    out: dict = {"users": {}}
    for user in users:
        history = rec.history(user)
        entry = {
            "scores": [repr(float(s)) for s in rec.scores(history)],
            "top10": [r.to_dict() for r in rec.recommend(user=user, k=10)],
            "anonymous": [r.to_dict() for r in rec.recommend(history=[rec.data.item_ids[i] for i in history[:3]], k=5)],
            "what_if": rec.what_if(user=user, remove=[rec.data.item_ids[history[-1]]], k=5),
        }
        for method in METHODS:
            entry[method] = [e.to_dict() for e in rec.explain(user=user, top=3, method=method, counterfactual=True)]
        outside = rec.recommend(user=user, k=30)[-1].item_id
        entry["outside"] = rec.explain(user=user, item=outside, k=10)[0].to_dict()
        out["users"][user] = entry
    return _clean(out)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:  # a copy: loading may cache an index or a store beside the run
        run = Path(tmp) / "run"
        shutil.copytree(FIXTURE, run)
        Path(sys.argv[1]).write_text(json.dumps(outputs(run), indent=0, sort_keys=True))
