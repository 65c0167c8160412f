"""The contract of recscope.ranking on hand-worked arrays: hiding, ranks, top-K, cut-off, ties."""

from collections import Counter

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recscope.ranking import (
    HIDDEN,
    OUTSIDE_TOP_K,
    OWNED,
    RECOMMENDED,
    Ranking,
    cutoff,
    hide,
    n_visible,
    rank,
    rank_among,
    top_k,
)

INF = float("inf")
# item:               pad  1    2    3    4    5
SCORES = torch.tensor([9.0, 5.0, 3.0, 1.0, 4.0, 2.0])  # padding scored highest: it must never count


def test_hide_padding_always_owned_and_excluded_when_asked_and_leaves_the_input_alone():
    hidden = hide(SCORES, owned=np.array([4]), exclude=[2])
    assert hidden.tolist() == [-INF, 5.0, -INF, 1.0, -INF, 2.0]
    assert SCORES[0] == 9.0, "a copy, not the caller's scores"
    assert hide(SCORES).tolist() == [-INF, 5.0, 3.0, 1.0, 4.0, 2.0]
    assert int(n_visible(hidden)) == 3


def test_hide_per_row_in_a_batch_padded_with_zero():
    batch = SCORES.repeat(2, 1)  # (2, 6)
    hidden = hide(batch, owned=torch.tensor([[0, 1], [3, 4]]), exclude=[5])  # (B, L) rows, shared (L,)
    assert hidden.tolist() == [[-INF, -INF, 3.0, 1.0, 4.0, -INF], [-INF, 5.0, 3.0, -INF, -INF, -INF]]
    assert n_visible(hidden).tolist() == [3, 2]


def test_rank_counts_visible_rivals_above_and_never_the_item_itself():
    # visible order: 1 (5), 4 (4), 2 (3), 5 (2), 3 (1)
    assert rank(SCORES, [1, 4, 2, 5, 3]).tolist() == [0, 1, 2, 3, 4]
    assert rank(SCORES, [2, 3], owned=[1, 4]).tolist() == [0, 2]
    # An owned item is still ranked by its own score among the rest (evaluation's repeat purchase).
    assert rank(SCORES, [4], owned=[4, 1]).tolist() == [0]
    # An item already hidden (-inf) ranks after every visible one.
    assert rank(hide(SCORES, owned=[4]), [4]).tolist() == [4]


def test_rank_of_a_batch_of_variants_one_item_per_row():
    variants = torch.tensor(
        [
            [0.0, 5.0, 3.0, 1.0],  # item 2 second
            [0.0, 1.0, 3.0, 2.0],  # item 2 first
            [0.0, 5.0, 3.0, 4.0],  # item 2 last
        ]
    )
    assert rank(variants, [2, 2, 2]).tolist() == [1, 0, 2]
    assert rank(variants, [2, 2, 2], owned=[1]).tolist() == [0, 0, 1]
    assert rank(variants, [1, 3, 1]).tolist() == [0, 1, 0]


def test_ties_land_uniformly_and_reproducibly():
    tied = torch.tensor([0.0, 2.0, 2.0, 2.0, 1.0])  # items 1-3 tied on top, item 4 below
    assert rank(tied, [4]).tolist() == [3], "ties above an item do not move it"
    first = rank(tied, [1, 2, 3])
    assert torch.equal(first, rank(tied, [1, 2, 3])), "the same scores give the same ranks (seed 0)"
    rng = np.random.default_rng(7)
    places = Counter(int(rank(tied, [2], rng=rng)[0]) for _ in range(3000))
    assert set(places) == {0, 1, 2} and min(places.values()) > 900, places  # each of 3 places ~1000


def test_rank_among_is_higher_plus_a_uniform_share_of_the_tied():
    rivals = torch.tensor([[3.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [2.0, -INF, -INF, 0.0]])
    own = torch.tensor([[1.0], [1.0], [-INF]])
    u = np.random.default_rng(3).random(3)
    expected = np.array([1, 0, 2]) + np.floor(u * (np.array([2, 4, 0]) + 1)).astype(np.int64)
    assert rank_among(rivals, own, np.random.default_rng(3)).tolist() == expected.tolist()


def test_top_k_best_first_of_the_visible_and_the_cutoff_after_it():
    top = top_k(SCORES, 2, owned=[1])
    assert top.indices.tolist() == [4, 2] and top.values.tolist() == [4.0, 3.0]
    assert cutoff(SCORES, 2, owned=[1]) == 2.0, "item 5: the first outside the top-2"
    assert cutoff(SCORES, 2) == 3.0
    # Without ties, an item's rank is its place in the top-K.
    best = top_k(SCORES, 5)
    assert rank(SCORES, best.indices).tolist() == [0, 1, 2, 3, 4]


def test_k_larger_than_what_is_visible_gives_fewer_and_no_cutoff():
    top = top_k(SCORES, 10, owned=[1, 2])
    assert top.indices.tolist() == [4, 5, 3]
    assert cutoff(SCORES, 3, owned=[1, 2]) is None and cutoff(SCORES, 2, owned=[1, 2]) == 1.0


def test_all_hidden():
    top = top_k(SCORES, 3, owned=[1, 2, 3, 4, 5])
    assert top.indices.tolist() == [] and top.values.tolist() == []
    assert cutoff(SCORES, 1, owned=[1, 2, 3, 4, 5]) is None
    assert rank(SCORES, [2], owned=[1, 2, 3, 4, 5]).tolist() == [0], "no visible rival"


def test_top_k_of_a_batch_of_variants():
    variants = torch.tensor([[0.0, 1.0, 3.0, 2.0], [0.0, 3.0, 1.0, 2.0]])
    top = top_k(variants, 2)
    assert top.indices.tolist() == [[2, 3], [1, 3]] and top.values.tolist() == [[3.0, 2.0], [3.0, 2.0]]
    assert top_k(variants, 5, owned=torch.tensor([[1, 0], [0, 0]])).indices.tolist() == [[2, 3], [1, 3]], (
        "as many as the row with the fewest visible items"
    )


def test_top_k_orders_exact_ties_at_random_but_reproducibly():
    tied = torch.tensor([0.0, 1.0, 2.0, 2.0, 2.0, 3.0])  # 5 first, then 2-4 tied, then 1
    assert torch.equal(top_k(tied, 4).indices, top_k(tied, 4).indices), "seed 0 unless told"
    orders = set()
    for seed in range(40):
        idx = top_k(tied, 5, rng=np.random.default_rng(seed)).indices.tolist()
        assert idx[0] == 5 and idx[4] == 1 and sorted(idx[1:4]) == [2, 3, 4]
        orders.add(tuple(idx[1:4]))
    assert len(orders) == 6, "every order of the tied items occurs"


def _sorted_top_k(scores: torch.Tensor, k: int, rng: np.random.Generator | None) -> torch.Tensor:
    """The tie rule written as the whole sort: a stable sort of the shuffled row, best first."""
    scores = hide(scores)
    k = min(k, int(n_visible(scores).min()))
    shuffle = torch.from_numpy((np.random.default_rng(0) if rng is None else rng).permutation(scores.shape[-1]))
    return shuffle[torch.argsort(scores[..., shuffle], dim=-1, descending=True, stable=True)[..., :k]]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from([-np.inf, -1.0, 0.0, -0.0, 0.5, 1.0, 2.0]), min_size=6, max_size=6),
        min_size=1,
        max_size=3,
    ),
    st.integers(0, 8),
    st.one_of(st.none(), st.integers(0, 2**16)),
)
def test_top_k_is_the_whole_sort_of_the_shuffled_row(rows, k, seed):
    """top_k sorts only the items at or above the k-th best score: the same list as sorting all."""
    scores = torch.tensor(rows, dtype=torch.float32)
    if int(n_visible(hide(scores)).min()) == 0:
        return
    rng = lambda: None if seed is None else np.random.default_rng(seed)  # noqa: E731
    expected = _sorted_top_k(scores, k, rng())
    for given_scores in (scores, scores[0]):
        top = top_k(given_scores, k, rng=rng())
        assert torch.equal(top.indices, expected if given_scores.dim() == 2 else _sorted_top_k(scores[0], k, rng()))
        assert torch.equal(top.values, given_scores.gather(-1, top.indices))


# ---------------------------------------------------------------- one history's Ranking
# item:               pad  1    2    3    4    5    6    7
TIED = torch.tensor([9.0, 2.0, 3.0, 2.0, 2.0, 1.0, 2.0, 5.0])  # 7, 2, then 1 3 4 6 tied, then 5


def test_a_ranking_lists_by_score_and_breaks_ties_by_one_shuffle_that_its_ranks_share():
    ranking = Ranking.of(TIED, owned=[2], exclude=[5])
    places = ranking.places  # the tie shuffle: the tied items 1, 3, 4, 6 follow their places in it
    tied_order = sorted([1, 3, 4, 6], key=lambda i: places[i])
    assert ranking.top(10).indices.tolist() == [7, *tied_order]
    assert [ranking.rank_of(i) for i in [7, *tied_order]] == [1, 2, 3, 4, 5]
    assert ranking.top(3).indices.tolist() == [7, *tied_order[:2]], "a shorter list is a prefix"
    assert ranking.top(10).values.tolist() == [5.0, 2.0, 2.0, 2.0, 2.0]
    assert ranking.n_visible == 5 and ranking.cutoff(2) == 2.0 and ranking.cutoff(5) is None
    assert (ranking.rank_of(2), ranking.rank_of(5), ranking.rank_of(0)) == (None, None, None)
    statuses = [ranking.status(i, 3) for i in (7, tied_order[1], tied_order[2], 2, 5)]
    assert statuses == [RECOMMENDED, RECOMMENDED, OUTSIDE_TOP_K, OWNED, HIDDEN]
    assert Ranking.of(TIED, owned=[5], exclude=[5]).status(5, 3) == OWNED, "owned before hidden"
    assert ranking.top(10).indices.tolist() == top_k(TIED, 10, owned=[2], exclude=[5]).indices.tolist(), (
        "the order top_k gives by default"
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 1.0, 2.0]), min_size=2, max_size=12),
    st.lists(st.integers(1, 11), max_size=3),
    st.integers(0, 12),
    st.one_of(st.none(), st.integers(0, 2**16)),
)
def test_an_items_rank_is_its_place_in_the_list_whatever_the_ties(row, owned, k, seed):
    scores = torch.tensor(row, dtype=torch.float32)
    owned = [i for i in owned if i < len(row)]
    ranking = Ranking.of(scores, owned=owned, rng=None if seed is None else np.random.default_rng(seed))
    listed = ranking.top(len(row)).indices.tolist()
    assert len(listed) == ranking.n_visible
    fresh = Ranking.of(scores, owned=owned, rng=None if seed is None else np.random.default_rng(seed))
    # asked before and after the list is drawn: the cached order and the counts agree
    assert [fresh.rank_of(i) for i in range(len(row))] == [ranking.rank_of(i) for i in range(len(row))]
    for place, item in enumerate(listed, 1):
        assert ranking.rank_of(item) == place
        assert ranking.status(item, k) == (RECOMMENDED if place <= k else OUTSIDE_TOP_K)
    for item in set(range(len(row))) - set(listed):
        assert ranking.rank_of(item) is None
        assert ranking.status(item, k) == (OWNED if item in owned else HIDDEN)


def test_a_tied_item_lands_on_each_place_of_its_group_alike():
    tied = torch.tensor([0.0, 2.0, 2.0, 2.0, 1.0])  # items 1-3 tied on top, item 4 below
    rng = np.random.default_rng(7)
    places = Counter(Ranking.of(tied, rng=rng).rank_of(2) for _ in range(3000))
    assert set(places) == {1, 2, 3} and min(places.values()) > 900, places  # each of 3 places ~1000
    assert Ranking.of(tied, rng=rng).rank_of(4) == 4, "ties above an item do not move it"
