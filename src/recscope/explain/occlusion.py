"""Leave-one-out occlusion: remove each history item in turn and re-score.

``weights[k, t] = score(target_k | history) - score(target_k | history without item t)``.
All T removals go through the model in one batch. This is the reference the other
methods are compared with (Kendall tau), and removal is also how faithfulness is measured.
"""

from __future__ import annotations

import torch

from recscope.explain.base import Explainer


def without(history: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """history (T,), masks (V, T) bool keep-flags -> (V, T) histories with the dropped items
    removed (not blanked: later items move up) and left-padded with 0. The same on the history's
    event labels keeps them aligned with the items."""
    V, T = masks.shape
    keep = masks.long()
    order = torch.argsort(keep, dim=1, stable=True)  # dropped first, kept after, in their order
    out = history[None, :].expand(V, -1).gather(1, order)
    return out * keep.gather(1, order)


class OcclusionExplainer(Explainer):
    name = "occlusion"
    description = "leave-one-out: the score drop when the history item is removed (one batched pass)"

    @torch.no_grad()
    def attribute(
        self, history: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        T = len(history)
        masks = ~torch.eye(T, dtype=torch.bool)  # (T, T): variant t drops item t
        variants = torch.cat([history[None, :], without(history, masks)])  # (T + 1, T)
        labels = None if events is None else torch.cat([events[None, :], without(events, masks)])
        hidden = self.model.last_hidden(variants, self.table, events=labels)  # (T + 1, C)
        scores = self.model.predict_many(hidden, self.table[targets])  # (T + 1, K)
        return (scores[0][None, :] - scores[1:]).T.contiguous()  # (K, T)

    @torch.no_grad()
    def attribute_fields(self, game, targets: torch.Tensor) -> torch.Tensor:
        """(K, P) leave-one-value-out: the score drop when one attribute value's part is removed."""
        P = game.n_players
        masks = torch.cat([torch.ones(1, P, dtype=torch.bool), ~torch.eye(P, dtype=torch.bool)])  # (P + 1, P)
        scores = game.scores(masks, targets)  # (P + 1, K)
        return (scores[0][None, :] - scores[1:]).T.contiguous()
