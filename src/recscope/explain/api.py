"""From a history and recommended items to full :class:`Explanation` objects.

One call explains all K items of a history: the chosen method's attributions come from
one batched pass, the attribute attributions from one more, each counterfactual from
one batched re-ranking.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from recscope.data import Dataset
from recscope.errors import RunError
from recscope.explain.attention import AttentionExplainer, RolloutExplainer, attention_maps
from recscope.explain.base import Counterfactual, Explainer, Explanation, HistoryWeight
from recscope.explain.counterfactual import smallest_removal
from recscope.explain.gradients import (
    GradInputExplainer,
    IntegratedGradientsExplainer,
    field_attributions,
)
from recscope.explain.occlusion import OcclusionExplainer
from recscope.explain.shapley import ShapleyExplainer
from recscope.explain.text import cited, sentence

METHODS: dict[str, type[Explainer]] = {
    cls.name: cls
    for cls in (
        OcclusionExplainer,
        ShapleyExplainer,
        IntegratedGradientsExplainer,
        GradInputExplainer,
        RolloutExplainer,
        AttentionExplainer,
    )
}
# used until `recscope explain-eval` has measured a run; it chose shapley on both measured data sets
FALLBACK_DEFAULT = "shapley"


def make_explainer(model, method: str) -> Explainer:
    if method not in METHODS:
        raise RunError(f"unknown explanation method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    return METHODS[method](model)


def explain_items(
    explainer: Explainer,
    data: Dataset,
    history: np.ndarray,
    targets: list[int],
    *,
    scores: list[float],
    ranks: list[int],
    user: str | None = None,
    k: int = 10,
    counterfactual: bool = True,
    attentions: bool = False,
    cutoff: float | None = None,
) -> list[Explanation]:
    """Explain ``targets`` (dense item indices) recommended for ``history`` (the whole history).

    ``cutoff`` is the score of the first item outside the top-K: sentences only name reasons
    that are large next to an item's lead over it.
    """
    tic = time.perf_counter()
    model = explainer.model
    read = torch.from_numpy(np.asarray(history[-model.cfg.max_len :], dtype=np.int64))  # what the model reads
    offset = len(history) - len(read)
    target_t = torch.tensor(targets, dtype=torch.long)
    weights = explainer.attribute(read, target_t)  # (K, T)
    hist_fields, cand_fields, names = field_attributions(explainer, read, target_t)
    maps = attention_maps(model, read)[:, :, -1, :].tolist() if attentions else None
    owned = torch.from_numpy(np.unique(np.asarray(history, dtype=np.int64)))
    explanations = []
    for j, target in enumerate(targets):
        entries = [
            HistoryWeight(offset + t, data.item_ids[i], data.title(i), float(weights[j, t]))
            for t, i in enumerate(read.tolist())
        ]
        expl = Explanation(
            user=user,
            item_id=data.item_ids[target],
            title=data.title(target),
            score=float(scores[j]),
            rank=int(ranks[j]),
            method=explainer.name,
            target_dependent=explainer.target_dependent,
            history=entries,
            attributes_history=history_attributes(data, read, hist_fields[j], names),
            attributes_candidate=_candidate_attributes(data, target, cand_fields[j], names),
            attentions=maps,
        )
        if counterfactual:
            expl.counterfactual = _counterfactual(explainer, read, owned, target, weights[j], k, entries, data)
        margin = scores[j] - cutoff if cutoff is not None else 0.0
        reasons = [int(read[h.position - offset]) for h in cited(expl, margin)]
        expl.sentence = sentence(expl, _shared(data, reasons, target), margin)
        explanations.append(expl)
    elapsed = (time.perf_counter() - tic) * 1000 / max(len(targets), 1)
    for expl in explanations:
        expl.ms = round(elapsed, 3)
    return explanations


def _counterfactual(explainer, read, owned, target, weights, k, entries, data) -> Counterfactual:
    positions, new_rank, entered = smallest_removal(explainer.model, explainer.table, read, owned, target, weights, k)
    if positions is None:
        return Counterfactual(removed=[], new_rank=new_rank, k=k, found=False)
    return Counterfactual(
        removed=[entries[p] for p in positions],
        new_rank=new_rank,
        k=k,
        replaced_by=data.item_ids[entered] if entered is not None else None,
    )


def _labels(data: Dataset, item: int, names: list[str]) -> dict[str, list[str]]:
    """field name -> value labels of one item, in the order of the model's fields."""
    by_name = {f.name: f for f in data.fields}
    return {n: (by_name[n].labels(item) if n in by_name else []) for n in names}


def history_attributes(data: Dataset, read: torch.Tensor, fields: torch.Tensor, names: list[str]) -> dict[str, float]:
    """(T, F) per-position field weights -> "field=value" totals over the history."""
    totals: dict[str, float] = {}
    for t, item in enumerate(read.tolist()):
        labels = _labels(data, item, names)
        for f, name in enumerate(names):
            w = float(fields[t, f])
            if name == "id" or name == "text":
                totals[name] = totals.get(name, 0.0) + w
                continue
            values = labels[name]
            for v in values:  # a multi-valued cell shares its weight equally
                key = f"{name}={v}"
                totals[key] = totals.get(key, 0.0) + w / len(values)
    return dict(sorted(totals.items(), key=lambda kv: -abs(kv[1])))


def _candidate_attributes(data: Dataset, item: int, fields: torch.Tensor, names: list[str]) -> dict[str, float]:
    labels = _labels(data, item, names)
    out: dict[str, float] = {}
    for f, name in enumerate(names):
        values = labels.get(name) or []
        key = f"{name}={', '.join(values)}" if name not in ("id", "text") and values else name
        out[key] = float(fields[f])
    return dict(sorted(out.items(), key=lambda kv: -abs(kv[1])))


def _shared(data: Dataset, items: list, target: int) -> dict[str, list[str]]:
    """Categorical values (brand, category, ...) that all cited items share with the candidate."""
    if not items:
        return {}
    shared = {}
    for f in data.fields:
        if f.kind == "numeric":
            continue
        common = set(f.labels(target))
        for i in items:
            common &= set(f.labels(int(i)))
        if common:
            shared[f.name] = sorted(common)
    return shared
