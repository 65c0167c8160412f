"""The merchant's view: what drives recommendations over many users, and what gets recommended.

    view = global_view(rec, users=rec.data.user_ids[:500], k=10)                 # the run's default method
    view = global_view(rec, users=rec.data.user_ids[:500], k=10, method="occlusion")

Each user's whole history is read as it stands now, and the attribute values behind every
item of their top-``k`` are weighed by the explanation method: by default the one the run's
faithfulness measurements chose (``Recommender.default_method``, what ``recscope explain-eval``
recorded), so the view a merchant reads rests on the method that measured most faithful, not
on the cheapest one. The history side is a game whose players are attribute values
(:func:`value_game`): ``brand=Acme`` is the brand part of every history token whose brand is
Acme, ``id`` and ``text`` the id and text parts of all of them; the method explains that game by
its own rule (``Explainer.attribute_fields``: Shapley values, leave-one-value-out, gradient x
input or integrated gradients on the values' presence; attention and rollout have no notion of
fields and use Shapley values, and the view says so). The candidate's side is exact whatever
the method (:func:`recscope.explain.fields.candidate_fields`). One batched game per user.

The view is a plain JSON-serialisable dict; the figures (:mod:`recscope.viz.figures`) and the
HTML report render it::

    {"users": n, "k": k,
     "method": name, "fields_method": the method the values' weights come from,
     "default_method": the run's default,
     "drivers": [{"label": "brand=Acme", "field": "brand", "weight": mean push per
                  recommendation, "share": its part of all the push (|weights| sum to 1),
                  "count": recommendations it took part in}, ...],
     "recommended": {field: {value: recommendations}},   # every catalog field
     "catalog": {field: {value: catalog items}},
     "coverage": {"recommended_items", "catalog_items", "share"},
     "popularity": {"labels": [...], "recommended": [shares], "interactions": [shares]}}

A driver's weight sums the value's attribution on the history side (the value in the
user's history pushed the item up) and on the candidate side (the recommended item's own
value pushed its score up), averaged over every recommendation in the view; its share is its
|weight| over the sum of every driver's |weight|, the plain figure a merchant reads ("12% of
what pushed the recommendations"). Its count is the number of recommendations in which the
value took part, on either side or both, so it never exceeds the number of recommendations.
A multi-valued cell's part is shared equally by its values, on both sides.
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
from recscope.explain.api import make_explainer
from recscope.explain.fields import WHOLE_ITEM, FieldGame, candidate_fields
from recscope.model import SeqRec
from recscope.ranking import top_k

if TYPE_CHECKING:
    from recscope.recommend import Recommender

# items ranked by interactions, most popular first: (label, upper edge as a share of items)
POPULARITY_BUCKETS = (("top 1%", 0.01), ("1-5%", 0.05), ("5-20%", 0.20), ("20-50%", 0.50), ("bottom 50%", 1.0))
WHOLE_ITEM_FIELDS = WHOLE_ITEM  # attributions that belong to the item, not to a value
NO_VALUE = "(none)"  # the value of a cell that holds none (its part is still part of the token)


def global_view(rec: Recommender, users: list[str], k: int = 10, method: str | None = None) -> dict:
    """Attribute attributions of the top-``k`` of every user in ``users`` (own ids), aggregated,
    by ``method`` (default: the run's, ``rec.default_method()``)."""
    if not users:
        raise RunError("no users to aggregate over", fix="pass at least one user id")
    data: Dataset = rec.data
    default = rec.default_method()
    explainer = make_explainer(rec.model, method or default)  # an unknown method is named with the known ones
    totals: dict[str, float] = defaultdict(float)
    counts: Counter = Counter()
    field_of: dict[str, str] = {}
    recommended: list[int] = []
    for user in users:
        history = rec.resolve(user=user)
        events = rec.event_codes(history)
        scores = rec.scores(history.indices, events=events)
        top = top_k(scores, k).indices
        read = rec.tensor(history.indices)[0]  # (T,)
        labels = None if events is None else rec.tensor(events)[0]
        game, players = value_game(rec.model, explainer.table, data, read, labels)
        hist_weights = explainer.attribute_fields(game, top)  # (K, P)
        cand_weights, names = candidate_fields(rec.model, read, top, labels)  # (K, F)
        for j, item in enumerate(top.tolist()):
            recommended.append(item)
            merged: dict[str, float] = defaultdict(float)  # one entry per value: both sides summed
            for label, field, weight in zip(players, game.fields, hist_weights[j].tolist(), strict=True):
                merged[label] += weight
                field_of[label] = field
            for label, field, weight in _value_weights(data, item, cand_weights[j], names):
                merged[label] += weight
                field_of[label] = field
            for label, weight in merged.items():
                totals[label] += weight
                counts[label] += weight != 0.0
    n_recs = max(len(recommended), 1)
    push = sum(abs(total) for total in totals.values()) or 1.0
    drivers = [
        {
            "label": label,
            "field": field_of[label],
            "weight": total / n_recs,
            "share": abs(total) / push,
            "count": int(counts[label]),
        }
        for label, total in totals.items()
    ]
    drivers.sort(key=lambda d: -abs(d["weight"]))
    return {
        "users": len(users),
        "k": k,
        "method": explainer.name,
        "fields_method": explainer.fields_method or explainer.name,
        "default_method": default,
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


@torch.no_grad()
def value_game(
    model: SeqRec, table: torch.Tensor, data: Dataset, history: torch.Tensor, events: torch.Tensor | None = None
) -> tuple[FieldGame, list[str]]:
    """The field game of ``history`` (T,) with one player per attribute value it holds, and their
    labels: player ``brand=Acme`` is the brand part of every token whose brand is Acme (a
    multi-valued cell's part shared equally by its values; a cell with none is ``brand=(none)``),
    players ``id`` and ``text`` the id and text parts of every token. The parts sum to the tokens,
    so the full coalition is the history as the model reads it."""
    parts = model.field_embeddings(history)  # name -> (T, C)
    by_name = {f.name: f for f in data.fields}
    T = len(history)
    labels: list[str] = []
    fields: list[str] = []
    pieces: list[torch.Tensor] = []  # (T, C) each
    index: dict[str, int] = {}
    for name, part in parts.items():
        if name in WHOLE_ITEM_FIELDS or name not in by_name:
            index[name] = len(pieces)
            labels.append(name), fields.append(name), pieces.append(part)
            continue
        for t, item in enumerate(history.tolist()):
            values = by_name[name].labels(item) or [NO_VALUE]
            for value in values:
                label = f"{name}={value}"
                if label not in index:
                    index[label] = len(pieces)
                    labels.append(label), fields.append(name), pieces.append(torch.zeros_like(part))
                pieces[index[label]][t] += part[t] / len(values)
    stacked = torch.stack(pieces) if pieces else torch.zeros(0, T, table.shape[1])  # (P, T, C)
    return FieldGame(model, table, history, fields, None, stacked, events), labels


def _value_weights(data: Dataset, item: int, weights: torch.Tensor, names: list[str]) -> list[tuple[str, str, float]]:
    """(label, field, weight) per attribute value of one item's token: ``weights`` (F,) per model
    field in ``names``; a multi-valued cell's weight is shared equally by its values."""
    by_name = {f.name: f for f in data.fields}
    out = []
    for name, weight in zip(names, weights.tolist(), strict=True):
        if name in WHOLE_ITEM_FIELDS or name not in by_name:
            out.append((name, name, weight))
            continue
        labels = by_name[name].labels(item) or [NO_VALUE]
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
