"""Counterfactuals: the smallest set of history items whose removal drops an item out of the top-K.

Greedy by attribution: remove the most positive items first, one more at each step; every
step is verified by re-ranking the whole catalog with the shortened history (all steps
in one batch). Items the user already has stay excluded from the ranking.

An item can leave the top-K for two reasons, and a counterfactual says which: its own score
fell below the old cut-off (the score of the first item outside the top-K before the
removal: the removed items carried it), or its own score stayed above that cut-off and other
items rose past it (the removed items were holding those down; they did not carry this one).
Only the first is a reason to quote in a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recscope.explain.base import NOT_FOUND, OTHERS_ROSE, OWN_SCORE_FELL
from recscope.explain.variants import variant_scores
from recscope.ranking import cutoff, hide, rank, top_k


@torch.no_grad()
def removal_ranks(
    model, table, history: torch.Tensor, owned: torch.Tensor, masks: torch.Tensor, events: torch.Tensor | None = None
) -> torch.Tensor:
    """Scores (V, n_items + 1) of the catalog for each variant (V, T) keep-mask; owned and padding hidden."""
    return hide(variant_scores(model, table, history, masks, events=events), owned=owned)


@dataclass
class Removal:
    """What :func:`smallest_removal` found; ``positions`` is None when no greedy prefix works."""

    positions: list[int] | None  # into the history, most attributed first
    new_rank: int | None  # the item's 1-based rank once they are removed (or after the longest prefix tried)
    entered: int | None  # the item that enters the top-K in its place
    kind: str  # OWN_SCORE_FELL, OTHERS_ROSE or NOT_FOUND
    score_before: float  # the item's own score with the whole history
    score_after: float | None  # ... without ``positions``
    cutoff: float | None  # the score of the first item outside the top-K before any removal


@torch.no_grad()
def smallest_removal(
    model,
    table,
    history: torch.Tensor,
    owned: torch.Tensor,
    target: int,
    weights: torch.Tensor,
    k: int,
    max_steps: int = 10,
    events: torch.Tensor | None = None,
) -> Removal:
    """The smallest greedy prefix (by ``weights``) of history items whose removal drops ``target``
    out of the top-``k``, verified by re-ranking, and why it drops: whether its own score fell
    below the old cut-off (the removed items carried it) or other items rose past it. A prefix
    that carried the item is preferred to a shorter one after which others merely rose past it:
    only the first is a reason."""
    T = len(history)
    order = [int(p) for p in torch.argsort(weights, descending=True) if weights[p] > 0][:max_steps]
    order = order[: T - 1]  # an empty history cannot be scored
    masks = torch.ones(len(order) + 1, T, dtype=torch.bool)  # variant 0 keeps everything
    for step in range(len(order)):
        masks[step + 1 :, order[step]] = False  # variant m removes order[:m]
    scores = removal_ranks(model, table, history, owned, masks, events)  # (M + 1, N + 1)
    own = scores[:, target]
    ranks = rank(scores, torch.full((len(scores),), target))  # (M + 1,) 0-based
    old_cutoff = cutoff(scores[0], k)
    out = ranks[1:] >= k  # (M,) variant m + 1 drops the item out of the top-K
    fell = out & (own[1:] < old_cutoff) if old_cutoff is not None else torch.zeros_like(out)
    # The smallest removal that carried the item, else the smallest after which others rose past it.
    exits = torch.nonzero(fell) if fell.any() else torch.nonzero(out)
    if len(exits) == 0:
        last = int(ranks[-1]) + 1 if order else None
        return Removal(None, last, None, NOT_FOUND, float(own[0]), float(own[-1]) if order else None, old_cutoff)
    m = int(exits[0]) + 1
    before = set(top_k(scores[0], k).indices.tolist())
    entered = next((i for i in top_k(scores[m], k).indices.tolist() if i not in before), None)
    kind = OWN_SCORE_FELL if bool(fell[m - 1]) else OTHERS_ROSE
    return Removal(order[:m], int(ranks[m]) + 1, entered, kind, float(own[0]), float(own[m]), old_cutoff)
