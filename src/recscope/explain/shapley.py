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

- T <= EXACT_UP_TO: every one of the 2^T sub-histories goes through the model in one
  batch; the Shapley formula is then exact, with no sampling noise.
- longer: SAMPLES random orders (half of them the reverses of the other half, antithetic
  pairs, which cancels much of the noise); every prefix of every order in one batch.

Each distinct sub-history is scored once for all K targets. Captum's
ShapleyValueSampling computes the same estimate but runs one model pass per order and
target, an order of magnitude slower here; the tests check the two agree.
"""

from __future__ import annotations

import math

import torch

from recscope.explain.base import Explainer
from recscope.explain.occlusion import without

EXACT_UP_TO = 10  # 2^10 = 1024 sub-histories in one batch
SAMPLES = 32  # random orders (an even number: antithetic pairs) for longer histories
CHUNK = 2048  # sub-histories per model pass


class ShapleyExplainer(Explainer):
    name = "shapley"
    description = "Shapley values: each item's marginal contribution averaged over the orders of the history"

    @torch.no_grad()
    def attribute(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if len(history) <= EXACT_UP_TO:
            return self.exact(history, targets)
        return self.sampled(history, targets)

    def values(self, history: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(V, T) keep-masks -> (V, K) scores of the targets given each sub-history."""
        out = []
        for chunk in masks.split(CHUNK):
            hidden = self.model(without(history, chunk)).hidden[:, -1]
            out.append(hidden @ self.table[targets].T)
        return torch.cat(out)

    def exact(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = len(history)
        subsets = torch.arange(2**T)
        bits = 1 << torch.arange(T)
        masks = (subsets[:, None] & bits) > 0  # (2^T, T): subset s keeps the items of its bits
        v = self.values(history, masks, targets)  # (2^T, K)
        size = masks.sum(1)
        # weight of a coalition S of size s when item i joins it: s! (T - s - 1)! / T!
        weight = torch.tensor([math.factorial(s) * math.factorial(T - s - 1) / math.factorial(T) for s in range(T)])
        weights = torch.empty(len(targets), T)
        for i in range(T):
            without_i = subsets[~masks[:, i]]  # coalitions that lack item i
            gain = v[without_i | (1 << i)] - v[without_i]  # (2^(T-1), K)
            weights[:, i] = (weight[size[without_i]][:, None] * gain).sum(0)
        return weights

    def sampled(self, history: torch.Tensor, targets: torch.Tensor, samples: int = SAMPLES) -> torch.Tensor:
        T = len(history)
        generator = torch.Generator().manual_seed(0)  # same history and targets, same weights
        half = torch.stack([torch.randperm(T, generator=generator) for _ in range(samples // 2)])
        orders = torch.cat([half, half.flip(1)])  # (M, T): the order in which items join
        M = len(orders)
        # prefix p of an order keeps its first p items: (M, T + 1, T) masks
        rank = torch.empty_like(orders).scatter_(1, orders, torch.arange(T).expand(M, -1))  # position of each item
        masks = rank[:, None, :] < torch.arange(T + 1)[None, :, None]
        unique, inverse = torch.unique(masks.view(-1, T), dim=0, return_inverse=True)
        v = self.values(history, unique, targets)[inverse].view(M, T + 1, -1)  # (M, T + 1, K)
        gains = v[:, 1:] - v[:, :-1]  # (M, T, K): what the p-th item of each order added
        weights = torch.zeros(M, T, len(targets)).scatter_(1, orders[:, :, None].expand(-1, -1, len(targets)), gains)
        return weights.mean(0).T.contiguous()  # (K, T)
