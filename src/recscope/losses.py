"""The next-item losses: full softmax over the catalog (fused with its matmul) and sampled softmax.

Full softmax, :func:`linear_cross_entropy`: ``F.cross_entropy(hidden @ table.T, targets)``. Written out, the cost of a
training step on Beauty (about 2,000 targets x 12,101 items) is mostly not the matmuls but the
(n, V) tensors around the softmax: log_softmax writes one, nll_loss's backward zero-fills another
of the same size to scatter a -1 per row, and log_softmax's backward reads both. The gradient of
cross-entropy is known in closed form, ``softmax(logits) - onehot(target)``, so here the forward
keeps the softmax itself (computed in place over the logits) and the backward turns it into the
gradient in place: one (n, V) tensor in all, no zero fill. Same values and gradients as the
composed ops (tests/test_losses.py); measured side by side in bench/loss_speed.py.

Sampled softmax, :func:`sampled_softmax`: against shared candidates with the log-Q correction
(the candidates are drawn by :mod:`recscope.sampling`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, hidden: Tensor, table: Tensor, targets: Tensor, hidden_columns: Tensor | None):
        logits = hidden @ table.T  # (n, V)
        if hidden_columns is not None:
            logits.masked_fill_(hidden_columns[None, :], float("-inf"))
        top = logits.amax(1, keepdim=True)  # (n, 1) for a stable exp
        probs = logits.sub_(top).exp_()
        total = probs.sum(1, keepdim=True)  # (n, 1)
        probs.div_(total)  # softmax, in the logits' storage
        loss = (top + total.log()).squeeze(1) - (hidden * table[targets]).sum(1)  # (n,) logsumexp - target logit
        ctx.save_for_backward(hidden, table, targets, probs)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor):
        hidden, table, targets, probs = ctx.saved_tensors
        # d loss_i / d logits_ij = softmax_ij - [j == target_i], scaled by the incoming grad_i
        g = probs.mul_(grad[:, None])  # (n, V), reusing the saved softmax: backward runs once
        g[torch.arange(len(targets)), targets] -= grad
        grad_hidden = g @ table if ctx.needs_input_grad[0] else None  # (n, C)
        grad_table = g.T @ hidden if ctx.needs_input_grad[1] else None  # (V, C)
        return grad_hidden, grad_table, None, None


def linear_cross_entropy(
    hidden: Tensor, table: Tensor, targets: Tensor, hidden_columns: Tensor | None = None
) -> Tensor:
    """Per-row cross-entropy of ``softmax(hidden @ table.T)`` against ``targets``.

    hidden (n, C), table (V, C), targets (n,) long in [0, V) -> (n,) losses. ``hidden_columns``
    (V,) bool: columns that get no logit (-inf; no probability, no gradient), e.g. items training
    must not see. A target must not be a hidden column (its loss would be infinite).
    """
    return _LinearCrossEntropy.apply(hidden, table, targets, hidden_columns)


def reduce(losses: Tensor, reduction: str) -> Tensor:
    """(n,) per-row losses -> their \"mean\", \"sum\", or themselves (\"none\")."""
    return {"mean": losses.mean, "sum": losses.sum, "none": lambda: losses}[reduction]()


def sampled_softmax(
    hidden: Tensor,
    targets: Tensor,
    target_tokens: Tensor,
    target_log_q: Tensor,
    candidates: Tensor,
    candidate_tokens: Tensor,
    candidate_log_q: Tensor,
    hidden_candidates: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy of each row's target against candidates shared by every row, each logit
    corrected by subtracting the log of its item's chance to be a candidate (log-Q, see
    :mod:`recscope.sampling`).

    hidden (n, C), targets (n,), target_tokens (n, C), target_log_q (n,); candidates (K,),
    candidate_tokens (K, C), candidate_log_q (K,); hidden_candidates (K,) bool: candidates no row
    may score (held-out items). A candidate equal to a row's target (an accidental hit) is masked
    in that row: the target is its positive, and counts once.
    """
    positive = (hidden * target_tokens).sum(-1) - target_log_q  # (n,)
    negative = torch.addmm(-candidate_log_q, hidden, candidate_tokens.T)  # (n, K): h . token - log Q
    masked = candidates[None, :] == targets[:, None]  # (n, K) accidental hits
    if hidden_candidates is not None:
        masked |= hidden_candidates[None, :]
    negative.masked_fill_(masked, float("-inf"))  # in place: addmm's gradient does not read its output
    # cross-entropy with the positive as class 0, without building the (n, 1 + K) logits
    loss = torch.logaddexp(positive, torch.logsumexp(negative, dim=1)) - positive  # (n,)
    return reduce(loss, reduction)
