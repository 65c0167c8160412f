"""Counterfactuals: the smallest set of history items whose removal drops an item out of the top-K.

Greedy by attribution: remove the most positive items first, one more at each step; every
step is verified by re-ranking the whole catalog with the shortened history (all steps
in one batch). Items the user already has stay excluded from the ranking.
"""

from __future__ import annotations

import torch

from recscope.explain.occlusion import without


@torch.no_grad()
def removal_ranks(model, table, history: torch.Tensor, owned: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Scores (V, n_items + 1) of the catalog for each variant (V, T) keep-mask; owned and padding -inf."""
    hidden = model(without(history, masks)).hidden[:, -1]  # (V, C)
    scores = hidden @ table.T
    scores[:, owned] = float("-inf")
    scores[:, 0] = float("-inf")
    return scores


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
):
    """Positions (into ``history``) to remove, the item's new 1-based rank, the item that enters
    the top-K in its place; ``None`` positions if no greedy prefix of up to ``max_steps`` works."""
    order = [int(p) for p in torch.argsort(weights, descending=True) if weights[p] > 0][:max_steps]
    if not order or len(order) >= len(history):
        order = order[: len(history) - 1]
    if not order:
        return None, None, None
    T = len(history)
    masks = torch.ones(len(order), T, dtype=torch.bool)
    for step in range(len(order)):
        masks[step:, order[step]] = False  # variant m removes order[:m + 1]
    scores = removal_ranks(model, table, history, owned, masks)  # (M, N + 1)
    ranks = (scores > scores[:, target : target + 1]).sum(1)  # 0-based
    dropped = torch.nonzero(ranks >= k)
    if len(dropped) == 0:
        return None, int(ranks[-1]) + 1, None
    m = int(dropped[0])
    top = torch.topk(scores[m], k).indices.tolist()
    base = removal_ranks(model, table, history, owned, torch.ones(1, T, dtype=torch.bool))[0]
    before = set(torch.topk(base, k).indices.tolist())
    entered = next((i for i in top if i not in before), None)
    return order[: m + 1], int(ranks[m]) + 1, entered
