"""Counterfactuals: the smallest set of history items whose removal drops an item out of the top-K.

Greedy by attribution: remove the most positive items first, one more at each step; a step is
verified by ranking the item against the whole catalog with the shortened history. Items the
user already has stay excluded from the ranking (as do the ones the served list hid).

An item can leave the top-K for two reasons, and a counterfactual says which: its own score
fell below the old cut-off (the score of the first item outside the top-K before the
removal: the removed items carried it), or its own score stayed above that cut-off and other
items rose past it (the removed items were holding those down; they did not carry this one).
Only the first is a reason to quote in a sentence.

Every step's hidden state and the item's own score come from one batched pass; a step's rank
is counted only when the answer needs it (the steps whose own score fell below the cut-off
first, then the others in order), and only among the items that can reach the item's score
(:class:`~recscope.explain.variants.Rivals`), with no sort: a step that moves the history's
hidden state little costs a pass over the list's scores and a product with the few rows that
can reach the item, not a product with the whole item table. The ranks, the cut-off and the
item that enters are those the whole catalog gives (:func:`recscope.ranking.rank`'s tie draws
included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recscope.explain.base import NOT_FOUND, OTHERS_ROSE, OWN_SCORE_FELL
from recscope.explain.variants import Field, Rivals, variant_hidden
from recscope.ranking import Ranking, tie_draws, tie_ranks


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
    rivals: Rivals | None = None,
) -> Removal:
    """The smallest greedy prefix (by ``weights``) of history items whose removal drops ``target``
    out of the top-``k``, verified by re-ranking, and why it drops: whether its own score fell
    below the old cut-off (the removed items carried it) or other items rose past it. A prefix
    that carried the item is preferred to a shorter one after which others merely rose past it:
    only the first is a reason. ``rivals``: the history's ranking to rank against (its hidden
    items ``owned``), shared by the items of one list; None: made from the whole history."""
    T = len(history)
    order = [int(p) for p in torch.argsort(weights, descending=True) if weights[p] > 0][:max_steps]
    order = order[: T - 1]  # an empty history cannot be scored
    masks = torch.ones(len(order) + 1, T, dtype=torch.bool)  # variant 0 keeps everything
    for step in range(len(order)):
        masks[step + 1 :, order[step]] = False  # variant m removes order[:m]
    hidden = variant_hidden(model, table, history, masks, events)  # (M + 1, C)
    own = model.predict_many(hidden, table[[target]])[:, 0]  # (M + 1,)
    if rivals is None:
        rivals = Rivals(model, table, Ranking.of(model.predict_many(hidden[:1], table)[0], owned=owned), hidden[0])
    old_cutoff = rivals.base.cutoff(k)
    draws = tie_draws(len(masks))  # one per variant, the draws rank() gives a batch of M + 1
    fields: dict[int, Field] = {}  # step -> what it scores for the item and the rivals that can reach it
    ranks: dict[int, int] = {}

    def rank_at(m: int) -> int:
        """The item's 0-based rank after removing order[:m] (counted once)."""
        if m not in ranks:
            fields[m] = rivals.field(hidden[m], target, float(own[m]))
            mine, higher, tied = fields[m].counts()
            ranks[m] = int(tie_ranks(higher, tied, mine, draws[m : m + 1])[0])
        return ranks[m]

    steps = range(1, len(masks))
    fell = [m for m in steps if old_cutoff is not None and float(own[m]) < old_cutoff]
    # The smallest removal that carried the item, else the smallest after which others rose past it.
    m, kind = next((m for m in fell if rank_at(m) >= k), None), OWN_SCORE_FELL
    if m is None:
        m, kind = next((m for m in steps if rank_at(m) >= k), None), OTHERS_ROSE
    if m is None:
        last = rank_at(len(order)) + 1 if order else None
        return Removal(None, last, None, NOT_FOUND, float(own[0]), float(own[-1]) if order else None, old_cutoff)
    before = set(rivals.base.top(k).indices.tolist())
    entered = next((i for i in fields[m].top(k).indices.tolist() if i not in before), None)
    return Removal(order[:m], rank_at(m) + 1, entered, kind, float(own[0]), float(own[m]), old_cutoff)
