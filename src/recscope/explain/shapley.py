"""Shapley values of the history items: exact for short histories, sampled for long ones.

``weights[k, t]`` is item ``t``'s marginal contribution to the score of ``targets[k]``,
averaged over every order in which the history could be assembled: what it adds given
the items before it. The weights of a history sum to
``score(full history) - score(empty history)`` (efficiency).

Leave-one-out misses credit that is shared: two headphones of the same brand each cover
for the other, so removing either alone barely moves the score while removing both does.
Shapley values split that shared credit between them, which is why they rank the items
whose joint removal matters most (comprehensiveness) better than leave-one-out.

"Absent" means taken out of the sequence, as everywhere in recscope (later items move up).

An explanation's cost is bounded whatever the history's length (and a live server's latency
with it). It scores at most BUDGET sub-histories, and its sampled sub-histories hold at most
POSITIONS item positions together: the model's work grows with the positions it reads, and the
prefixes of one order of n items hold n (n + 1) / 2 of them, so a count of sub-histories alone
let a 50-item history cost six times what a 20-item one does.

- 2^T <= BUDGET: every one of the 2^T sub-histories goes through the model in one batch; the
  Shapley formula is then exact, with no sampling noise (at most 2,304 positions, at T = 9).
- longer: as many random orders as both budgets allow, each with its T + 1 prefixes, between
  MIN_SAMPLES and SAMPLES (half of them the reverses of the other half, antithetic pairs,
  which cancels much of the noise); every prefix of every order in one batch.

The positions budget was chosen on the 4-tower Beauty run (docs/explanations.md): over 300
users' top-10s, comprehensiveness 3.288 against 3.302 with the sub-history budget alone and
the top-3 exit rate 0.898 against 0.902, at a third of the slowest explanations' time; histories
of 17 items and more, which alone it changes, lose 3.5% of their comprehensiveness.

Each distinct sub-history is scored once for all K targets. Captum's
ShapleyValueSampling computes the same estimate but runs one model pass per order and
target, an order of magnitude slower here; the tests check the two agree.
"""

from __future__ import annotations

import math

import torch

from recscope.explain.base import Explainer
from recscope.explain.variants import variant_scores

BUDGET = 512  # sub-histories one explanation scores at most: exact up to 9 items (2^9 = 512)
POSITIONS = 4000  # item positions the sampled orders' prefixes hold at most, together
SAMPLES = 32  # random orders for longer histories, at most (even numbers: antithetic pairs) ...
MIN_SAMPLES = 2  # ... and at least, past the budgets for the longest histories (one pair at 50 items)


class ShapleyExplainer(Explainer):
    name = "shapley"
    description = "Shapley values: each item's marginal contribution averaged over the orders of the history"

    @torch.no_grad()
    def attribute(
        self, history: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        def value(masks: torch.Tensor) -> torch.Tensor:
            return self.values(history, masks, targets, events)

        return shapley(value, len(history), len(targets), positions=POSITIONS)  # a sub-history costs its length

    def values(
        self, history: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(V, T) keep-masks -> (V, K) scores of the targets given each sub-history."""
        return variant_scores(self.model, self.table, history, masks, targets, events)

    def exact(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return exact_shapley(lambda masks: self.values(history, masks, targets), len(history), len(targets))

    def sampled(self, history: torch.Tensor, targets: torch.Tensor, samples: int = SAMPLES) -> torch.Tensor:
        return sampled_shapley(lambda masks: self.values(history, masks, targets), len(history), len(targets), samples)

    @torch.no_grad()
    def attribute_fields(self, game, targets: torch.Tensor) -> torch.Tensor:
        """(K, P) Shapley values of the history's attribute values (see :mod:`recscope.explain.fields`)."""
        return shapley(lambda masks: game.scores(masks, targets), game.n_players, len(targets))


def shapley(value, n: int, k: int, budget: int = BUDGET, positions: int | None = None) -> torch.Tensor:
    """Shapley values of ``n`` players for ``k`` targets from at most ``budget`` coalitions' values
    (see the module's docstring): exact when all 2^n fit, sampled orders beyond. ``positions``:
    where a coalition costs its size (a sub-history its length), the sizes the sampled
    coalitions may add up to (None: no such bound)."""
    if 2**n <= budget:
        return exact_shapley(value, n, k)
    return sampled_shapley(value, n, k, samples=orders_within(budget, n, positions))


def orders_within(budget: int, n: int, positions: int | None = None) -> int:
    """How many random orders of ``n`` players ``budget`` values (n + 1 prefixes an order) and
    ``positions`` (n (n + 1) / 2 an order) pay for: an even number between MIN_SAMPLES and SAMPLES."""
    orders = budget // (n + 1)
    if positions is not None:
        orders = min(orders, positions // (n * (n + 1) // 2))
    return max(MIN_SAMPLES, min(SAMPLES, orders // 2 * 2))


def exact_shapley(value, n: int, k: int) -> torch.Tensor:
    """``value`` maps (V, n) keep-masks to (V, k) scores -> (k, n) exact Shapley values."""
    subsets = torch.arange(2**n)
    bits = 1 << torch.arange(n)
    masks = (subsets[:, None] & bits) > 0  # (2^n, n): subset s keeps the players of its bits
    v = value(masks)  # (2^n, k)
    size = masks.sum(1)
    # weight of a coalition S of size s when player i joins it: s! (n - s - 1)! / n!
    weight = torch.tensor([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)])
    weights = torch.empty(k, n)
    for i in range(n):
        without_i = subsets[~masks[:, i]]  # coalitions that lack player i
        gain = v[without_i | (1 << i)] - v[without_i]  # (2^(n-1), k)
        weights[:, i] = (weight[size[without_i]][:, None] * gain).sum(0)
    return weights


def sampled_shapley(value, n: int, k: int, samples: int = SAMPLES) -> torch.Tensor:
    """The same from ``samples`` random orders (antithetic pairs); every order's gains add up to
    value(all) - value(none), so the estimate is efficient exactly, like the exact values."""
    generator = torch.Generator().manual_seed(0)  # same players and targets, same weights
    half = torch.stack([torch.randperm(n, generator=generator) for _ in range(samples // 2)])
    orders = torch.cat([half, half.flip(1)])  # (M, n): the order in which players join
    M = len(orders)
    # prefix p of an order keeps its first p players: (M, n + 1, n) masks
    rank = torch.empty_like(orders).scatter_(1, orders, torch.arange(n).expand(M, -1))  # position of each player
    masks = rank[:, None, :] < torch.arange(n + 1)[None, :, None]
    unique, inverse = torch.unique(masks.view(-1, n), dim=0, return_inverse=True)
    v = value(unique)[inverse].view(M, n + 1, -1)  # (M, n + 1, k)
    gains = v[:, 1:] - v[:, :-1]  # (M, n, k): what the p-th player of each order added
    weights = torch.zeros(M, n, k).scatter_(1, orders[:, :, None].expand(-1, -1, k), gains)
    return weights.mean(0).T.contiguous()  # (k, n)
