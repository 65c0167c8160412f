"""Leave-one-out occlusion: remove each history item in turn and re-score.

``weights[k, t] = score(target_k | history) - score(target_k | history without item t)``.
All T removals go through the model in one batch (:mod:`recscope.explain.variants`, where
``without`` lives; it is still importable from here). This is the reference the other
methods are compared with (Kendall tau), and removal is also how faithfulness is measured.
"""

from __future__ import annotations

import torch

from recscope.explain.base import Explainer
from recscope.explain.variants import variant_scores, without

__all__ = ["OcclusionExplainer", "without"]


class OcclusionExplainer(Explainer):
    name = "occlusion"
    description = "leave-one-out: the score drop when the history item is removed (one batched pass)"

    @torch.no_grad()
    def attribute(
        self, history: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        T = len(history)
        masks = torch.cat([torch.ones(1, T, dtype=torch.bool), ~torch.eye(T, dtype=torch.bool)])  # t + 1 drops item t
        scores = variant_scores(self.model, self.table, history, masks, targets, events)  # (T + 1, K)
        return (scores[0][None, :] - scores[1:]).T.contiguous()  # (K, T)

    @torch.no_grad()
    def attribute_fields(self, game, targets: torch.Tensor) -> torch.Tensor:
        """(K, P) leave-one-value-out: the score drop when one attribute value's part is removed."""
        P = game.n_players
        masks = torch.cat([torch.ones(1, P, dtype=torch.bool), ~torch.eye(P, dtype=torch.bool)])  # (P + 1, P)
        scores = game.scores(masks, targets)  # (P + 1, K)
        return (scores[0][None, :] - scores[1:]).T.contiguous()
