"""The shared base of every explainer, and the Explanation every one of them returns.

An explainer is built from a loaded model and has one verb::

    weights = explainer.attribute(history, targets)   # (T,) items, (K,) items -> (K, T)
    weights = explainer.attribute(history, targets, events)  # with the history's (T,) event labels

``weights[k, t]`` is how much history item ``t`` pushed the score of ``targets[k]`` up
(positive) or down (negative). The score is what the run's task predicts (``model.predict_many``):
the next-item score, the predicted rating or the click logit, so every method explains every
head. A method that removes a history item removes its event label with it. All K targets
are explained in one or a few batched passes. Target-independent methods (attention, rollout)
return the same row for every target and say so with ``target_dependent = False``.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property

import torch

from recscope.explain.words import Words
from recscope.model import SeqRec
from recscope.ranking import HIDDEN, OUTSIDE_TOP_K, OWNED, RECOMMENDED


class Explainer:
    """Base class: subclasses set ``name`` and implement :meth:`attribute`."""

    name: str = ""
    target_dependent: bool = True
    description: str = ""
    fields_method: str = ""  # the method that explains attribute values when it is not this one

    def __init__(self, model: SeqRec, table: torch.Tensor | None = None):
        """``table``: the model's item table (``model.item_table()``) when the caller holds it
        (a served snapshot does): fusing every item's fields again costs a pass over the catalog."""
        self.model = model.eval()
        if table is None:
            with torch.no_grad():
                table = model.item_table()
        self.table = table  # (n_items + 1, C)

    @cached_property
    def norms(self) -> torch.Tensor:
        """(n_items + 1,) the length of each item's row of the table (counterfactuals bound scores with it)."""
        return self.table.norm(dim=1)

    def attribute(
        self, history: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        """history (T,) item indices without padding, targets (K,), events (T,) the history's
        event labels (None: none known) -> (K, T) attributions."""
        raise NotImplementedError

    def attribute_fields(self, game, targets: torch.Tensor) -> torch.Tensor:
        """game (:class:`recscope.explain.fields.FieldGame`, P players), targets (K,) -> (K, P)."""
        raise NotImplementedError

    # helpers shared by the methods --------------------------------------------
    def target_scores(
        self,
        histories: torch.Tensor,
        targets: torch.Tensor,
        tokens: torch.Tensor | None = None,
        events: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) histories (left-padded) and (B,) targets -> (B,) the task's predictions, differentiable."""
        hidden = self.model(histories, tokens=tokens, last_only=True, events=events).hidden[:, -1]  # (B, C)
        return self.model.predict_paired(hidden, self.table[targets])


@dataclass
class HistoryWeight:
    position: int  # 0-based position in the user's whole history
    item_id: str
    title: str
    weight: float
    # the event's kind when the model read it as something else than an item the user had:
    # "dismiss" (they dismissed it: recscope.histories.DISMISS); None otherwise (left out of to_dict)
    event: str | None = None


# Why a counterfactual's item left the top-K (Counterfactual.kind)
OWN_SCORE_FELL = "own_score_fell"  # its own score fell below the old cut-off: the removed items carried it
OTHERS_ROSE = "others_rose"  # its own score stayed above the old cut-off: other items rose past it
NOT_FOUND = "not_found"  # no greedy prefix of the history drops it out

# What an explained item is to the history (Explanation.status): its status in the history's
# Ranking (RECOMMENDED in the top-K, OUTSIDE_TOP_K ranked below it, OWNED already in the history:
# never recommended, no score or rank), where an item the ranking hides otherwise is one the
# user dismissed ("not interested": never recommended to them again, no rank). HIDDEN (ranking's
# own word) is kept for an item hidden in the catalog (Recommender.set_hidden: in no list, no rank).
DISMISSED = "dismissed"
STATUSES = {RECOMMENDED: RECOMMENDED, OUTSIDE_TOP_K: OUTSIDE_TOP_K, OWNED: OWNED, HIDDEN: DISMISSED}


@dataclass
class Counterfactual:
    removed: list[HistoryWeight]  # the smallest set found (greedy by attribution, verified)
    new_rank: int | None  # 1-based rank of the item once they are removed (None: not found)
    k: int  # the top-K it drops out of
    replaced_by: str | None = None  # the item that enters the top-K in its place (own id)
    found: bool = True
    kind: str = OWN_SCORE_FELL  # OWN_SCORE_FELL, OTHERS_ROSE or NOT_FOUND
    score_before: float | None = None  # the item's own score with the whole history
    score_after: float | None = None  # its own score once ``removed`` are taken out
    cutoff: float | None = None  # the score of the first item outside the top-K, before the removal

    @property
    def carried(self) -> bool:
        """True when the removed items carried the item: their removal alone (every other score
        as it was) drops its own score below the old cut-off."""
        return self.found and self.kind == OWN_SCORE_FELL


@dataclass
class Explanation:
    """Why one item was recommended to one history: JSON-serialisable, renders in notebooks."""

    user: str | None
    item_id: str
    title: str
    score: float | None  # the model's score (None for an owned item: it is not ranked)
    rank: int | None  # 1-based rank among the rankable items (owned excluded); None if owned
    method: str
    target_dependent: bool
    history: list[HistoryWeight]  # every history item the model read, oldest first
    # "id" / "text" / "brand=X" -> how much that part of the history's tokens pushed the score,
    # by ``attributes_method`` (the chosen method, or Shapley values for attention and rollout)
    attributes_history: dict[str, float] = field(default_factory=dict)
    attributes_candidate: dict[str, float] = field(default_factory=dict)  # the item's own fields (exact split)
    attributes_method: str = ""
    status: str = RECOMMENDED  # RECOMMENDED, OUTSIDE_TOP_K, OWNED, DISMISSED or HIDDEN
    k: int = 10  # the top-K the status and the counterfactual refer to
    candidates: int | None = None  # how many items were ranked (the catalog minus owned items)
    # the item's own score drop when the history items the sentence may name are taken out together
    cited_drop: float | None = None
    attentions: list | None = None  # (n_layers, n_heads, T) final-position attention, if asked
    counterfactual: Counterfactual | None = None
    # which words of the item's and the top history items' texts drive the score, when asked and
    # text drives the item (see recscope.explain.words); None otherwise
    words: Words | None = None
    sentence: str = ""
    ms: float = 0.0  # time to build this explanation (its share of a batched call)

    def to_dict(self) -> dict:
        """Plain JSON types; a non-finite number becomes None (null), never Infinity or NaN. A
        history item's ``event`` is there only when it has one (a dismissal)."""
        out = finite(asdict(self))
        removed = (out["counterfactual"] or {}).get("removed", [])
        for entry in [*out["history"], *removed]:
            if entry["event"] is None:
                del entry["event"]
        return out

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

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
        score = f"{self.score:.3f}" if self.score is not None else "none"
        return (
            f"<div><b>{e(self.title)}</b> ({e(self.item_id)}), rank {self.rank}, score {score}, "
            f"method <code>{e(self.method)}</code><p>{e(self.sentence)}</p>"
            f"<table><tr><th>#</th><th>history item</th><th>weight</th><th></th></tr>{rows}</table>"
            f"<p>candidate attributes:</p><ul>{attrs}</ul></div>"
        )


def finite(value):
    """``value`` with every non-finite float (in dicts and lists, at any depth) replaced by None:
    standard JSON has no Infinity or NaN, and browsers reject them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
