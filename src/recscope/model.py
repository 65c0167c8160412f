"""The whole recommender in one file: a SASRec-style causal Transformer over item tokens.

An item token is the sum of fields: the item-id embedding, one embedding per catalog
attribute (mean over multi-valued cells), and optionally a projected text embedding. The
token of an event in a history adds what the user did (``events``: the event type's embedding,
view / cart / purchase, and in a rating run the rating given), when the data says.
Scores are dot products of the last hidden state with the same fused item table
(input and output embeddings are tied), over the full catalog.

Towers (``cfg.towers``, next-item only): K independent Transformers side by side in one module,
an ensemble trained in one pass. Every width is K x d_model, tower k owning the k-th d_model
columns: embeddings are K tables concatenated, and each linear map and LayerNorm is K maps side by
side (:class:`TowerLinear`, :class:`TowerLayerNorm`). Inside the blocks the hidden state is
tower-major, (K, B, T, d_model), so each map is one batched matrix product over the towers and the
towers' attention runs as K x B sequences; it is laid side by side again on the way out. A block's
K x n_heads attention heads are reported as tower k's n_heads, then tower k+1's. Each tower is
trained on its own loss (the loss is their mean), so they learn as K separately seeded models
would; the score is the mean of the K towers' scores, which is the dot product of the
concatenated query and item token divided by K. One tower is exactly the single model (same
parameters, same names, same numbers).

The task heads (``cfg.head``): "next_item" is that dot product; "rating" and "click" put a
small MLP (:class:`PairHead`) on the pair (hidden state, candidate item token), predicting the
candidate's rating or its click logit. :meth:`SeqRec.predict_many` / :meth:`SeqRec.predict_paired`
are what the task predicts, whatever it is: scoring, ranking and every explainer go through them.

Attention is an output: ``forward(..., output_attentions=True)`` returns every layer's
``(B, H, T, T)`` weights in ``SeqRecOutput.attentions``. Training may use torch's fused
attention kernel; asking for attentions always takes the eager path, and
``tests/test_model.py`` shows both give the same scores.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recscope.config import ModelConfig
from recscope.losses import linear_cross_entropy, reduce, sampled_softmax

if TYPE_CHECKING:
    from recscope.sampling import Negatives


# hidden values (rows x positions x width) per chunk of SeqRec.last_hidden: about what keeps a
# chunk's activations in cache on a 2-core Xeon (measured: 1 and 4 towers, 8 to 50 positions)
LAST_HIDDEN_BUDGET = 2**18


@dataclass
class SeqRecOutput:
    hidden: Tensor  # (B, T, C) final hidden state at every position
    attentions: tuple[Tensor, ...] | None = None  # n_layers x (B, H, T, T), rows sum to 1


def to_towers(x: Tensor, towers: int) -> Tensor:
    """(..., towers x d) side by side -> (towers, ..., d) tower-major, contiguous: tower k's
    columns become ``x[k]``, so every tower's matrix product is one slice of a batched one."""
    return x.unflatten(-1, (towers, -1)).movedim(-2, 0).contiguous()


def from_towers(x: Tensor) -> Tensor:
    """(towers, ..., d) -> (..., towers x d): the inverse of :func:`to_towers`."""
    return x.movedim(0, -2).flatten(-2)


def tower_linear(x: Tensor, weight: Tensor, bias: Tensor | None, towers: int) -> Tensor:
    """``towers`` linear maps side by side on tower-major inputs: x (towers, ..., in), weight
    (towers * out, in) (the maps stacked), bias (towers * out) -> (towers, ..., out); tower k's
    outputs read only ``x[k]``, one batched matrix product for all. One tower is ``F.linear``."""
    if towers == 1:
        return F.linear(x, weight, bias)
    rows = x.reshape(towers, -1, x.shape[-1])  # (towers, N, in)
    maps = weight.view(towers, -1, weight.shape[1]).transpose(1, 2)  # (towers, in, out)
    y = torch.bmm(rows, maps)
    if bias is not None:
        y = y + bias.view(towers, 1, -1)  # cheaper than baddbmm, which first copies the bias to every row
    return y.view(*x.shape[:-1], -1)


class TowerLinear(nn.Linear):
    """A linear map per tower on tower-major inputs (see :func:`tower_linear`), stored as
    ``nn.Linear(in, towers * out)``: one tower is exactly ``nn.Linear``."""

    def __init__(self, towers: int, in_features: int, out_features: int):
        super().__init__(in_features, towers * out_features)
        self.towers = towers

    def forward(self, x: Tensor) -> Tensor:
        return tower_linear(x, self.weight, self.bias, self.towers)


class TowerLayerNorm(nn.LayerNorm):
    """LayerNorm per tower on tower-major inputs (towers, ..., d_model), stored as
    ``nn.LayerNorm(towers * d_model)``: one tower is exactly ``nn.LayerNorm``."""

    def __init__(self, towers: int, d_model: int):
        super().__init__(towers * d_model)
        self.towers = towers

    def forward(self, x: Tensor) -> Tensor:
        if self.towers == 1:
            return super().forward(x)
        shape = (self.towers,) + (1,) * (x.dim() - 2) + (-1,)
        normed = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return normed * self.weight.view(shape) + self.bias.view(shape)


class CausalSelfAttention(nn.Module):
    """Causal self-attention of every tower at once on tower-major inputs: the towers' sequences
    are batched as ``towers x B`` sequences of ``n_heads`` heads each."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads = cfg.n_heads  # per tower
        self.qkv = TowerLinear(cfg.towers, cfg.d_model, 3 * cfg.d_model)  # per tower: q, k, v
        self.proj = TowerLinear(cfg.towers, cfg.d_model, cfg.d_model)
        self.attn_dropout = cfg.attn_dropout
        self.fused = cfg.fused_attention

    def forward(
        self, x: Tensor, allowed: Tensor, need_weights: bool, last_only: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x (towers, B, T, d_model); ``allowed`` (towers x B or 1, 1, T, T) which keys each query
        may see. -> (towers, B, Q, d_model) and, with ``need_weights``, the weights (B, towers x
        n_heads, Q, T): tower k's heads are k * n_heads ... (k + 1) * n_heads - 1.
        ``last_only``: only the last position's output (its query against every key), Q = 1."""
        K, B, T, D = x.shape
        if last_only:
            weight = self.qkv.weight.view(K, 3, D, -1)  # tower, (q, k, v), out, in
            bias = self.qkv.bias.view(K, 3, D)
            q = tower_linear(x[:, :, -1:], weight[:, 0].reshape(K * D, -1), bias[:, 0].reshape(-1), K)
            k, v = tower_linear(x, weight[:, 1:].reshape(2 * K * D, -1), bias[:, 1:].reshape(-1), K).split(D, -1)
            allowed = allowed[..., -1:, :]
        else:
            q, k, v = self.qkv(x).split(D, dim=-1)
        Q = q.shape[2]
        # (towers, B, S, d_model) -> (towers x B, n_heads, S, head width)
        q, k, v = (t.unflatten(-1, (self.n_heads, -1)).transpose(2, 3).flatten(0, 1) for t in (q, k, v))
        p = self.attn_dropout if self.training else 0.0
        if self.fused and not need_weights:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
            weights = None
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (towers x B, n_heads, Q, T)
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
            y = F.dropout(weights, p, self.training) @ v
            weights = weights.unflatten(0, (K, B)).transpose(0, 1).flatten(1, 2)  # (B, towers x n_heads, Q, T)
        y = y.transpose(1, 2).reshape(K, B, Q, D)
        return self.proj(y), weights


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        K = cfg.towers
        self.ln1 = TowerLayerNorm(K, cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = TowerLayerNorm(K, cfg.d_model)
        self.mlp = nn.Sequential(
            TowerLinear(K, cfg.d_model, 4 * cfg.d_model),
            nn.GELU(),
            TowerLinear(K, 4 * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, allowed: Tensor, need_weights: bool, last_only: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x (towers, B, T, d_model) tower-major (see :class:`CausalSelfAttention`)."""
        a, weights = self.attn(self.ln1(x), allowed, need_weights, last_only)
        x = (x[:, :, -1:] if last_only else x) + self.dropout(a)
        x = x + self.mlp(self.ln2(x))
        return x, weights


class PairHead(nn.Module):
    """A task head on (hidden state, candidate token) pairs: an MLP on ``[h, c, h * c]`` plus a
    bias (set from the training data: the mean rating, or the base click log-odds)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * d_model, d_model), nn.GELU(), nn.Linear(d_model, 1))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, hidden: Tensor, candidates: Tensor) -> Tensor:
        """(*S, C), (*S, C) -> (*S,)"""
        return self.mlp(torch.cat([hidden, candidates, hidden * candidates], dim=-1)).squeeze(-1) + self.bias


class SeqRec(nn.Module):
    """Causal Transformer recommender. Item index 0 is padding; real items are 1..n_items."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.width  # towers x d_model
        self.item_emb = nn.Embedding(cfg.n_items + 1, C, padding_idx=0)
        self.id_stand_ins: Tensor | None = None  # (n_items + 1, k) id dropout's borrowed ids (set_id_stand_ins)
        # (E,) event labels whose token is minus its item's (a dismissal: grow_events); None: none
        self.negated_events: Tensor | None = None
        fields_ = cfg.fields if cfg.use_attributes else ()
        self.field_names = [name for name, _, _ in fields_]
        self.field_emb = nn.ModuleList(nn.Embedding(size, C, padding_idx=0) for _, size, _ in fields_)
        for i, (_, _, width) in enumerate(fields_):
            # (n_items + 1, width) value indices per item; set by set_item_fields, saved with the weights
            self.register_buffer(f"field_values_{i}", torch.zeros(cfg.n_items + 1, width, dtype=torch.long))
        if cfg.text_dim:
            self.register_buffer("text_vectors", torch.zeros(cfg.n_items + 1, cfg.text_dim))
            self.text_proj = nn.Linear(cfg.text_dim, C, bias=False)
            # A LayerNorm gives the projected text the id embedding's role as an equal partner:
            # unit-variance per token whatever the projection's scale (model.text_norm).
            self.text_norm = TowerLayerNorm(cfg.towers, cfg.d_model) if cfg.text_norm else None
        if cfg.n_events:
            self.event_emb = nn.Embedding(cfg.n_events, C, padding_idx=0)  # label 0: no type known, adds nothing
        self.pos_emb = nn.Embedding(cfg.max_len, C)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = TowerLayerNorm(cfg.towers, cfg.d_model)
        self.head = PairHead(C) if cfg.head != "next_item" else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()

    def set_item_fields(self, values: dict[str, Tensor], text: Tensor | None = None) -> None:
        """Attach the catalog: per field an (n_items + 1, width) long tensor of value indices."""
        for i, name in enumerate(self.field_names):
            buffer = getattr(self, f"field_values_{i}")
            buffer.copy_(values[name])
            buffer[0] = 0  # padding has no attributes: its token stays zero
        if text is not None and self.cfg.text_dim:
            self.text_vectors.copy_(text)
            self.text_vectors[0] = 0

    def with_items(self, indices: list[int], values: dict[str, Tensor], text: Tensor | None = None) -> SeqRec:
        """:meth:`set_items` on a copy: a model sharing every weight of this one but the per-item
        rows (id embeddings, field values, text vectors), which it copies. This model is left as it
        was, so requests reading it go on undisturbed (the service's catalog snapshots)."""
        new = copy.copy(self)  # shallow: the same modules and tensors ...
        new._parameters, new._buffers, new._modules = dict(self._parameters), dict(self._buffers), dict(self._modules)
        new.item_emb = copy.copy(self.item_emb)  # ... but the item rows are its own
        new.item_emb._parameters = {"weight": nn.Parameter(self.item_emb.weight.detach().clone())}
        for i in range(len(self.field_names)):
            setattr(new, f"field_values_{i}", getattr(self, f"field_values_{i}").clone())
        if self.cfg.text_dim:
            new.text_vectors = self.text_vectors.clone()
        new.set_items(indices, values, text)
        return new

    def set_items(self, indices: list[int], values: dict[str, Tensor], text: Tensor | None = None) -> None:
        """Give the items at ``indices`` the attribute values ``values`` (per field (len(indices),
        width)) and text vectors ``text`` ((len(indices), text_dim), when the model reads text),
        growing the catalog when an index is past its end. A new item's id embedding starts at
        zero: its token is the sum of its attribute and text embeddings, so it is scored from its
        fields until training gives it an id embedding of its own."""
        grow = max(indices, default=0) - self.cfg.n_items
        if grow > 0:
            weight = self.item_emb.weight
            self.item_emb.weight = nn.Parameter(torch.cat([weight.data, weight.new_zeros(grow, weight.shape[1])]))
            self.item_emb.num_embeddings += grow
            for i in range(len(self.field_names)):
                buffer = getattr(self, f"field_values_{i}")
                setattr(self, f"field_values_{i}", torch.cat([buffer, buffer.new_zeros(grow, buffer.shape[1])]))
            if self.cfg.text_dim:
                self.text_vectors = torch.cat([self.text_vectors, self.text_vectors.new_zeros(grow, self.cfg.text_dim)])
            self.cfg = dataclasses.replace(self.cfg, n_items=self.cfg.n_items + grow)
            self.id_stand_ins = None  # rows of the old table: set again before training with id dropout
        rows = torch.as_tensor(indices, dtype=torch.long)
        for i, name in enumerate(self.field_names):
            getattr(self, f"field_values_{i}")[rows] = values[name]
        if text is not None and self.cfg.text_dim:
            self.text_vectors[rows] = text.to(self.text_vectors.dtype)

    @torch.no_grad()
    def grow_events(self, n_events: int, negated: list[int] = ()) -> None:
        """Make the event embedding know ``n_events`` labels (a fine-tune's new label "dismiss"),
        in place: the new rows start at zero, so every history without them is read exactly as
        before; a model that read no label gets an embedding whose label 0 (no type known) adds
        nothing, as it always does. ``negated``: the labels whose token is minus its item's token
        (plus the label's embedding), so that a dismissal points away from what its item stands
        for (its brand, its category) from the first step, where the item's own token would read
        as one more item of that brand (saved with the version: ``versions.event_labels``)."""
        self.negated_events = torch.tensor(sorted(negated), dtype=torch.long) if negated else None
        if n_events <= self.cfg.n_events:
            return
        C = self.cfg.width
        weight = self.event_emb.weight.detach() if self.cfg.n_events else torch.zeros(1, C)
        grown = nn.Embedding(n_events, C, padding_idx=0).to(self.pos_emb.weight.device)
        grown.weight.zero_()
        grown.weight[: len(weight)] = weight
        self.event_emb = grown
        self.cfg = dataclasses.replace(self.cfg, n_events=n_events)

    @torch.no_grad()
    def borrow_ids(self, rows: Tensor, known: Tensor, chunk: int = 65_536) -> None:
        """Give the items at ``rows``, which have no id embedding (added after training, or held
        out of it), the mean id embedding of their ``cfg.cold_neighbours`` nearest ``known``
        items by content (:meth:`content_neighbours`), times ``cfg.cold_id_scale``.

        Why: a trained item's score has an id part its fields do not carry, so an item scored
        from its fields alone is outranked by every trained item (on Beauty held-out items reached
        the top 10 in 1 case of 2,325). Borrowing the id of the items that look like it puts it
        on their scale; its own id embedding replaces the borrowed one once training sees it.
        Id dropout with ``cold_ids=neighbours`` trains with these stand-ins (:meth:`set_id_stand_ins`)."""
        neighbours = self.content_neighbours(rows, known, chunk=chunk)
        if neighbours is not None:
            self.item_emb.weight[rows] = self.item_emb.weight[neighbours].mean(1) * self.cfg.cold_id_scale

    @torch.no_grad()
    def content_neighbours(
        self, rows: Tensor, known: Tensor, chunk: int = 65_536, exclude_self: bool = False
    ) -> Tensor | None:
        """(R,) items -> (R, k) their ``cfg.cold_neighbours`` nearest ``known`` items by content:
        the cosine of their tokens without the id part (attributes and text). ``exclude_self``:
        an item is never its own neighbour (for rows that are also known). ``known`` are scanned
        ``chunk`` at a time, so a million-item catalog costs no more memory. None when there is
        nothing to compare: no rows, no known item, or no content but ids."""
        k = min(self.cfg.cold_neighbours, len(known) - int(exclude_self))
        if not len(rows) or k <= 0 or not (self.field_names or self.cfg.text_dim):
            return None

        def content(items: Tensor) -> Tensor:
            parts = self.field_embeddings(items)
            return F.normalize(torch.stack([v for name, v in parts.items() if name != "id"]).sum(0), dim=-1)

        wanted = content(rows)  # (R, C)
        best_sim = torch.full((len(rows), k), float("-inf"), device=wanted.device)
        best_item = torch.zeros(len(rows), k, dtype=torch.long, device=wanted.device)
        for part in known.split(chunk):
            sim = wanted @ content(part).T  # (R, P)
            if exclude_self:
                sim = sim.masked_fill(rows[:, None] == part[None, :], float("-inf"))
            sims = torch.cat([best_sim, sim], dim=1)
            items = torch.cat([best_item, part[None].expand(len(rows), -1)], dim=1)
            best_sim, at = sims.topk(k, dim=1)
            best_item = items.gather(1, at)
        return best_item

    def set_id_stand_ins(self, known: Tensor | None, chunk: int = 4096) -> None:
        """Id dropout trains the way an item without an id is served: with ``cfg.cold_ids =
        "neighbours"``, a dropped item's id embedding is replaced by the mean id embedding of its
        nearest ``known`` (trained) items by content, times ``cfg.cold_id_scale`` (its own
        excluded), not by zero; the model learns what a borrowed id is worth, so an item that has
        only a borrowed one scores on the trained items' scale. Training calls this once an epoch
        (content embeddings move); ``known`` None clears it (dropped ids are then zeroed). Not
        saved with the weights. Rows are matched ``chunk`` at a time."""
        self.id_stand_ins = None
        if known is None or self.cfg.cold_ids != "neighbours":
            return
        rows = torch.arange(1, self.cfg.n_items + 1, device=known.device)
        parts = [self.content_neighbours(r, known, exclude_self=True) for r in rows.split(chunk)]
        if parts and parts[0] is not None:
            self.id_stand_ins = torch.cat([torch.zeros_like(parts[0][:1]), *parts])  # row 0: padding

    # ------------------------------------------------------------------ item tokens
    def field_embeddings(self, items: Tensor) -> dict[str, Tensor]:
        """Each field's contribution to the tokens of ``items`` (any shape S): name -> (*S, C)."""
        parts = {"id": self.item_emb(items)}
        for i, name in enumerate(self.field_names):
            values = getattr(self, f"field_values_{i}")[items]  # (*S, width)
            emb = self.field_emb[i](values)  # (*S, width, C), padding rows are zero
            count = (values > 0).sum(-1, keepdim=True).clamp(min=1)
            parts[name] = emb.sum(-2) / count
        if self.cfg.text_dim:
            text = self.text_proj(self.text_vectors[items])
            if self.text_norm is not None:
                text = from_towers(self.text_norm(to_towers(text, self.cfg.towers))) * self.cfg.text_scale
            parts["text"] = text
        return parts

    def item_tokens(self, items: Tensor) -> Tensor:
        """(*S) item indices -> (*S, C) fused item tokens (sum of the fields)."""
        parts = self.field_embeddings(items)
        return torch.stack(list(parts.values())).sum(0)

    def item_table(self) -> Tensor:
        """(n_items + 1, C) the scoring table: every item's fused token."""
        return self.item_tokens(torch.arange(self.cfg.n_items + 1, device=self.item_emb.weight.device))

    # ------------------------------------------------------------------ encoder
    def forward(
        self,
        items: Tensor,
        tokens: Tensor | None = None,
        output_attentions: bool = False,
        last_only: bool = False,
        events: Tensor | None = None,
    ) -> SeqRecOutput:
        """items: (B, T) left-padded item indices, or with towers (towers, B, T): each tower its own
        histories (training with train.tower_batches=own). ``tokens`` (B, T, C) replaces the item
        tokens (used by gradient explainers; with per-tower items (B, T, C) already each tower's own,
        or (towers, B, T, C)); padding positions are still taken from ``items``.
        ``last_only``: the last block computes the last position only (``hidden`` is (B, 1, C)):
        all that scoring the next item needs, at about half the cost of that block.
        ``events``: event labels aligned with ``items`` (None: all 0, no type known); their
        embedding is added to the tokens (also to ``tokens`` given)."""
        own = items.dim() == 3  # each tower its own histories
        T = items.shape[-1]
        if T > self.cfg.max_len:
            items = items[..., -self.cfg.max_len :]
            tokens = tokens[..., -self.cfg.max_len :, :] if tokens is not None else None
            events = events[..., -self.cfg.max_len :] if events is not None else None
            T = self.cfg.max_len
        valid = items > 0  # (B, T), or (towers, B, T)
        if tokens is None:
            tokens = self.item_tokens(items)
        if own and tokens.dim() == 4:
            tokens = self._own_columns(tokens)
        if events is not None and self.negated_events is not None:  # e.g. a dismissal: away from its item
            tokens = torch.where(torch.isin(events, self.negated_events)[..., None], -tokens, tokens)
        if events is not None and self.cfg.n_events:
            tokens = tokens + (self.tower_rows(self.event_emb.weight, events) if own else self.event_emb(events))
        pos = torch.arange(self.cfg.max_len - T, self.cfg.max_len, device=items.device)
        # the blocks work tower-major, (towers, B, T, d_model): one batched matrix product per map
        x = to_towers(tokens * math.sqrt(self.cfg.d_model) + self.pos_emb(pos), self.cfg.towers)
        keys = valid if own else valid[None]  # (towers or 1, B, T): tower k's own padding, or the shared one
        x = self.emb_dropout(x * keys[..., None])
        causal = torch.ones(T, T, dtype=torch.bool, device=items.device).tril()
        # Padding keys are hidden; a padding query may see itself so no softmax row is empty.
        allowed = (causal & keys[..., None, :]) | torch.eye(T, dtype=torch.bool, device=items.device)
        allowed = allowed.expand(self.cfg.towers, -1, -1, -1).flatten(0, 1)[:, None]  # (towers x B, 1, T, T)
        attentions = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x, weights = block(x, allowed, output_attentions, last_only and i == last and not output_attentions)
            if output_attentions:
                attentions.append(weights)
        hidden = from_towers(self.ln_f(x))
        return SeqRecOutput(hidden, tuple(attentions) if output_attentions else None)

    # ------------------------------------------------------------------ train / predict
    def predict_many(self, hidden: Tensor, candidates: Tensor) -> Tensor:
        """(V, C) hidden states, (K, C) candidate tokens -> (V, K) what the task predicts for every
        pair: the next-item score, the rating, or the click logit."""
        if self.head is None:
            return self._tower_mean(hidden @ candidates.T)
        V, K = len(hidden), len(candidates)
        return self.head(hidden[:, None, :].expand(V, K, -1), candidates[None, :, :].expand(V, K, -1))

    def predict_paired(self, hidden: Tensor, candidates: Tensor) -> Tensor:
        """(B, C) hidden states, (B, C) candidate tokens -> (B,) the task's prediction for row b's pair."""
        if self.head is None:
            return self._tower_mean((hidden * candidates).sum(-1))
        return self.head(hidden, candidates)

    def _tower_mean(self, dot: Tensor) -> Tensor:
        """Dot products over all towers' columns -> the mean of the towers' scores."""
        return dot if self.cfg.towers == 1 else dot / self.cfg.towers

    def _tower_cases(self, hidden: Tensor, inputs: Tensor, targets: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per tower: its columns of ``hidden`` (B, T, towers x d_model) at the positions with a next
        item to predict, (n, d_model), and those items (n,). ``inputs`` and ``targets``: (B, T)
        shared by the towers, or (towers, B, T), each tower's own batch. One tower: the whole width."""
        d = self.cfg.d_model
        mask = (inputs > 0) & (targets > 0)  # logits only where there is something to predict
        if inputs.dim() == 2:
            y = targets[mask]
            return [(h, y) for h in hidden[mask].split(d, dim=-1)]
        return [(h[m], t[m]) for h, m, t in zip(hidden.split(d, dim=-1), mask, targets, strict=True)]

    @staticmethod
    def _tower_mean_loss(losses: list[Tensor], reduction: str) -> Tensor:
        """Each tower's per-row losses reduced, then averaged over the towers: each tower learns
        from its own loss, as a model trained alone would."""
        reduced = [reduce(loss, reduction) for loss in losses]
        if reduction == "none" and len({len(r) for r in reduced}) > 1:
            raise ValueError("reduction='none' needs the towers to share their batch (inputs (B, T))")
        return reduced[0] if len(reduced) == 1 else torch.stack(reduced).mean(0)

    def loss(
        self,
        inputs: Tensor,
        targets: Tensor,
        negatives: Negatives | None = None,
        reduction: str = "mean",
        unseen: Tensor | None = None,
        id_dropped: Tensor | None = None,
        events: Tensor | None = None,
    ) -> Tensor:
        """Next-item cross-entropy at every real position (inputs and targets (B, T), or with
        towers (towers, B, T): each tower its own batch, train.tower_batches=own).

        Full softmax over the catalog by default. With ``negatives`` (:class:`recscope.sampling.Negatives`)
        a sampled softmax over the target and those shared candidates, log-Q corrected
        (:func:`sampled_softmax`): only the tokens of the inputs, targets and candidates are
        computed, so a step's cost does not grow with the catalog.
        ``unseen`` (n_items + 1,) bool marks items training must not see (held-out cold items,
        never a target here): they get no logit, so they are not pushed down as negatives and
        their id embeddings get no gradient. ``id_dropped`` (n_items + 1,) bool: items whose id
        embedding is left out of their token this step, as inputs and as candidates (id dropout:
        the model learns to score an item from its fields alone, as it must a new item).
        """
        if negatives is None:
            table = self.item_table()  # (n_items + 1, C)
            if id_dropped is not None:
                table = table + self._id_shift(torch.arange(len(table), device=table.device), id_dropped)
            # the inputs' tokens are rows of the table the softmax needs anyway: fused once per step
            hidden = self(inputs, tokens=self.tower_rows(table, inputs), events=events).hidden
            # softmax over table[1:] (padding is never a candidate), fused with its matmul (recscope.losses)
            hidden_columns = None if unseen is None else unseen[1:]
            cases = self._tower_cases(hidden, inputs, targets)
            columns = self._columns(table[1:], len(cases))
            losses = [
                linear_cross_entropy(h, c, y - 1, hidden_columns) for (h, y), c in zip(cases, columns, strict=True)
            ]
            return self._tower_mean_loss(losses, reduction)
        tokens = self._tokens_without(id_dropped)
        hidden = self(inputs, tokens=tokens(inputs) if id_dropped is not None else None, events=events).hidden
        candidates = negatives.items  # (K,)
        candidate_log_q = negatives.log_q(candidates)
        hidden_columns = None if unseen is None else unseen[candidates]
        cases = self._tower_cases(hidden, inputs, targets)
        candidate_columns = self._columns(tokens(candidates), len(cases))
        if inputs.dim() == 2:  # one batch: the targets' tokens once, split among the towers
            target_columns = self._columns(tokens(cases[0][1]), len(cases))
        else:
            target_columns = [self._columns(tokens(y), len(cases))[k] for k, (_, y) in enumerate(cases)]
        losses = [
            sampled_softmax(
                h,
                y,
                target_tokens,
                negatives.log_q(y),
                candidates,
                candidate_tokens,
                candidate_log_q,
                hidden_columns,
                "none",
            )
            for (h, y), target_tokens, candidate_tokens in zip(cases, target_columns, candidate_columns, strict=True)
        ]
        return self._tower_mean_loss(losses, reduction)

    def _columns(self, wide: Tensor, towers: int) -> list[Tensor]:
        """(..., towers x d_model) -> each tower's (..., d_model) columns (one tower: [wide])."""
        return list(wide.split(self.cfg.d_model, dim=-1)) if towers > 1 else [wide]

    def _own_columns(self, wide: Tensor) -> Tensor:
        """(towers, *S, towers x d_model) -> (*S, towers x d_model): tower k's columns of ``wide[k]``."""
        K = self.cfg.towers
        return wide.unflatten(-1, (K, -1)).diagonal(dim1=0, dim2=-2).movedim(-1, -2).flatten(-2)

    def tower_rows(self, wide: Tensor, items: Tensor) -> Tensor:
        """Rows of ``wide`` (N, towers x d_model) for ``items``: (B, T) -> (B, T, C), all columns
        of each item's row; (towers, B, T), each tower's own items -> (B, T, C), tower k's columns
        of the rows of its items ``items[k]`` (train.tower_batches=own)."""
        if items.dim() == 2:
            return wide[items]
        K = self.cfg.towers
        tower = torch.arange(K, device=items.device).view(K, 1, 1)
        return wide.view(len(wide), K, -1)[items, tower].movedim(0, -2).flatten(-2)

    def _tokens_without(self, id_dropped: Tensor | None) -> Callable[[Tensor], Tensor]:
        """items (*S) -> (*S, C) their tokens, the ``id_dropped`` items' without their own id
        embedding (zero, or the stand-in of :meth:`set_id_stand_ins`)."""
        if id_dropped is None:
            return self.item_tokens
        return lambda items: self.item_tokens(items) + self._id_shift(items, id_dropped)

    def _id_shift(self, items: Tensor, id_dropped: Tensor) -> Tensor:
        """items (*S) -> (*S, C): what id dropout adds to their tokens: for a dropped item its
        stand-in id minus its own (minus its own when there is no stand-in), else zero."""
        own = self.item_emb(items)
        if self.id_stand_ins is None:
            return -own * id_dropped[items, None]
        borrowed = self.item_emb(self.id_stand_ins[items]).mean(-2) * self.cfg.cold_id_scale
        return (borrowed - own) * id_dropped[items, None]

    def rating_loss(
        self, inputs: Tensor, targets: Tensor, ratings: Tensor, events: Tensor | None = None, reduction: str = "mean"
    ) -> Tensor:
        """Squared error of the next item's predicted rating at every position whose next item has
        one (inputs, targets (B, T) items; ratings (B, T) the targets' ratings, NaN = none)."""
        hidden = self(inputs, events=events).hidden  # (B, T, C)
        mask = (inputs > 0) & (targets > 0) & torch.isfinite(ratings)
        predicted = self.predict_paired(hidden[mask], self.item_tokens(targets[mask]))  # (n,)
        return F.mse_loss(predicted, ratings[mask].to(predicted.dtype), reduction=reduction)

    def click_loss(
        self, histories: Tensor, shown: Tensor, clicked: Tensor, events: Tensor | None = None, reduction: str = "mean"
    ) -> Tensor:
        """Binary cross-entropy of clicks: ``histories`` (B, T) the history each item was shown
        after, ``shown`` (B,) the items, ``clicked`` (B,) 1.0 / 0.0."""
        hidden = self.query(histories, events)  # (B, C)
        logits = self.predict_paired(hidden, self.item_tokens(shown))
        return F.binary_cross_entropy_with_logits(logits, clicked.to(logits.dtype), reduction=reduction)

    @torch.no_grad()
    def last_hidden(
        self, items: Tensor, table: Tensor | None = None, budget: int = LAST_HIDDEN_BUDGET, events: Tensor | None = None
    ) -> Tensor:
        """(B, T) left-padded histories -> (B, C): ``self(items).hidden[:, -1]``, faster for many
        histories of mixed length (the variants explainers score): sorted by length and cut into
        chunks of about ``budget`` hidden values (rows x longest x width, so a chunk's activations
        stay in cache whatever the towers and lengths), each cut to its longest (positions count
        from the right, so left padding changes nothing), with the tokens read from ``table`` (the
        item table) instead of fused again. ``events`` (B, T) are the histories' event labels
        (None: none known)."""
        lengths = (items > 0).sum(1).clamp(min=1)
        order = lengths.argsort()
        longest = lengths[order].tolist()
        positions = max(budget // self.cfg.width, 1)  # rows x longest per chunk
        out = items.new_empty((len(items), self.cfg.width), dtype=self.pos_emb.weight.dtype)
        start = 0
        while start < len(order):  # the most rows from ``start`` whose rows x longest fit
            end = min(start + max(positions // longest[start], 1), len(order))
            while end - start > 1 and (end - start) * longest[end - 1] > positions:
                end = start + max(positions // longest[end - 1], 1)
            chunk, width = order[start:end], longest[end - 1]
            start = end
            seqs = items[chunk, -width:]
            tokens = None if table is None else table[seqs]
            labels = None if events is None else events[chunk, -width:]
            out[chunk] = self(seqs, tokens=tokens, last_only=True, events=labels).hidden[:, -1]
        return out

    def query(self, items: Tensor, events: Tensor | None = None, table: Tensor | None = None) -> Tensor:
        """(B, T) histories (and their (B, T) event labels) -> (B, C) the last hidden state: what
        every item is scored against as the next one (predict_many / predict_paired). ``table``:
        the item table (:meth:`item_table`), when the caller holds it: the history's tokens are
        read from it rather than fused again (with text, fusing is a projection per token)."""
        tokens = None if table is None else table[items]
        return self(items, tokens=tokens, last_only=True, events=events).hidden[:, -1]

    @torch.no_grad()
    def score(self, items: Tensor, table: Tensor | None = None, events: Tensor | None = None) -> Tensor:
        """(B, T) histories (and their (B, T) event labels) -> (B, n_items + 1) the task's prediction
        for every item as the next (its score, rating or click logit); column 0 is -inf."""
        table = self.item_table() if table is None else table
        hidden = self.query(items, events, table)  # (B, C)
        scores = self.predict_many(hidden, table)
        scores[:, 0] = float("-inf")
        return scores
