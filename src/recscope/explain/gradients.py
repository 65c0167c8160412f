"""Gradient explanations on the history's item tokens, computed by Captum.

``grad_input``: gradient x input (Captum's InputXGradient), summed over the token width.
``integrated_gradients``: Captum's IntegratedGradients from an all-zero token baseline (an
item with no content, keeping its position), so each item's attributions add up, with the
others', to score(history) - score(baseline). Both are target-dependent: each target's
score is differentiated on its own.
"""

from __future__ import annotations

import torch
from captum.attr import InputXGradient, IntegratedGradients

from recscope.explain.base import Explainer


class _TokenExplainer(Explainer):
    def _inputs(self, history: torch.Tensor, targets: torch.Tensor):
        K = len(targets)
        histories = history[None, :].expand(K, -1)  # (K, T)
        with torch.no_grad():
            tokens = self.model.item_tokens(histories)  # (K, T, C)
        return histories, tokens

    def _forward(self, tokens: torch.Tensor, histories: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.target_scores(histories, targets, tokens=tokens)  # (batch,)


class GradInputExplainer(_TokenExplainer):
    name = "grad_input"
    description = "gradient x input on each history item's token (Captum InputXGradient)"

    def attribute(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        histories, tokens = self._inputs(history, targets)
        tokens.requires_grad_(True)
        attr = InputXGradient(self._forward).attribute(tokens, additional_forward_args=(histories, targets))
        return attr.sum(-1).detach()  # (K, T)


class IntegratedGradientsExplainer(_TokenExplainer):
    name = "integrated_gradients"
    description = "integrated gradients from an empty-token baseline (Captum IntegratedGradients)"

    def __init__(self, model, n_steps: int = 24):
        super().__init__(model)
        self.n_steps = n_steps

    def attribute(self, history: torch.Tensor, targets: torch.Tensor, return_delta: bool = False):
        histories, tokens = self._inputs(history, targets)
        attr, delta = IntegratedGradients(self._forward).attribute(
            tokens,
            baselines=torch.zeros_like(tokens),
            additional_forward_args=(histories, targets),
            n_steps=self.n_steps,
            internal_batch_size=max(len(targets) * self.n_steps, 1),
            return_convergence_delta=True,
        )
        result = attr.sum(-1).detach()
        return (result, delta.detach()) if return_delta else result


def field_attributions(explainer: Explainer, history: torch.Tensor, targets: torch.Tensor):
    """How much each field of the history tokens and of each candidate contributed.

    Returns ``(history_fields (K, T, F), candidate_fields (K, F), names)``. History: gradient x
    input on each field's part of the token (the parts add up to the token). Candidate:
    exact, since a score is the dot product of the final hidden state with the sum of the
    candidate's field parts.
    """
    model = explainer.model
    K = len(targets)
    histories = history[None, :].expand(K, -1)
    with torch.no_grad():
        parts = model.field_embeddings(histories)  # name -> (K, T, C)
        cand_parts = model.field_embeddings(targets)  # name -> (K, C)
    names = list(parts)
    tokens = torch.stack([parts[n] for n in names]).sum(0).requires_grad_(True)
    hidden = model(histories, tokens=tokens).hidden[:, -1]  # (K, C)
    score = (hidden * explainer.table[targets]).sum()
    (grad,) = torch.autograd.grad(score, tokens)
    history_fields = torch.stack([(grad * parts[n]).sum(-1) for n in names], dim=-1)  # (K, T, F)
    candidate_fields = torch.stack([(hidden.detach() * cand_parts[n]).sum(-1) for n in names], dim=-1)  # (K, F)
    return history_fields.detach(), candidate_fields, names
