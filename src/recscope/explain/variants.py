"""Variants of one history, and what the model makes of them: the one place explanations score them.

A variant keeps some of the history's items (a keep-mask, (T,) bool): the dropped items are
taken out of the sequence, not blanked, so later items move up, as a user without those
purchases would look; their event labels go with them. Every explanation that removes items
(leave-one-out, Shapley, counterfactuals, the check behind a sentence, faithfulness) scores its
variants through :func:`variant_hidden` (and :func:`variant_scores`), so all of them read the
event labels the served list read, the item tokens from the same table and the same batched
forward (``SeqRec.last_hidden``). Word attributions vary an item's token instead of removing it
(``tokens``). Ranking an item under a variant against the whole catalog (a counterfactual's
verification) counts its rivals among the items that can reach it (:class:`Rivals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from recscope.model import SeqRec
from recscope.ranking import Ranking, top_k, top_k_among

CHUNK = 256  # variants per model pass when each variant brings its own tokens
SLACK = 1e-4  # of |hidden| + |origin|, added to a variant's reach (float rounding is ~1e-5 of it)


def without(history: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """history (T,), masks (V, T) bool keep-flags -> (V, T) histories with the dropped items
    removed (not blanked: later items move up) and left-padded with 0. The same on the history's
    event labels keeps them aligned with the items."""
    keep = masks.long()
    order = torch.argsort(keep, dim=1, stable=True)  # dropped first, kept after, in their order
    out = history[None, :].expand(len(masks), -1).gather(1, order)
    return out * keep.gather(1, order)


@torch.no_grad()
def variant_hidden(
    model: SeqRec,
    table: torch.Tensor,
    history: torch.Tensor,
    masks: torch.Tensor,
    events: torch.Tensor | None = None,
    tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """(V, C) the last hidden state of each variant of ``history`` (T,) item indices: variant v
    keeps the items ``masks[v]`` (V, T) keeps, with their ``events`` (T,) labels (None: none
    known). Tokens are read from ``table`` (the item table, (n_items + 1, C)); ``tokens``
    (V, T, C): each variant's own tokens, position by position, instead (word attributions)."""
    labels = None if events is None else without(events, masks)
    items = without(history, masks)
    if tokens is None:
        return model.last_hidden(items, table, events=labels)  # sorted by length, chunked
    order = torch.argsort(masks.long(), dim=1, stable=True)[:, :, None].expand_as(tokens)
    tokens = tokens.gather(1, order)  # moved as their items are (padding's tokens are never read)
    out = tokens.new_empty(len(items), tokens.shape[-1])
    for rows in torch.arange(len(items)).split(CHUNK):
        batch = None if labels is None else labels[rows]
        out[rows] = model(items[rows], tokens=tokens[rows], last_only=True, events=batch).hidden[:, -1]
    return out


def variant_scores(
    model: SeqRec,
    table: torch.Tensor,
    history: torch.Tensor,
    masks: torch.Tensor,
    candidates: torch.Tensor | None = None,
    events: torch.Tensor | None = None,
) -> torch.Tensor:
    """(V, K) what the run's task predicts for each of the ``candidates`` (K,) item indices given
    each variant (see :func:`variant_hidden`); ``candidates`` None: every item, (V, n_items + 1)."""
    hidden = variant_hidden(model, table, history, masks, events)
    with torch.no_grad():
        return model.predict_many(hidden, table if candidates is None else table[candidates])


class Rivals:
    """The visible catalog an item is ranked against under variants of one history, scored only
    where it can matter: the counts the whole catalog gives, at a fraction of its cost.

    ``base`` is the history's own :class:`~recscope.ranking.Ranking` (which items are hidden,
    and their scores) and ``origin`` (C,) the hidden state those scores come from. For the
    next-item task a score is a dot product with the hidden state (``SeqRec.predict_many``: the
    mean of the towers' products), so a variant whose hidden state lies d away from ``origin``
    moves item i's score by at most d |e_i| / towers (Cauchy-Schwarz; e_i its row of the table):
    only the items whose base score plus that reaches a ranked item's own score can be above it
    or tied with it, and only they are scored. The first variants a counterfactual tries move
    the hidden state little: on a 1M-item synthetic shop half the steps ranked reach fewer than
    6,500 items (a step that reaches more than a quarter of the catalog scores it whole). Other
    heads (rating, click) bound nothing: every visible item is scored.
    """

    def __init__(self, model, table: torch.Tensor, base: Ranking, origin: torch.Tensor, norms=None):
        self.model, self.table, self.base, self.origin = model, table, base, origin
        self.scale = 1.0 / model.cfg.towers if isinstance(model, SeqRec) and model.head is None else None
        # (N + 1,) |e_i|: pass the cached ones (Explainer.norms), a pass over the table otherwise
        self.norms = None if self.scale is None else (table.norm(dim=1) if norms is None else norms)

    @torch.no_grad()
    def field(self, hidden: torch.Tensor, item: int, floor: float) -> Field:
        """What the variant with the last hidden state ``hidden`` (C,) scores for ``item`` and for
        every visible rival that can score ``floor`` or more (the item's own score, or a little
        less), all from one pass, so that the item and its rivals are rounded alike."""
        if self.scale is not None:
            bound, reach = self._buffers  # (N + 1,) each: what every item can score, and whether it reaches
            torch.add(self.base.scores, self.norms, alpha=self.reach(hidden), out=bound)  # hidden items: -inf
            pool = torch.ge(bound, floor, out=reach).nonzero().flatten()
            if len(pool) <= len(self.table) // 4:
                items = torch.cat([torch.tensor([item]), pool[pool != item]])
                rows = self.table.index_select(0, items)  # (P, C); ``table[items]`` copies 10x slower
                return Field(item, self.model.predict_many(hidden[None], rows)[0], items, len(self.table))
        scores = self.model.predict_many(hidden[None], self.table)[0]  # most of the catalog: score it whole
        return Field(item, scores.masked_fill_(self.hidden, float("-inf")), None, len(self.table))

    def reach(self, hidden: torch.Tensor) -> float:
        """How far a score can move from the base's per unit of its item's row length, given ``hidden`` (C,)."""
        slack = SLACK * (hidden.norm() + self.origin.norm())  # rounding: of both scores, and of origin
        return float((hidden - self.origin).norm() + slack) * self.scale

    @cached_property
    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two (N + 1,) buffers every step reuses: at 1M items a fresh one costs more (its pages
        are mapped anew) than the arithmetic written into it."""
        return torch.empty_like(self.base.scores), torch.empty(len(self.base.scores), dtype=torch.bool)

    @cached_property
    def hidden(self) -> torch.Tensor:
        """(N + 1,) bool: the items the base hides (no variant ranks them)."""
        return ~torch.isfinite(self.base.scores)


@dataclass(frozen=True)
class Field:
    """What one variant scores for an item and the rivals that can reach it (:meth:`Rivals.field`):
    the counts that rank the item and the top-K above it, as the whole catalog gives them."""

    item: int
    scores: torch.Tensor  # (P,) the scores of ``items``; ``items`` None: (N + 1,) every item's, hidden at -inf
    items: torch.Tensor | None  # (P,) the item first, then its rivals; None: the whole catalog
    columns: int  # the catalog's columns (N + 1): a pool's tie order is the whole catalog's

    def counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1,) each: the item's own score, how many rivals score higher, how many tie with it."""
        if self.items is None:
            own = self.scores[self.item : self.item + 1]
            return own, (self.scores > own).sum()[None], (self.scores == own).sum()[None] - 1  # not itself
        own, others = self.scores[:1], self.scores[1:]
        return own, (others > own).sum()[None], (others == own).sum()[None]

    def top(self, k: int) -> torch.return_types.topk:
        """The variant's top-``k`` in :func:`~recscope.ranking.top_k`'s order, when the item is out
        of it (so all of it scores at least the item's score: within the pool)."""
        if self.items is None:
            return top_k(self.scores, k)
        return top_k_among(self.scores, self.items, self.columns, k)
