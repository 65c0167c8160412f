"""Top-K metrics against numbers worked out by hand.

A rank is 0-based: the number of candidates scored strictly higher than the one relevant item.
"""

import math

import numpy as np
import pytest

from recscope.metrics import FUNCTIONS, NAMES, all_metrics, f1, hit_rate, mrr, ndcg, precision, recall

# Five cases: ranks 0, 2 and 9 are inside the top 10, ranks 10 and 25 are not.
RANKS = np.array([0, 2, 9, 10, 25])


@pytest.mark.parametrize(
    ("rank", "k", "expected"),
    [
        (0, 10, 1.0),  # 1 / log2(0 + 2) = 1
        (2, 10, 0.5),  # 1 / log2(2 + 2) = 1 / 2
        (6, 10, 1 / 3),  # 1 / log2(6 + 2) = 1 / 3
        (9, 10, 1 / math.log2(11)),  # the last rank inside the cut-off still counts
        (10, 10, 0.0),  # first rank outside the cut-off
        (2, 3, 0.5),
        (3, 3, 0.0),
    ],
)
def test_ndcg_of_one_case(rank, k, expected):
    assert ndcg(np.array([rank]), k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rank", "k", "expected"),
    [(0, 5, 1.0), (1, 5, 0.5), (3, 5, 0.25), (4, 5, 0.2), (5, 5, 0.0)],  # 1 / (rank + 1) inside k
)
def test_mrr_of_one_case(rank, k, expected):
    assert mrr(np.array([rank]), k) == pytest.approx(expected)


def test_hit_rate_counts_ranks_strictly_below_k():
    # ranks < 10: 0, 2, 9 -> 3 of 5
    assert hit_rate(RANKS, 10) == pytest.approx(0.6)
    # ranks < 11: 0, 2, 9, 10 -> 4 of 5
    assert hit_rate(RANKS, 11) == pytest.approx(0.8)
    # ranks < 1: only 0 -> 1 of 5
    assert hit_rate(RANKS, 1) == pytest.approx(0.2)
    assert hit_rate(np.array([25, 30]), 20) == 0.0


def test_every_metric_on_a_batch_at_10():
    # NDCG: (1/log2(2) + 1/log2(4) + 1/log2(11) + 0 + 0) / 5 = (1 + 0.5 + 0.289065) / 5 = 0.357813
    assert ndcg(RANKS, 10) == pytest.approx(0.357813, abs=1e-6)
    # MRR: (1/1 + 1/3 + 1/10 + 0 + 0) / 5 = 1.433333 / 5 = 0.286667
    assert mrr(RANKS, 10) == pytest.approx(0.286667, abs=1e-6)
    # One relevant item per case: Recall@10 = HR@10 = 0.6, Precision@10 = 0.6 / 10 = 0.06
    assert recall(RANKS, 10) == pytest.approx(0.6)
    assert precision(RANKS, 10) == pytest.approx(0.06)
    # F1 = 2 * 0.06 * 0.6 / (0.06 + 0.6) = 0.072 / 0.66 = 0.109091
    assert f1(RANKS, 10) == pytest.approx(0.109091, abs=1e-6)


def test_every_metric_on_a_batch_at_1():
    # Only rank 0 is inside k = 1: every metric is 1/5, and F1 = 2 * 0.2 * 0.2 / 0.4 = 0.2
    for name in NAMES:
        assert FUNCTIONS[name](RANKS, 1) == pytest.approx(0.2), name


def test_nobody_hits_gives_zero_everywhere_and_f1_does_not_divide_by_zero():
    ranks = np.array([50, 70])
    for name in NAMES:
        assert FUNCTIONS[name](ranks, 10) == 0.0, name


def test_metrics_grow_with_k_and_stay_in_range():
    for name in ("HR", "NDCG", "MRR", "Recall"):
        values = [FUNCTIONS[name](RANKS, k) for k in (1, 3, 5, 10, 20, 30)]
        assert values == sorted(values), name
        assert all(0.0 <= v <= 1.0 for v in values), name
    # NDCG and MRR never exceed HR: each hit gains at most 1
    for k in (1, 5, 10, 20):
        assert ndcg(RANKS, k) <= hit_rate(RANKS, k) and mrr(RANKS, k) <= hit_rate(RANKS, k)


def test_all_metrics_names_every_metric_at_every_cutoff():
    result = all_metrics([0, 2, 9, 10, 25], ks=(1, 10))  # a plain list is accepted
    assert set(result) == {f"{name}@{k}" for name in NAMES for k in (1, 10)}
    assert result["NDCG@10"] == pytest.approx(0.357813, abs=1e-6)
    assert result["HR@1"] == pytest.approx(0.2)
    assert result["Precision@10"] == pytest.approx(0.06)


def test_all_metrics_default_cutoffs_and_empty_input():
    assert set(all_metrics(RANKS)) == {f"{name}@{k}" for name in NAMES for k in (5, 10, 20)}
    assert all_metrics(np.array([], dtype=np.int64)) == {}


def test_ties_are_broken_at_random_not_in_the_targets_favour():
    """A scorer that gives every item the same score must not look perfect."""
    import torch

    from recscope.data import load_dataset, make_split
    from recscope.evaluate import rank_targets

    data = load_dataset("synthetic:users=300")
    cases = make_split(data).test

    def flat(histories):
        return torch.zeros(len(histories), data.n_items + 1)

    def winner(histories):
        return flat(histories).scatter(1, torch.from_numpy(cases.targets[: len(histories)])[:, None], 1.0)

    ranks = rank_targets(flat, data, cases, max_len=20)
    # each target lands uniformly among the ~n_items candidates left after its history
    assert 0.35 * data.n_items < ranks.mean() < 0.65 * data.n_items
    assert (ranks < 10).mean() < 0.1
    sampled = rank_targets(flat, data, cases, max_len=20, protocol="sampled")
    assert 35 < sampled.mean() < 65 and sampled.max() <= 99
    # ties only: a clear winner still ranks first
    assert (rank_targets(winner, data, cases, max_len=20, batch_size=len(cases)) == 0).all()
