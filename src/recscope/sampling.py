"""Sampled softmax for big catalogs: which items a training step scores, and the log-Q correction.

Full softmax scores every item at every position, so a step costs O(catalog). Sampled softmax
scores each position's target against a set of candidates shared by the batch:

- in-batch negatives: the batch's own targets (at most ``train.in_batch_negatives`` of them,
  drawn at random when it has more). A target is an item drawn by its unigram frequency ``p``
  (its share of all training targets), so these are ``m`` draws from ``p``;
- ``train.num_negatives`` items drawn from a shared sampler ``q`` (``train.negative_sampler``:
  uniform over the items training may see, or ``popularity``, which is ``p``).

Candidates are kept once each. Scoring against a sample biases the model towards the items the
sample favours (frequent ones, through in-batch negatives), unless every logit, the target's
too, is corrected by subtracting ``log Q(item)``: the log of the item's chance to be among the
candidates (Bengio and Senecal 2008; Yi et al. 2019, "Sampling-bias-corrected neural modeling
for large corpus item recommendations"). With ``m`` draws from ``p`` and ``n`` from ``q``:

    Q(j) = 1 - (1 - p_j)^m (1 - q_j)^n

A candidate equal to a position's own target (an accidental hit) is masked for that position,
so the target counts once (:func:`recscope.losses.sampled_softmax`). The training loop calls
:func:`negative_sampler` once per epoch and :meth:`NegativeSampler.draw` once per step.

With sampled softmax a step touches only the item-id embeddings of its inputs and candidates,
so :func:`make_optimizer` gives the item table sparse gradients and lazy Adam updates
(``torch.optim.SparseAdam``: only the rows a step touched move); a dense AdamW over a million
rows would cost more than the rest of the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from recscope.config import Config


@dataclass(frozen=True)
class Negatives:
    """One step's shared candidates and their sampling probabilities (the loss's log-Q)."""

    items: Tensor  # (K,) distinct item indices, sorted
    frequency: Tensor  # (n_items + 1,) float64 p: the chance that one in-batch draw is the item
    drawn: Tensor  # (n_items + 1,) float64 q: the chance that one shared draw is the item
    m: int  # in-batch draws this step
    n: int  # shared draws this step

    def log_q(self, items: Tensor) -> Tensor:
        """(*S) item indices -> (*S) float32 log of each item's chance to be among the candidates."""
        # log P(not drawn) = m log(1 - p) + n log(1 - q); xlog1py is 0 when a count is 0 (even at p = 1)
        missed = torch.special.xlog1py(self.m, -self.frequency[items]) + torch.special.xlog1py(
            self.n, -self.drawn[items]
        )
        return torch.log(-torch.expm1(missed)).float()


def targets_of(windows: Tensor) -> Tensor:
    """(W, L + 1) left-padded training windows -> (M,) the items they predict (positions with an input)."""
    return windows[:, 1:][(windows[:, :-1] > 0) & (windows[:, 1:] > 0)]


def _uniform(frequency: Tensor, allowed: Tensor) -> Tensor:
    return allowed.double() / allowed.sum()


def _popularity(frequency: Tensor, allowed: Tensor) -> Tensor:
    return frequency * allowed


# train.negative_sampler -> (frequency p, allowed items) -> (n_items + 1,) q
SAMPLERS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"uniform": _uniform, "popularity": _popularity}


class NegativeSampler:
    """Draws each step's :class:`Negatives` for windows of one epoch's training data."""

    def __init__(self, windows: Tensor, n_items: int, config: Config, unseen: Tensor | None = None):
        """``windows`` (W, L + 1) all training windows (their targets give ``p``); ``unseen``
        (n_items + 1,) bool: items training must not see (held-out cold items), never drawn."""
        t = config.train
        counts = torch.bincount(targets_of(windows), minlength=n_items + 1).double()
        self.frequency = counts / counts.sum().clamp(min=1)  # (n_items + 1,) p
        allowed = torch.ones(n_items + 1, dtype=torch.bool)
        allowed[0] = False  # padding
        if unseen is not None:
            allowed &= ~unseen
        self.drawn = SAMPLERS[t.negative_sampler](self.frequency, allowed)  # (n_items + 1,) q
        cdf = self.drawn.cumsum(0)
        self.cdf = cdf / cdf[-1]  # drawing n items costs O(n log catalog), not O(catalog)
        self.num_negatives = t.num_negatives
        self.in_batch = t.in_batch_negatives

    def draw(self, windows: Tensor, generator: torch.Generator) -> Negatives:
        """The candidates of one step over ``windows`` (B, L + 1), drawn from ``generator``."""
        targets = targets_of(windows)  # (M,)
        if len(targets) > self.in_batch:
            targets = targets[torch.randperm(len(targets), generator=generator)[: self.in_batch]]
        u = torch.rand(self.num_negatives, generator=generator, dtype=torch.float64)
        # right=True: an item with q = 0 spans an empty interval of the cdf and is never picked
        drawn = torch.searchsorted(self.cdf, u, right=True).clamp(max=len(self.cdf) - 1)
        items = torch.unique(torch.cat([targets, drawn]))
        return Negatives(items, self.frequency, self.drawn, len(targets), self.num_negatives)


def uses_sampled_softmax(config: Config) -> bool:
    """Whether training uses sampled softmax: ``train.loss`` resolved for the catalog (``auto``:
    above ``train.sampled_above`` items). Only the next-item task ranks the catalog."""
    t = config.train
    if t.task != "next_item":
        return False
    return t.loss == "sampled" or (t.loss == "auto" and config.model.n_items > t.sampled_above)


def negative_sampler(windows: Tensor, config: Config, unseen: Tensor | None = None) -> NegativeSampler | None:
    """The epoch's sampler for training ``windows``, or None: the run trains with full softmax."""
    if not uses_sampled_softmax(config):
        return None
    return NegativeSampler(windows, config.model.n_items, config, unseen)


def describe_loss(config: Config) -> str:
    """What the training loss is, for the run's log."""
    t, n = config.train, config.model.n_items
    if not uses_sampled_softmax(config):
        return f"loss: full softmax over {n:,} items" if t.task == "next_item" else f"loss: task {t.task}"
    why = f" (loss auto: {n:,} items > sampled_above {t.sampled_above:,})" if t.loss == "auto" else ""
    return (
        f"loss: sampled softmax{why}: up to {t.in_batch_negatives:,} in-batch targets and {t.num_negatives:,} "
        f"{t.negative_sampler} negatives per step, log-Q corrected; item embeddings updated sparsely"
    )


class SplitOptimizer:
    """AdamW over the dense parameters and SparseAdam over the item-id table, used as one
    optimizer: one ``step`` / ``zero_grad``, and one state dict (groups and states numbered
    across both) that ``recscope.run.save_optimizer`` stores like any other."""

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer):
        self.parts = (dense, sparse)

    @property
    def param_groups(self) -> list[dict]:
        return self.parts[0].param_groups + self.parts[1].param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for part in self.parts:
            sd = part.state_dict()
            # SparseAdam counts steps in an int: stored as a tensor, as AdamW's count is
            state.update({i + offset: {k: torch.as_tensor(v) for k, v in s.items()} for i, s in sd["state"].items()})
            groups += [{**g, "params": [i + offset for i in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        offset, start = 0, 0
        for part in self.parts:
            n_groups = len(part.param_groups)
            groups = state_dict["param_groups"][start : start + n_groups]
            size = sum(len(g["params"]) for g in groups)
            part.load_state_dict(
                {
                    "state": {
                        i - offset: {k: int(v) if k == "step" and part is self.parts[1] else v for k, v in s.items()}
                        for i, s in state_dict["state"].items()
                        if offset <= i < offset + size
                    },
                    "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in groups],
                }
            )
            offset, start = offset + size, start + n_groups
        if start != len(state_dict["param_groups"]):
            raise ValueError(f"{len(state_dict['param_groups'])} parameter groups, expected {start}")


def make_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer | SplitOptimizer:
    """The training optimizer: AdamW; with sampled softmax, SparseAdam for the item-id table
    (``model.item_emb`` set to give sparse gradients) and AdamW for the rest."""
    t = config.train
    if not uses_sampled_softmax(config):
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    model.item_emb.sparse = True  # a lookup's gradient holds only the rows it read
    table = model.item_emb.weight
    dense = [p for p in model.parameters() if p is not table]
    return SplitOptimizer(
        torch.optim.AdamW(dense, lr=t.lr, weight_decay=t.weight_decay), torch.optim.SparseAdam([table], lr=t.lr)
    )
