"""Ranking the catalog: the one place that hides items, ranks them and breaks ties.

Scores are ``(n_items + 1,)`` for one history or ``(B, n_items + 1)`` for a batch (users, or
variants of one history): one column per item, column 0 is padding.

Hidden items are never ranked, never recommended and rival nothing: padding (column 0)
always, the items a user owns when the caller passes ``owned``, and any further ``exclude``
(a live service's dismissed items, say). Hiding sets a score to -inf, so "visible" is
"finite": a scorer that gives an item -inf hides it too.

The tie rule, one for every caller: an item tied exactly with ``n`` visible rivals lands
uniformly at random among them, drawn from a seeded generator (``rng``; a fresh
``default_rng(0)`` when None), so the same scores always give the same answer and no item is
favoured by its index. Why random and not "count only higher scores" or "lower index first":
popularity and co-occurrence kNN give many items equal scores, and either of those would
flatter them (or favour low ids) in the evaluation. The model's float scores practically never
tie exactly (none among the visible scores of 200 users on the synthetic shop); without ties
the rule changes nothing: an item's rank is the number of visible rivals scored higher, and
the top-K is ordered by score.

One history's ranked list is a :class:`Ranking`: its order and every rank it gives come from
ONE draw (a seeded shuffle of the catalog: tied items follow their places in it), so an item's
:meth:`Ranking.rank_of` is its place in :meth:`Ranking.top` whatever the ties, and its status
(recommended, outside the top-K, owned, hidden) follows from that rank. Items added to a live
catalog with the same fields have the same token and often tie exactly. The free functions
:func:`rank` and :func:`top_k` serve batched callers (evaluation ranks each user's held-out item
by :func:`rank_chunks`): each draws its own tie-breaks, so with exact ties an item's
:func:`rank` and its place in a :func:`top_k` list may differ within its group of tied items.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import torch

Items = torch.Tensor | np.ndarray | Sequence[int] | None


def _index(items: Items) -> torch.Tensor | None:
    if items is None:
        return None
    if isinstance(items, torch.Tensor):
        return items.long()
    return torch.from_numpy(np.asarray(items, dtype=np.int64))


def hide(scores: torch.Tensor, owned: Items = None, exclude: Items = None, offset: int = 0) -> torch.Tensor:
    """A copy of ``scores`` (..., N + 1) with padding and every ``owned`` / ``exclude`` item at -inf.

    ``owned`` and ``exclude`` are each None, item indices shared by every row (L,), or for a
    batch one row of indices per score row (B, L), padded with 0 (padding is hidden anyway).
    ``offset``: the scores are a chunk of the catalog, (..., K) for items offset .. offset + K - 1
    (items outside it are hidden elsewhere; padding is item 0, in the first chunk only).
    """
    scores = scores.clone()
    width = scores.shape[-1]
    if offset == 0:
        scores[..., 0] = float("-inf")
    for items in (_index(owned), _index(exclude)):
        if items is None:
            continue
        items = items - offset
        inside = (items >= 0) & (items < width)
        if items.dim() == 1:
            scores[..., items[inside]] = float("-inf")
        else:  # (B, L) per row
            rows = torch.arange(len(items))[:, None].expand_as(items)
            scores[rows[inside], items[inside]] = float("-inf")
    return scores


def n_visible(scores: torch.Tensor) -> torch.Tensor:
    """(...,) how many items of already hidden scores (..., N + 1) are visible."""
    return torch.isfinite(scores).sum(-1)


def _tie_rule(higher: torch.Tensor, tied: torch.Tensor, own: torch.Tensor, rng: np.random.Generator | None):
    """(B,) ranks from the counts of visible rivals scored ``higher`` than and ``tied`` with ``own`` (B,)."""
    return tie_ranks(higher, tied, own, tie_draws(len(higher), rng))


def tie_draws(n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """(n,) the uniform draws the tie rule spends on ``n`` ranks, one per rank: ``rng``'s next n
    (a fresh ``default_rng(0)``'s first n when None, as :func:`rank` and :func:`rank_chunks` draw)."""
    return (np.random.default_rng(0) if rng is None else rng).random(n)


def tie_ranks(higher: torch.Tensor, tied: torch.Tensor, own: torch.Tensor, draws: np.ndarray) -> torch.Tensor:
    """The tie rule on counts: (B,) 0-based ranks of scores ``own`` (B,) with ``higher`` (B,) visible
    rivals scored higher and ``tied`` (B,) tied, each taking its row's uniform draw (``draws`` (B,),
    :func:`tie_draws`) to land among the tied: for callers that count rivals their own way."""
    tied = np.where(torch.isfinite(own).numpy(), tied.numpy(), 0)  # -inf ties only hidden rivals
    return torch.from_numpy(higher.numpy() + np.floor(draws * (tied + 1)).astype(np.int64))


def rank_among(rivals: torch.Tensor, own: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
    """The tie rule: (B,) 0-based ranks of scores ``own`` (B,) against ``rivals`` (B, R).

    Rivals scored higher, plus a uniform share of the tied ones (a target tied with n rivals
    lands on each of the n + 1 places with equal chance). Rivals at -inf are hidden: an ``own``
    of -inf ranks after every visible rival.
    """
    own = own.reshape(-1, 1)  # (B, 1)
    return _tie_rule((rivals > own).sum(1), (rivals == own).sum(1), own[:, 0], rng)


def rank_chunks(
    chunks: Iterable[tuple[int, torch.Tensor]],
    items: torch.Tensor,
    own: torch.Tensor,
    *,
    owned: Items = None,
    exclude: Items = None,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """(B,) 0-based ranks of ``items`` (B,), one per row, scored ``own`` (B,), among the visible
    catalog given in chunks: ``(offset, scores (B, K))`` for items offset .. offset + K - 1, the
    chunks covering the catalog once. The ranks :func:`rank` gives on the whole score matrix:
    the counts of higher and tied rivals add up over the chunks, and the tie rule draws once."""
    higher = torch.zeros(len(items), dtype=torch.long)
    tied = torch.zeros(len(items), dtype=torch.long)
    for offset, scores in chunks:
        rivals = hide(scores, owned, exclude, offset)
        inside = (items >= offset) & (items < offset + scores.shape[-1])
        rivals[inside.nonzero()[:, 0], items[inside] - offset] = float("-inf")  # an item is not its own rival
        higher += (rivals > own[:, None]).sum(1)
        tied += (rivals == own[:, None]).sum(1)
    return _tie_rule(higher, tied, own, rng)


def rank(
    scores: torch.Tensor,
    items: Items,
    *,
    owned: Items = None,
    exclude: Items = None,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """0-based ranks of ``items`` among the visible catalog, by the tie rule.

    ``scores`` (N + 1,) with ``items`` (M,): each item in the one ranking -> (M,).
    ``scores`` (B, N + 1) with ``items`` (B,): one item per row -> (B,).

    Each item is ranked by its own score as given, before hiding (an owned item is still
    ranked: evaluation ranks a repeat purchase among the items not owned), against every
    other visible item; it is never its own rival.
    """
    items = _index(items)
    if scores.dim() == 1:
        scores = scores.expand(len(items), -1)  # (M, N + 1): one row per item
    own = scores.gather(1, items[:, None])[:, 0]  # (B,)
    return rank_chunks([(0, scores)], items, own, owned=owned, exclude=exclude, rng=rng)


def top_k(
    scores: torch.Tensor,
    k: int,
    *,
    owned: Items = None,
    exclude: Items = None,
    rng: np.random.Generator | None = None,
) -> torch.return_types.topk:
    """The ``k`` best visible items, best first: ``(values, indices)``, each (k,) or (B, k).

    Fewer than ``k`` when fewer are visible (in a batch: as many as the row with the fewest
    visible items has). Exact ties are ordered by the tie rule (a seeded random order).
    """
    scores = hide(scores, owned, exclude)
    k = min(k, int(n_visible(scores).min()))
    n = scores.shape[-1]
    # The order is a stable sort of the row shuffled at random: by score, best first, then by
    # each item's place in the shuffle. Only the items scoring at least the k-th best score can
    # be in it, so only they are sorted (a million-item row costs a topk, not a full sort).
    places = _shuffle_places(n) if rng is None else _places(rng.permutation(n))
    rows = scores.reshape(-1, n)
    indices = torch.stack([_best(row, places, k) for row in rows]).reshape(*scores.shape[:-1], k)
    return torch.return_types.topk((scores.gather(-1, indices), indices))


def _best(row: torch.Tensor, places: np.ndarray, k: int, columns: torch.Tensor | None = None) -> torch.Tensor:
    """(k,) the indices of ``row``'s k best items by (score descending, place ascending); entry j
    of ``row`` is column ``columns[j]`` of the catalog (None: column j), placed by ``places``."""
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    threshold = torch.topk(row, k, sorted=False).values.min()  # the k-th best score, finite
    contenders = (row >= threshold).nonzero().flatten()  # k of them, more when the k-th is tied
    where = contenders if columns is None else columns[contenders]
    return contenders[_tie_order(row[contenders], places[where.numpy()], k)]


def _tie_order(scores: torch.Tensor, places: np.ndarray, k: int) -> torch.Tensor:
    """(k,) positions of the ``k`` best of ``scores`` (M,): by score, best first, then by each
    one's place in the shuffle (``places`` (M,)): the order of a stable sort of the shuffled row."""
    return torch.from_numpy(np.lexsort((places, -scores.numpy()))[:k])


def top_k_among(scores: torch.Tensor, items: Items, n_columns: int, k: int) -> torch.return_types.topk:
    """:func:`top_k` (default tie order) of a catalog of ``n_columns`` columns of which only
    ``items`` (M,) can be visible, given their ``scores`` (M,): the answer ``top_k`` gives for
    the full row holding those scores at ``items`` and -inf elsewhere, at the cost of M items
    rather than ``n_columns`` (approximate retrieval scores a candidate pool, recscope.retrieval;
    a counterfactual the items that can reach its item, recscope.explain.variants), and a topk
    of them rather than a sort. Items scored -inf are hidden; ``items`` holds no item twice."""
    items = _index(items)
    visible = torch.isfinite(scores)
    scores, items = scores[visible], items[visible]
    order = _best(scores, _shuffle_places(n_columns), min(k, len(scores)), items)
    return torch.return_types.topk((scores[order], items[order]))


@lru_cache(maxsize=2)
def _shuffle_places(n_columns: int) -> np.ndarray:
    """(n_columns,) each column's place in the shuffle :func:`top_k` draws by default (its first
    draw from ``default_rng(0)``); cached, as drawing it costs ~10 ms per million items."""
    return _places(np.random.default_rng(0).permutation(n_columns))


def _places(shuffle: np.ndarray) -> np.ndarray:
    """A shuffle (a permutation of the columns) -> (n,) each column's place in it."""
    places = np.empty(len(shuffle), dtype=np.int64)
    places[shuffle] = np.arange(len(shuffle))
    return places


def cutoff(scores: torch.Tensor, k: int, *, owned: Items = None, exclude: Items = None) -> float | None:
    """The score of the first visible item outside the top-``k`` of ``scores`` (N + 1,): the
    score an item must beat to enter it; None when ``k`` or fewer items are visible."""
    scores = hide(scores, owned, exclude)
    if int(n_visible(scores)) <= k:
        return None
    return float(torch.topk(scores, k + 1).values[-1])


# What an item is to one ranked list (Ranking.status)
RECOMMENDED = "recommended"  # in the top-K
OUTSIDE_TOP_K = "outside_top_k"  # visible, ranked below the top-K
OWNED = "owned"  # in the history: hidden, so never recommended and without a rank
HIDDEN = "hidden"  # hidden for another reason (``exclude``, e.g. dismissed): no rank


@dataclass(frozen=True)
class Ranking:
    """The ranked catalog of one history, with ONE tie draw shared by its order and its ranks.

    The order is by score, best first, then by each item's place in a seeded shuffle of the
    catalog (``places``); an item's rank is its 1-based place in that order, so
    :meth:`rank_of` is where :meth:`top` lists it, exact ties or not. Build one with :meth:`of`.
    """

    scores: torch.Tensor  # (N + 1,) the scores, hidden items at -inf
    owned: frozenset[int]  # the hidden items the history holds (OWNED rather than HIDDEN)
    places: np.ndarray  # (N + 1,) each item's place in the tie shuffle
    # The longest prefix of the order drawn so far (a cache: its items' ranks are their places in it).
    _order: list[int] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def of(
        cls, scores: torch.Tensor, owned: Items = None, exclude: Items = None, rng: np.random.Generator | None = None
    ) -> Ranking:
        """The ranking of one score row (N + 1,) with padding, ``owned`` and ``exclude`` hidden
        (:func:`hide`). ``rng``: the generator of the tie shuffle (None: the first draw of
        ``default_rng(0)``, so :meth:`top` lists what :func:`top_k` gives by default)."""
        n = scores.shape[-1]
        places = _shuffle_places(n) if rng is None else _places(rng.permutation(n))
        held = frozenset() if owned is None else frozenset(_index(owned).tolist())
        return cls(hide(scores, owned, exclude), held, places)

    @cached_property
    def n_visible(self) -> int:
        """How many items are ranked (the catalog less the hidden items)."""
        return int(n_visible(self.scores))

    def top(self, k: int) -> torch.return_types.topk:
        """The ``k`` best visible items in list order: ``(values, indices)``, each (k,); fewer
        when fewer are visible. Costs a topk over the catalog, not a sort (see :func:`top_k`)."""
        k = min(k, self.n_visible)
        if len(self._order) < k:
            self._order[:] = _best(self.scores, self.places, k).tolist()
        indices = torch.tensor(self._order[:k], dtype=torch.long)
        return torch.return_types.topk((self.scores[indices], indices))

    def rank_of(self, item: int) -> int | None:
        """The item's 1-based place in the list (``top(n)`` for any n at least that lists it
        there); None for a hidden item. Visible rivals scored higher, plus the tied ones that
        come before it in the shuffle."""
        score = self.scores[item]
        if not torch.isfinite(score):
            return None
        if item in self._order:
            return self._order.index(item) + 1
        contenders = (self.scores >= score).nonzero().flatten()  # the item and every rival not below it
        rivals = self.scores[contenders]
        before = torch.from_numpy(self.places[contenders.numpy()] < self.places[item])
        return int((rivals > score).sum() + ((rivals == score) & before).sum()) + 1

    def status(self, item: int, k: int) -> str:
        """RECOMMENDED (in the top-``k``), OUTSIDE_TOP_K, OWNED or HIDDEN (see the constants)."""
        place = self.rank_of(item)
        if place is None:
            return OWNED if item in self.owned else HIDDEN
        return RECOMMENDED if place <= k else OUTSIDE_TOP_K

    def cutoff(self, k: int) -> float | None:
        """The score of the first visible item outside the top-``k`` (:func:`cutoff`)."""
        return float(self.top(k + 1).values[-1]) if self.n_visible > k else None
