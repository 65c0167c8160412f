"""The shared base of every explainer, and the Explanation every one of them returns.

An explainer is built from a loaded model and has one verb::

    weights = explainer.attribute(history, targets)   # (T,) items, (K,) items -> (K, T)

``weights[k, t]`` is how much history item ``t`` pushed the score of ``targets[k]`` up
(positive) or down (negative). All K targets are explained in one or a few batched
passes. Target-independent methods (attention, rollout) return the same row for every
target and say so with ``target_dependent = False``.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field

import torch

from recscope.model import SeqRec


class Explainer:
    """Base class: subclasses set ``name`` and implement :meth:`attribute`."""

    name: str = ""
    target_dependent: bool = True
    description: str = ""

    def __init__(self, model: SeqRec):
        self.model = model.eval()
        with torch.no_grad():
            self.table = model.item_table()  # (n_items + 1, C)

    def attribute(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """history (T,) item indices without padding, targets (K,) -> (K, T) attributions."""
        raise NotImplementedError

    # helpers shared by the methods --------------------------------------------
    def target_scores(
        self, histories: torch.Tensor, targets: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) histories (left-padded) and (B,) targets -> (B,) scores, differentiable."""
        hidden = self.model(histories, tokens=tokens).hidden[:, -1]  # (B, C)
        return (hidden * self.table[targets]).sum(-1)


@dataclass
class HistoryWeight:
    position: int  # 0-based position in the user's whole history
    item_id: str
    title: str
    weight: float


@dataclass
class Counterfactual:
    removed: list[HistoryWeight]  # the smallest set found (greedy by attribution, verified)
    new_rank: int | None  # 1-based rank of the item once they are removed (None: not found)
    k: int  # the top-K it drops out of
    replaced_by: str | None = None  # the item that enters the top-K in its place (own id)
    found: bool = True


@dataclass
class Explanation:
    """Why one item was recommended to one history: JSON-serialisable, renders in notebooks."""

    user: str | None
    item_id: str
    title: str
    score: float
    rank: int  # 1-based rank among the recommendations (owned items excluded)
    method: str
    target_dependent: bool
    history: list[HistoryWeight]  # every history item the model read, oldest first
    attributes_history: dict[str, float] = field(default_factory=dict)  # "brand=X" -> weight
    attributes_candidate: dict[str, float] = field(default_factory=dict)  # "brand=X" -> weight
    attentions: list | None = None  # (n_layers, n_heads, T) final-position attention, if asked
    counterfactual: Counterfactual | None = None
    sentence: str = ""
    ms: float = 0.0  # time to build this explanation (its share of a batched call)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def top(self, n: int = 3) -> list[HistoryWeight]:
        return sorted(self.history, key=lambda h: -h.weight)[:n]

    def _repr_html_(self) -> str:
        e = html.escape
        peak = max((abs(h.weight) for h in self.history), default=0.0) or 1.0
        rows = "".join(
            f"<tr><td>{h.position + 1}</td><td title='{e(h.item_id)}'>{e(h.title)}</td>"
            f"<td style='text-align:right'>{h.weight:+.3f}</td>"
            f"<td><div style='width:{int(100 * abs(h.weight) / peak)}px;height:10px;"
            f"background:{'#2b6cb0' if h.weight >= 0 else '#c53030'}'></div></td></tr>"
            for h in self.history
        )
        attrs = "".join(
            f"<li>{e(k)}: {v:+.3f}</li>"
            for k, v in sorted(self.attributes_candidate.items(), key=lambda kv: -abs(kv[1]))[:6]
        )
        return (
            f"<div><b>{e(self.title)}</b> ({e(self.item_id)}), rank {self.rank}, score {self.score:.3f}, "
            f"method <code>{e(self.method)}</code><p>{e(self.sentence)}</p>"
            f"<table><tr><th>#</th><th>history item</th><th>weight</th><th></th></tr>{rows}</table>"
            f"<p>candidate attributes:</p><ul>{attrs}</ul></div>"
        )
