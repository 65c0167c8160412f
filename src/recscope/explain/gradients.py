"""Gradient explanations on the history's item tokens, computed by Captum.

``grad_input``: gradient x input (Captum's InputXGradient), summed over the token width.
``integrated_gradients``: Captum's IntegratedGradients from an all-zero token baseline (an
item with no content, keeping its position), so each item's attributions add up, with the
others', to score(history) - score(baseline). Both are target-dependent: each target's
score is differentiated on its own. Both explain the attribute values of the history
(``attribute_fields``, see :mod:`recscope.explain.fields`) by the same rule, on each value's
presence in the tokens.
"""

from __future__ import annotations

import torch
from captum.attr import InputXGradient, IntegratedGradients

from recscope.explain.base import Explainer


class _TokenExplainer(Explainer):
    def _inputs(self, history: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None):
        K = len(targets)
        histories = history[None, :].expand(K, -1)  # (K, T)
        with torch.no_grad():
            tokens = self.model.item_tokens(histories)  # (K, T, C)
        labels = None if events is None else events[None, :].expand(K, -1)
        return histories, tokens, labels

    def _forward(
        self, tokens: torch.Tensor, histories: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Captum repeats the extra arguments along the batch for its steps; events ride along unchanged.
        return self.target_scores(histories, targets, tokens=tokens, events=events)  # (batch,)


class GradInputExplainer(_TokenExplainer):
    name = "grad_input"
    description = "gradient x input on each history item's token (Captum InputXGradient)"

    def attribute(
        self, history: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        histories, tokens, labels = self._inputs(history, targets, events)
        tokens.requires_grad_(True)
        attr = InputXGradient(self._forward).attribute(tokens, additional_forward_args=(histories, targets, labels))
        return attr.sum(-1).detach()  # (K, T)

    def attribute_fields(self, game, targets: torch.Tensor) -> torch.Tensor:
        """(K, P) gradient x input on each attribute value's presence (its part of the tokens)."""
        masks = torch.ones(len(targets), game.n_players, requires_grad=True)
        return InputXGradient(game.paired).attribute(masks, additional_forward_args=(targets,)).detach()


class IntegratedGradientsExplainer(_TokenExplainer):
    name = "integrated_gradients"
    description = "integrated gradients from an empty-token baseline (Captum IntegratedGradients)"

    def __init__(self, model, table: torch.Tensor | None = None, n_steps: int = 24):
        super().__init__(model, table)
        self.n_steps = n_steps

    def attribute(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        events: torch.Tensor | None = None,
        return_delta: bool = False,
    ):
        histories, tokens, labels = self._inputs(history, targets, events)
        attr, delta = IntegratedGradients(self._forward).attribute(
            tokens,
            baselines=torch.zeros_like(tokens),
            additional_forward_args=(histories, targets, labels),
            n_steps=self.n_steps,
            internal_batch_size=max(len(targets) * self.n_steps, 1),
            return_convergence_delta=True,
        )
        result = attr.sum(-1).detach()
        return (result, delta.detach()) if return_delta else result

    def attribute_fields(self, game, targets: torch.Tensor) -> torch.Tensor:
        """(K, P) integrated gradients on each attribute value's presence, from all parts removed;
        they add up to score(history) - score(empty tokens)."""
        masks = torch.ones(len(targets), game.n_players)
        attr = IntegratedGradients(game.paired).attribute(
            masks,
            baselines=torch.zeros_like(masks),
            additional_forward_args=(targets,),
            n_steps=self.n_steps,
            internal_batch_size=max(len(targets) * self.n_steps, 1),
        )
        return attr.detach()
