"""Variants of one history, and what the model makes of them: the one place explanations score them.

A variant keeps some of the history's items (a keep-mask, (T,) bool): the dropped items are
taken out of the sequence, not blanked, so later items move up, as a user without those
purchases would look; their event labels go with them. Every explanation that removes items
(leave-one-out, Shapley, counterfactuals, the check behind a sentence, faithfulness) scores its
variants through :func:`variant_hidden` (and :func:`variant_scores`), so all of them read the
event labels the served list read, the item tokens from the same table and the same batched
forward (``SeqRec.last_hidden``). Word attributions vary an item's token instead of removing it
(``tokens``).
"""

from __future__ import annotations

import torch

from recscope.model import SeqRec

CHUNK = 256  # variants per model pass when each variant brings its own tokens


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
