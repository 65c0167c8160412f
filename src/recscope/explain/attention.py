"""The model's own attention, read from the final position (the one that scores the next item).

This view is target-independent: the final position's attention is the same whatever
item is scored, so it says what the model looked at, not why one item beat another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recscope.model import SeqRec


@dataclass
class AttentionView:
    items: np.ndarray  # (T,) dense item indices of the history the model read (oldest first)
    weights: np.ndarray  # (n_layers, n_heads, T) final position's attention over those items

    def mean(self) -> np.ndarray:
        """(T,) last layer, mean over heads."""
        return self.weights[-1].mean(0)


@torch.no_grad()
def final_position_attention(model: SeqRec, history: torch.Tensor) -> AttentionView:
    """history: (1, T) item indices without padding -> the final position's attention per layer/head."""
    model.eval()
    out = model(history, output_attentions=True)
    weights = torch.stack([a[0, :, -1, :] for a in out.attentions])  # (n_layers, n_heads, T)
    return AttentionView(history[0].numpy(), weights.numpy())
