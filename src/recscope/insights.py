"""The merchant's view: what drives recommendations over many users, and what gets recommended.

    view = global_view(rec, users=rec.data.user_ids[:500], k=10)

Each user's whole history is read as it stands now, and the attribute attribution of every
item in its top-``k`` is computed (:mod:`recscope.explain.fields`: gradient x input on each
field's part of each history token, summed per attribute value over the history; exact on
the candidate's; one batched pass per user, cheap enough for thousands of users). The view
is a plain JSON-serialisable dict; the figures (:mod:`recscope.viz.figures`) and the HTML report render it::

    {"users": n, "k": k, "method": name,
     "drivers": [{"label": "brand=Acme", "field": "brand", "weight": mean push per
                  recommendation, "count": recommendations it took part in}, ...],
     "recommended": {field: {value: recommendations}},   # every catalog field
     "catalog": {field: {value: catalog items}},
     "coverage": {"recommended_items", "catalog_items", "share"},
     "popularity": {"labels": [...], "recommended": [shares], "interactions": [shares]}}

A driver's weight sums the value's attribution on the history side (the value in the
user's history pushed the item up) and on the candidate side (the recommended item's own
value pushed its score up), averaged over every recommendation in the view. Its count is
the number of recommendations in which the value took part, on either side or both, so it
never exceeds the number of recommendations.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from recscope.data import Dataset
from recscope.errors import RunError
from recscope.evaluate import PopularityScorer
from recscope.explain.fields import WHOLE_ITEM, candidate_fields, field_game
from recscope.explain.gradients import GradInputExplainer
from recscope.ranking import top_k

if TYPE_CHECKING:
    from recscope.recommend import Recommender

# items ranked by interactions, most popular first: (label, upper edge as a share of items)
POPULARITY_BUCKETS = (("top 1%", 0.01), ("1-5%", 0.05), ("5-20%", 0.20), ("20-50%", 0.50), ("bottom 50%", 1.0))
WHOLE_ITEM_FIELDS = WHOLE_ITEM  # attributions that belong to the item, not to a value
METHOD = "gradient × input"


def global_view(rec: Recommender, users: list[str], k: int = 10) -> dict:
    """Attribute attributions of the top-``k`` of every user in ``users`` (own ids), aggregated."""
    if not users:
        raise RunError("no users to aggregate over", fix="pass at least one user id")
    data: Dataset = rec.data
    explainer = GradInputExplainer(rec.model)
    totals: dict[str, float] = defaultdict(float)
    counts: Counter = Counter()
    field_of: dict[str, str] = {}
    recommended: list[int] = []
    for user in users:
        history = rec.history(user)
        scores = rec.scores(history)
        top = top_k(scores, k).indices
        read = rec.tensor(history)[0]
        game = field_game(rec.model, explainer.table, read, by_position=True)
        hist_weights = explainer.attribute_fields(game, top).view(len(top), len(read), -1)  # (K, T, F)
        cand_weights, names = candidate_fields(rec.model, read, top)  # (K, F)
        for j, item in enumerate(top.tolist()):
            recommended.append(item)
            merged: dict[str, float] = defaultdict(float)  # one entry per value: both sides summed
            sides = [(i, hist_weights[j, t]) for t, i in enumerate(read.tolist())] + [(item, cand_weights[j])]
            for part, weights in sides:  # every history token, then the recommended item
                for label, field, weight in _value_weights(data, part, weights, names):
                    merged[label] += weight
                    field_of[label] = field
            for label, weight in merged.items():
                totals[label] += weight
                counts[label] += weight != 0.0
    n_recs = max(len(recommended), 1)
    drivers = [
        {"label": label, "field": field_of[label], "weight": total / n_recs, "count": int(counts[label])}
        for label, total in totals.items()
    ]
    drivers.sort(key=lambda d: -abs(d["weight"]))
    return {
        "users": len(users),
        "k": k,
        "method": METHOD,
        "drivers": drivers,
        "recommended": {f.name: _value_counts(f, recommended) for f in data.fields},
        "catalog": {f.name: _value_counts(f, range(1, data.n_items + 1)) for f in data.fields},
        "coverage": {
            "recommended_items": len(set(recommended)),
            "catalog_items": data.n_items,
            "share": len(set(recommended)) / data.n_items,
        },
        "popularity": popularity(rec, recommended),
    }


def _value_weights(data: Dataset, item: int, weights: torch.Tensor, names: list[str]) -> list[tuple[str, str, float]]:
    """(label, field, weight) per attribute value of one item's token: ``weights`` (F,) per model
    field in ``names``; a multi-valued cell's weight is shared equally by its values."""
    by_name = {f.name: f for f in data.fields}
    out = []
    for name, weight in zip(names, weights.tolist(), strict=True):
        if name in WHOLE_ITEM_FIELDS:
            out.append((name, name, weight))
            continue
        labels = by_name[name].labels(item) if name in by_name else []
        out.extend((f"{name}={label}", name, weight / len(labels)) for label in labels)
    return out


def _value_counts(field, items) -> dict[str, int]:
    counts: Counter = Counter()
    for item in items:
        counts.update(field.labels(int(item)) or ["(none)"])
    return dict(counts.most_common())


def popularity(rec: Recommender, recommended: list[int]) -> dict:
    """Share of recommendations and of training interactions per item-popularity bucket."""
    data: Dataset = rec.data
    interactions = PopularityScorer(data, rec.split().train).scores.numpy()[1:]  # training events per item
    order = np.argsort(-interactions, kind="stable")  # most popular first
    bucket = np.empty(data.n_items, dtype=np.int64)
    start = 0
    for b, (_, edge) in enumerate(POPULARITY_BUCKETS):
        stop = max(start, math.ceil(edge * data.n_items))
        bucket[order[start:stop]] = b
        start = stop
    n = len(POPULARITY_BUCKETS)
    rec_counts = np.bincount(bucket[np.asarray(recommended, dtype=np.int64) - 1], minlength=n)
    inter_counts = np.bincount(bucket, weights=interactions, minlength=n)
    return {
        "labels": [label for label, _ in POPULARITY_BUCKETS],
        "recommended": (rec_counts / max(rec_counts.sum(), 1)).tolist(),
        "interactions": (inter_counts / max(inter_counts.sum(), 1)).tolist(),
    }
