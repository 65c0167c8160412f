"""Explanations read from the model's own attention, at the final position (the one that
scores the next item).

Both are target-independent: the final position's attention is the same whatever item
is scored, so they say what the model read, not why one item beat another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recscope.explain.base import Explainer
from recscope.explain.shapley import shapley
from recscope.model import SeqRec


@dataclass
class AttentionView:
    items: np.ndarray  # (T,) dense item indices of the history the model read (oldest first)
    weights: np.ndarray  # (n_layers, n_heads, T) final position's attention over those items

    def mean(self) -> np.ndarray:
        """(T,) last layer, mean over heads."""
        return self.weights[-1].mean(0)


@torch.no_grad()
def attention_maps(model: SeqRec, history: torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
    """history (T,) without padding (and its (T,) event labels) -> (n_layers, n_heads, T, T) attention weights."""
    model.eval()
    out = model(history[None, :], output_attentions=True, events=None if events is None else events[None, :])
    return torch.stack([a[0] for a in out.attentions])


def final_position_attention(model: SeqRec, history: torch.Tensor) -> AttentionView:
    """history (1, T) or (T,) -> the final position's attention per layer and head."""
    history = history.reshape(-1)
    maps = attention_maps(model, history)  # (L, H, T, T)
    return AttentionView(history.numpy(), maps[:, :, -1, :].numpy())


class _ReadingExplainer(Explainer):
    """Attention has no notion of fields: the history's attribute values are explained by
    Shapley values instead (the method the faithfulness measurements chose)."""

    target_dependent = False
    fields_method = "shapley"

    @torch.no_grad()
    def attribute_fields(self, game, targets: torch.Tensor) -> torch.Tensor:
        return shapley(lambda masks: game.scores(masks, targets), game.n_players, len(targets))


class AttentionExplainer(_ReadingExplainer):
    name = "attention"
    description = "last layer's attention from the final position, mean over heads"

    def attribute(
        self, history: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        maps = attention_maps(self.model, history, events)  # (L, H, T, T)
        row = maps[-1, :, -1, :].mean(0)  # (T,)
        return row.expand(len(targets), -1).clone()


class RolloutExplainer(_ReadingExplainer):
    name = "rollout"
    description = "attention rollout (Abnar & Zuidema 2020): heads averaged, residual added, layers multiplied"

    def attribute(
        self, history: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        maps = attention_maps(self.model, history, events)  # (L, towers x H, T, T)
        L, _, T, _ = maps.shape
        towers = self.model.cfg.towers
        maps = maps.view(L, towers, -1, T, T).mean(2)  # (L, towers, T, T): each tower's heads averaged
        rollout = torch.eye(T).expand(towers, T, T)
        for layer in maps:  # the residual stream carries half: A' = (A + I) / 2, rows renormalised
            a = 0.5 * layer + 0.5 * torch.eye(T)
            a = a / a.sum(-1, keepdim=True)
            rollout = a @ rollout
        # a tower's layers compose only with its own; the towers' rollouts are averaged as their scores are
        return rollout[:, -1].mean(0).expand(len(targets), -1).clone()
