"""Attribute attributions: how much each field of the history's tokens pushed a score.

An item token is a sum of parts: its id embedding, one embedding per catalog field (brand,
category, price band, ...; a multi-valued cell averages its values) and its projected text.
The history's field game has one player per field (``id``, each attribute, ``text``): a
coalition keeps its fields' parts of every history token, an absent field's part is removed
(positions stay, so the all-absent baseline is the empty-token history integrated gradients
starts from). A handful of players: exact Shapley values take 2^F model passes::

    game = field_game(model, table, history)      # F players
    game.scores(masks, targets)                   # (V, F) keep-masks -> (V, K) scores

Each target-dependent explainer explains this game by its own rule (its
``attribute_fields``): Shapley values, leave-one-field-out, gradient x input or integrated
gradients on the fields' presence. Attention and rollout have no notion of fields; theirs
is explained by Shapley values, and the Explanation says so (``attributes_method``).

``by_position=True`` makes every (position, field) pair a player, for gradient x input per
attribute value over many users (the merchant view, :mod:`recscope.insights`).

The candidate's side is exact whatever the method: its score is the final hidden state
dotted with the sum of its parts, so each part's dot product is its share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recscope.model import SeqRec

CHUNK = 2048  # coalitions per model pass
WHOLE_ITEM = ("id", "text")  # fields that belong to the item as a whole, not to a value


@dataclass
class FieldGame:
    model: SeqRec
    table: torch.Tensor  # (n_items + 1, C) the scoring table
    history: torch.Tensor  # (T,) item indices the model reads
    fields: list[str]  # (P,) the field of each player: "id", an attribute name or "text"
    positions: list[int] | None  # (P,) the position of each player (by_position), else None: all positions
    parts: torch.Tensor  # (P, T, C) each player's part of the history tokens; they sum to the tokens
    events: torch.Tensor | None = None  # (T,) the history's event labels: kept in every coalition

    @property
    def n_players(self) -> int:
        return len(self.fields)

    def tokens(self, masks: torch.Tensor) -> torch.Tensor:
        """(V, P) keep-masks (bool, or weights in [0, 1]) -> (V, T, C) history tokens."""
        return torch.einsum("vp,ptc->vtc", masks.to(self.parts.dtype), self.parts)

    def scores(self, masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(V, P) keep-masks, (K,) targets -> (V, K) scores of every target under every coalition."""
        out = []
        for chunk in masks.split(CHUNK):
            histories = self.history[None, :].expand(len(chunk), -1)
            hidden = self.model(
                histories, tokens=self.tokens(chunk), last_only=True, events=self._events(len(chunk))
            ).hidden[:, -1]  # (V, C)
            out.append(self.model.predict_many(hidden, self.table[targets]))
        return torch.cat(out)

    def _events(self, n: int) -> torch.Tensor | None:
        return None if self.events is None else self.events[None, :].expand(n, -1)

    def paired(self, masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, P) masks, (B,) targets -> (B,) the score of row b's target under row b's coalition,
        differentiable in ``masks`` (the gradient methods)."""
        histories = self.history[None, :].expand(len(masks), -1)
        hidden = self.model(histories, tokens=self.tokens(masks), last_only=True, events=self._events(len(masks)))
        return self.model.predict_paired(hidden.hidden[:, -1], self.table[targets])


@torch.no_grad()
def field_game(
    model: SeqRec,
    table: torch.Tensor,
    history: torch.Tensor,
    by_position: bool = False,
    events: torch.Tensor | None = None,
) -> FieldGame:
    """The field game of ``history`` (T,): one player per field, or per (position, field); the
    history's ``events`` labels (T,) stay in every coalition (they are not an item's field)."""
    parts = model.field_embeddings(history)  # name -> (T, C)
    names = list(parts)
    stacked = torch.stack([parts[n] for n in names])  # (F, T, C)
    if not by_position:
        return FieldGame(model, table, history, names, None, stacked, events)
    T = len(history)
    eye = torch.eye(T, dtype=stacked.dtype)
    # player (t, f) holds field f's part at position t only: (T * F, T, C), position-major
    pieces = torch.einsum("st,ftc->sftc", eye, stacked).reshape(T * len(names), T, -1)
    return FieldGame(model, table, history, names * T, [t for t in range(T) for _ in names], pieces, events)


@torch.no_grad()
def candidate_fields(
    model: SeqRec, history: torch.Tensor, targets: torch.Tensor, events: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[str]]:
    """(K, F) each model field's share of each target's score, and the field names.

    Next item: the exact split (the score is a dot product with the sum of the parts). A rating or
    click head is not additive in its candidate: a field's share is what the prediction loses
    when that part is taken out of the candidate's token."""
    labels = None if events is None else events[None, :]
    hidden = model(history[None, :], events=labels).hidden[0, -1]  # (C,)
    parts = model.field_embeddings(targets)  # name -> (K, C)
    h = hidden.expand(len(targets), -1)
    if model.head is None:
        return torch.stack([model.predict_paired(h, parts[n]) for n in parts], dim=-1), list(parts)
    whole = torch.stack(list(parts.values())).sum(0)  # (K, C)
    full = model.predict_paired(h, whole)
    return torch.stack([full - model.predict_paired(h, whole - parts[n]) for n in parts], dim=-1), list(parts)
