"""Faithfulness, measured: does removing what a method calls important change the model's mind?

Over the top-K recommendations of N test users (history = everything before the test
item), per method:

- comprehensiveness (ERASER, AOPC over k = 1..5): mean score drop when the k most
  important history items are removed; higher is more faithful;
- sufficiency (AOPC): mean score drop when only those k items are kept; lower is better;
- the same two for k random items (the baseline a method must beat);
- top-K exit rate: how often removing the 3 most important items pushes the item out of
  the top-K (owned items stay excluded), against removing 3 random ones;
- Kendall tau against leave-one-out (occlusion), per explanation, averaged;
- on data with planted causes (the synthetic shop): over test events that have a single
  cause, how often the cause is the method's top-1 / in its top-3 for the test item;
- deletion and keep curves: the mean score drop after removing / keeping only the top
  1..5 items, per method and for random orders (the AOPCs are their means);
- milliseconds per explanation (the method's batched call over a user's top-K, divided by K),
  mean and p99.

Removal means the item is taken out of the sequence (later items move up), as a user
without that purchase would look, with its event label (:mod:`recscope.explain.variants`, as
the served explanations remove it); every score reads the history's event labels, as the served
list does, when the model reads them. The default method is the one with the best mean rank
over comprehensiveness, sufficiency, exit rate and (where present) planted hit@1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.stats import kendalltau

from recscope.data import split_of
from recscope.explain.api import METHODS, make_explainer
from recscope.explain.occlusion import OcclusionExplainer
from recscope.explain.variants import variant_hidden, variant_scores
from recscope.progress import track
from recscope.ranking import hide, rank, top_k

if TYPE_CHECKING:
    from recscope.recommend import Recommender

MAX_REMOVED = 5
EXIT_REMOVED = 3
RANDOM_DRAWS = 10  # random baselines average this many random orders per case (less noise)
CRITERIA = {"comprehensiveness": 1, "sufficiency": -1, "topk_exit_rate": 1, "planted_hit@1": 1}  # 1 = higher is better


@dataclass
class _Case:
    read: torch.Tensor  # (T,) the history the model reads
    owned: torch.Tensor  # items excluded from ranking
    targets: torch.Tensor  # (K,) recommended items
    full: torch.Tensor  # (K,) their scores
    loo: torch.Tensor  # (K, T) leave-one-out weights
    random_orders: torch.Tensor  # (R, T) random permutations of positions (shared by all methods)
    cause: int | None = None  # planted cause position in `read`, for the test item
    events: torch.Tensor | None = None  # (T,) the event labels of `read` (None: the model reads none)
    test_item: int | None = None


def evaluate_faithfulness(
    rec: Recommender, users: int = 200, methods: list[str] | None = None, k: int = 10, seed: int = 0
) -> dict:
    """Measure every method on the same cases; returns ``{"default": name, "methods": {...}, ...}``."""
    methods = list(methods or METHODS)
    model, table = rec.model, rec.snapshot.table
    cases = faithfulness_cases(rec, users, k, seed)
    occlusion = OcclusionExplainer(model)
    random = _random_baselines(model, table, cases, k)
    results = {}
    for name in methods:
        explainer = occlusion if name == "occlusion" else make_explainer(model, name)
        results[name] = _measure(explainer, model, table, cases, k, random)
    return {
        "default": choose_default(results),
        "users": len(cases),
        "k": k,
        "data": rec.data.name,
        "methods": results,
    }


def faithfulness_cases(rec: Recommender, users: int, k: int = 10, seed: int = 0, min_len: int = 2) -> list[_Case]:
    """``users`` random test users with at least ``min_len`` history items (2: removing one leaves
    one), each with their top-``k``, leave-one-out weights and random removal orders."""
    model, data = rec.model, rec.data
    table = rec.snapshot.table
    split = split_of(data, rec.config)
    rng = np.random.default_rng(seed)
    test = split.test
    eligible = np.flatnonzero(test.hist_len >= max(min_len, 2))
    chosen = np.sort(rng.choice(eligible, size=min(users, len(eligible)), replace=False))
    causes = data.extras.get("cause")
    occlusion = OcclusionExplainer(model)

    cases = []
    for c in track(chosen, "explain-eval: scoring test users"):
        u, n = int(test.users[c]), int(test.hist_len[c])
        history = data.sequence(u)[:n]
        read = torch.from_numpy(history[-model.cfg.max_len :].astype(np.int64))
        events = _labels(rec, u, n, len(read))
        owned = torch.from_numpy(np.unique(history))
        with torch.no_grad():
            scores = hide(model.score(read[None, :], table, None if events is None else events[None])[0], owned=owned)
        targets = top_k(scores, k).indices
        orders = np.stack([rng.permutation(len(read)) for _ in range(RANDOM_DRAWS)])  # (R, T)
        loo = occlusion.attribute(read, targets, events)
        case = _Case(read, owned, targets, scores[targets], loo, torch.from_numpy(orders), events=events)
        if causes is not None:
            cause = int(causes[data.offsets[u] + n])
            offset = n - len(read)
            if cause >= offset:
                case.cause, case.test_item = cause - offset, int(test.targets[c])
        cases.append(case)
    return cases


def _labels(rec: Recommender, user: int, n: int, length: int) -> torch.Tensor | None:
    """(length,) the event labels of the last ``length`` of the user's first ``n`` events, as the
    served path reads them (``Recommender.event_codes``); None when the model reads none."""
    if rec.inputs is None:
        return None
    start = int(rec.data.offsets[user])
    return torch.from_numpy(rec.inputs.codes[start + n - length : start + n].astype(np.int64))


def _measure(explainer, model, table, cases: list[_Case], k: int, random: tuple[float, float, float]) -> dict:
    comp, suff, exit_, taus, ms, hits1, hits3 = [], [], [], [], [], [], []
    curves = _Curves()
    for case in track(cases, f"explain-eval: {explainer.name}"):
        tic = time.perf_counter()
        weights = explainer.attribute(case.read, case.targets, case.events)  # (K, T)
        ms.append((time.perf_counter() - tic) * 1000 / len(case.targets))
        T = len(case.read)
        if T > 1:
            order = torch.argsort(weights, dim=1, descending=True, stable=True)  # (K, T) most important first
            c, s = _aopc(model, table, case, order)
            comp.append(np.mean(c)), suff.append(np.mean(s))
            curves.add(c, s)
            exit_.append((T, _exit_rate(model, table, case, order[:, : min(EXIT_REMOVED, T - 1)], k)))
            for j in range(len(case.targets)):
                tau = kendalltau(weights[j].numpy(), case.loo[j].numpy()).statistic
                if not np.isnan(tau):
                    taus.append(tau)
        if case.cause is not None:
            w = explainer.attribute(case.read, torch.tensor([case.test_item]), case.events)[0]
            top = torch.argsort(w, descending=True, stable=True)[:3].tolist()
            hits1.append(top[0] == case.cause)
            hits3.append(case.cause in top)
    comp_r, suff_r, exit_r, curves_r = random
    out = {
        "comprehensiveness": _mean(comp),
        "comprehensiveness_random": comp_r,
        "sufficiency": _mean(suff),
        "sufficiency_random": suff_r,
        "topk_exit_rate": _mean([e for _, e in exit_]),
        "topk_exit_rate_random": _mean([e for _, e in exit_r]),
        "topk_exit_rate_by_length": _by_length(exit_),
        "topk_exit_rate_random_by_length": _by_length(exit_r),
        "kendall_tau_loo": _mean(taus),
        "ms_per_explanation": _mean(ms),
        "ms_p99": float(np.percentile(ms, 99)) if ms else float("nan"),
        "target_dependent": explainer.target_dependent,
        "deletion_curve": curves.deletion(),
        "deletion_curve_random": curves_r.deletion(),
        "keep_curve": curves.keep(),
        "keep_curve_random": curves_r.keep(),
    }
    if hits1:
        out["planted_hit@1"] = float(np.mean(hits1))
        out["planted_hit@3"] = float(np.mean(hits3))
        out["planted_cases"] = len(hits1)
    return out


def _random_baselines(model, table, cases: list[_Case], k: int) -> tuple[float, float, list, _Curves]:
    """Comprehensiveness, sufficiency, (history length, exit rate) per case and curves of random
    orders: the same for every method."""
    comp, suff, exit_ = [], [], []
    curves = _Curves()
    for case in cases:
        T = len(case.read)
        if T < 2:
            continue
        exits = []
        for order in case.random_orders:
            order = order[None, :].expand(len(case.targets), -1)
            c, s = _aopc(model, table, case, order)
            comp.append(np.mean(c)), suff.append(np.mean(s))
            curves.add(c, s)
            exits.append(_exit_rate(model, table, case, order[:, : min(EXIT_REMOVED, T - 1)], k))
        exit_.append((T, _mean(exits)))
    return _mean(comp), _mean(suff), exit_, curves


class _Curves:
    """Mean score drop per number of items removed (deletion) / kept (keep), 1..MAX_REMOVED,
    each point averaged over the cases long enough to have it."""

    def __init__(self):
        self._remove = [[] for _ in range(MAX_REMOVED)]
        self._keep = [[] for _ in range(MAX_REMOVED)]

    def add(self, remove: list[float], keep: list[float]) -> None:
        for i, (r, k) in enumerate(zip(remove, keep, strict=True)):
            self._remove[i].append(r), self._keep[i].append(k)

    def deletion(self) -> list[float]:
        return [_mean(v) for v in self._remove if v]

    def keep(self) -> list[float]:
        return [_mean(v) for v in self._keep if v]


@torch.no_grad()
def _aopc(model, table, case: _Case, order: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per size 1..5 (at most T - 1), the mean score drop over targets when removing / keeping
    only the top items; their means are the case's comprehensiveness and sufficiency (AOPC)."""
    K, T = order.shape
    sizes = range(1, min(MAX_REMOVED, T - 1) + 1)
    remove, keep = [], []
    for size in sizes:
        top = torch.zeros(K, T, dtype=torch.bool).scatter(1, order[:, :size], True)  # (K, T) important
        remove.append(~top)  # keep-masks
        keep.append(top)
    masks = torch.cat(remove + keep)  # (2 * S * K, T)
    targets = case.targets.repeat(2 * len(sizes))
    hidden = variant_hidden(model, table, case.read, masks, case.events)  # (2 * S * K, C)
    scores = model.predict_paired(hidden, table[targets]).view(2, len(sizes), K)
    drops = (case.full[None, None, :] - scores).mean(-1)  # (2, S): mean over targets, per size
    return drops[0].tolist(), drops[1].tolist()


@torch.no_grad()
def _exit_rate(model, table, case: _Case, removed: torch.Tensor, k: int) -> float:
    K, T = len(case.targets), len(case.read)
    masks = torch.ones(K, T, dtype=torch.bool).scatter(1, removed, False)
    scores = variant_scores(model, table, case.read, masks, events=case.events)  # (K, N + 1): row j for target j
    ranks = rank(scores, case.targets, owned=case.owned)  # (K,)
    return float((ranks >= k).float().mean())


LENGTHS = ((2, 4), (5, 9), (10, 19), (20, None))  # history-length buckets of the exit rate


def _by_length(pairs: list[tuple[int, float]]) -> dict[str, float]:
    """Mean exit rate per history-length bucket: removing 3 of 4 items is not removing 3 of 40."""
    out = {}
    for low, high in LENGTHS:
        values = [e for T, e in pairs if T >= low and (high is None or T <= high)]
        if values:
            out[f"{low}-{high}" if high else f"{low}+"] = _mean(values)
    return out


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def choose_default(results: dict[str, dict]) -> str:
    """The method with the best mean rank over the criteria (target-dependent methods only,
    since only they can say why one item and not another)."""
    names = [n for n, r in results.items() if r["target_dependent"]] or list(results)
    ranks = {n: [] for n in names}
    for criterion, sign in CRITERIA.items():
        values = {n: results[n].get(criterion) for n in names}
        if any(v is None or np.isnan(v) for v in values.values()):
            continue
        ordered = sorted(names, key=lambda n: -sign * values[n])
        for position, n in enumerate(ordered):
            ranks[n].append(position)
    return min(names, key=lambda n: (np.mean(ranks[n]) if ranks[n] else 0.0, names.index(n)))


def evaluate_word_faithfulness(rec: Recommender, users: int = 30, k: int = 3, seed: int = 0) -> dict | None:
    """Word attributions (:mod:`recscope.explain.words`), measured by deletion: over the top-``k``
    items text drives for ``users`` test users (history = everything before the test item), the
    mean score drop when a title's n heaviest words are taken out, against n random words, per
    side (the candidate's own title, the history titles) and n. None when the model reads no text."""
    from recscope.explain.words import DELETED, deletion, run_encoder

    if not rec.model.cfg.text_dim:
        return None
    data, model = rec.data, rec.model
    split = split_of(data, rec.config)
    rng = np.random.default_rng(seed)
    test = split.test
    eligible = np.flatnonzero(test.hist_len >= 1)
    chosen = np.sort(rng.choice(eligible, size=min(users, len(eligible)), replace=False))
    encode = run_encoder(rec.config.features)
    table = rec.snapshot.table
    rows, explained, ms = [], 0, []
    for c in track(chosen, "explain-eval: words"):
        u, n = int(test.users[c]), int(test.hist_len[c])
        history = data.sequence(u)[:n]
        ids = [data.item_ids[i] for i in history]
        tic = time.perf_counter()
        explanations = rec.explain(history=ids, top=k, k=k, counterfactual=False, words=True)
        with_words = [e for e in explanations if e.words is not None]
        if with_words:
            ms.append((time.perf_counter() - tic) * 1000 / len(explanations))
        explained += len(with_words)
        read = torch.from_numpy(history[-model.cfg.max_len :].astype(np.int64))
        targets = [data.item_index(e.item_id) for e in explanations]
        # the explanations read an ad-hoc history (no event labels): so does the deletion
        rows += deletion(model, table, data, read, n - len(read), targets, explanations, rng, encode)
    out = {"users": len(chosen), "k": k, "explained": explained, "ms_per_explanation": _mean(ms)}
    for side in ("candidate", "history"):
        mine = [r for r in rows if r[0] == side]
        out[side] = {
            str(size): {
                "top": _mean([r[2] for r in mine if r[1] == size]),
                "random": _mean([r[3] for r in mine if r[1] == size]),
                "titles": sum(r[1] == size for r in mine),
            }
            for size in DELETED
        }
    return out
