"""From a history and recommended items to full :class:`Explanation` objects.

One call explains all K items of a history: the chosen method's attributions come from
one batched pass, the attribute attributions (by the same method, see
:mod:`recscope.explain.fields`) from one more, each counterfactual from one batched
re-ranking, and the check that the items a sentence names really carry the score from one
more pass.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from recscope.data import Dataset
from recscope.errors import RunError
from recscope.explain.attention import AttentionExplainer, RolloutExplainer, attention_maps
from recscope.explain.base import RECOMMENDED, Counterfactual, Explainer, Explanation, HistoryWeight
from recscope.explain.counterfactual import smallest_removal
from recscope.explain.fields import WHOLE_ITEM, candidate_fields, field_game
from recscope.explain.gradients import GradInputExplainer, IntegratedGradientsExplainer
from recscope.explain.occlusion import OcclusionExplainer
from recscope.explain.shapley import ShapleyExplainer
from recscope.explain.text import cited, confirmed, sentence
from recscope.explain.variants import Rivals, variant_hidden
from recscope.explain.words import Encode, add_words
from recscope.histories import DISMISS
from recscope.ranking import Ranking

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
# How a sentence says what the user did with a cited item: a rating run's history is what they rated.
VERBS = {"rating": "rated"}


def make_explainer(model, method: str, table: torch.Tensor | None = None) -> Explainer:
    """The explainer of ``method`` over ``model``; ``table``: its item table, when held already."""
    if method not in METHODS:
        raise RunError(f"unknown explanation method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    return METHODS[method](model, table)


def explain_items(
    explainer: Explainer,
    data: Dataset,
    history: np.ndarray,
    targets: list[int],
    *,
    scores: list[float | None],
    ranks: list[int | None],
    user: str | None = None,
    k: int = 10,
    counterfactual: bool = True,
    attentions: bool = False,
    cutoff: float | None = None,
    statuses: list[str] | None = None,
    candidates: int | None = None,
    hidden: list[int] = (),
    events: np.ndarray | None = None,
    encode: Encode | None = None,
    ranking: Ranking | None = None,
    dismissals: np.ndarray | None = None,
) -> list[Explanation]:
    """Explain ``targets`` (dense item indices) for ``history`` (the whole history).

    ``cutoff`` is the score of the first item outside the top-K: sentences only name reasons
    that are large next to an item's lead over it. ``statuses`` (default: all RECOMMENDED)
    say what each target is; only a recommended item gets a counterfactual, whose re-rankings
    hide the history and ``hidden`` (e.g. items the user dismissed), as the served list does.
    ``events`` are the history's event labels (aligned with it; None: none known).
    ``encode`` (texts -> vectors, the run's text encoder) asks for word attributions
    (:mod:`recscope.explain.words`) of the items text drives, when the model reads text.
    ``ranking``: the history's ranked list the targets come from (its hidden items the history
    and ``hidden``), which counterfactuals rank against; None: ranked here when one is asked for.
    ``dismissals`` (aligned with ``history``, bool): the positions that are the user's dismissals
    (``History.dismissals``), labelled so in the history entries and the sentence.
    """
    tic = time.perf_counter()
    model = explainer.model
    read = torch.from_numpy(np.asarray(history[-model.cfg.max_len :], dtype=np.int64))  # what the model reads
    offset = len(history) - len(read)
    labels = None if events is None else torch.from_numpy(np.asarray(events[-len(read) :], dtype=np.int64))
    target_t = torch.tensor(targets, dtype=torch.long)
    statuses = statuses or [RECOMMENDED] * len(targets)
    kinds = [None] * len(read) if dismissals is None else [DISMISS if d else None for d in dismissals[offset:]]
    weights = explainer.attribute(read, target_t, labels)  # (K, T)
    game = field_game(model, explainer.table, read, events=labels)
    field_weights = explainer.attribute_fields(game, target_t)  # (K, P)
    cand_fields, names = candidate_fields(model, read, target_t, labels)  # (K, F)
    maps = attention_maps(model, read, labels)[:, :, -1, :].tolist() if attentions else None
    owned = torch.from_numpy(
        np.unique(np.concatenate([np.asarray(history, dtype=np.int64), np.asarray(hidden, dtype=np.int64)]))
    )
    rivals = None
    if counterfactual and RECOMMENDED in statuses:  # one ranking of the whole history for every item's steps
        origin = variant_hidden(model, explainer.table, read, torch.ones(1, len(read), dtype=torch.bool), labels)
        if ranking is None:
            ranking = Ranking.of(model.predict_many(origin, explainer.table)[0], owned=owned)
        rivals = Rivals(model, explainer.table, ranking, origin[0], explainer.norms)
    explanations = []
    for j, target in enumerate(targets):
        entries = [
            HistoryWeight(offset + t, data.item_ids[i], data.title(i), float(weights[j, t]), kinds[t])
            for t, i in enumerate(read.tolist())
        ]
        expl = Explanation(
            user=user,
            item_id=data.item_ids[target],
            title=data.title(target),
            score=scores[j] if scores[j] is not None and math.isfinite(scores[j]) else None,
            rank=ranks[j],
            method=explainer.name,
            target_dependent=explainer.target_dependent,
            history=entries,
            attributes_history=_by_weight(game.fields, field_weights[j]),
            attributes_candidate=_candidate_attributes(data, target, cand_fields[j], names),
            attributes_method=explainer.fields_method or explainer.name,
            status=statuses[j],
            k=k,
            candidates=candidates,
            attentions=maps,
        )
        if counterfactual and expl.status == RECOMMENDED:
            expl.counterfactual = _counterfactual(
                explainer, read, owned, target, weights[j], k, entries, data, labels, rivals
            )
        explanations.append(expl)
    margins = [s - cutoff if s is not None and cutoff is not None else 0.0 for s in (e.score for e in explanations)]
    _cited_drops(explainer, read, offset, targets, explanations, margins, labels)
    if encode is not None and model.cfg.text_dim:
        add_words(model, explainer.table, data, read, offset, targets, explanations, encode, labels)
    verb = VERBS.get(model.cfg.head, "bought")
    for j, expl in enumerate(explanations):
        reasons = [int(read[h.position - offset]) for h in confirmed(expl, margins[j])]
        expl.sentence = sentence(expl, _shared(data, reasons, targets[j]), margins[j], verb=verb)
    elapsed = (time.perf_counter() - tic) * 1000 / max(len(targets), 1)
    for expl in explanations:
        expl.ms = round(elapsed, 3)
    return explanations


@torch.no_grad()
def _cited_drops(explainer, read, offset, targets, explanations, margins, events=None) -> None:
    """Set ``cited_drop`` of every recommended item whose sentence may name history items: its own
    score drop when they are taken out together (one batch for all items)."""
    rows, masks = [], []
    for j, expl in enumerate(explanations):
        items = cited(expl, margins[j]) if expl.status == RECOMMENDED and expl.target_dependent else []
        if items:
            mask = torch.ones(len(read), dtype=torch.bool)
            mask[[h.position - offset for h in items]] = False
            rows.append(j)
            masks.append(mask)
    if not rows:
        return
    masks = torch.cat([torch.ones(1, len(read), dtype=torch.bool), torch.stack(masks)])  # variant 0: all
    model = explainer.model
    hidden = variant_hidden(model, explainer.table, read, masks, events)  # (1 + R, C)
    own = explainer.table[torch.tensor([targets[j] for j in rows])]  # (R, C)
    drops = model.predict_paired(hidden[0].expand(len(own), -1), own) - model.predict_paired(hidden[1:], own)
    for j, drop in zip(rows, drops.tolist(), strict=True):
        explanations[j].cited_drop = drop


def _counterfactual(explainer, read, owned, target, weights, k, entries, data, events, rivals) -> Counterfactual:
    found = smallest_removal(
        explainer.model, explainer.table, read, owned, target, weights, k, events=events, rivals=rivals
    )
    return Counterfactual(
        removed=[entries[p] for p in found.positions or []],
        new_rank=found.new_rank,
        k=k,
        replaced_by=data.item_ids[found.entered] if found.entered is not None else None,
        found=found.positions is not None,
        kind=found.kind,
        score_before=found.score_before,
        score_after=found.score_after,
        cutoff=found.cutoff,
    )


def _by_weight(labels: list[str], weights: torch.Tensor) -> dict[str, float]:
    """(F,) field weights -> {field: weight}, largest |weight| first."""
    return dict(sorted(zip(labels, weights.tolist(), strict=True), key=lambda kv: -abs(kv[1])))


def _candidate_attributes(data: Dataset, item: int, fields: torch.Tensor, names: list[str]) -> dict[str, float]:
    by_name = {f.name: f for f in data.fields}
    out: dict[str, float] = {}
    for f, name in enumerate(names):
        values = by_name[name].labels(item) if name in by_name else []
        key = f"{name}={', '.join(values)}" if name not in WHOLE_ITEM and values else name
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
