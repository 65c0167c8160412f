"""Top-K metrics as pure functions of the target's 0-based rank (one relevant item per case).

A rank r means r items scored strictly higher than the target. With one relevant item,
Recall@k equals HR@k, and Precision@k is HR@k / k.
"""

from __future__ import annotations

import numpy as np

NAMES = ("HR", "NDCG", "MRR", "Recall", "Precision", "F1")


def hit_rate(ranks: np.ndarray, k: int) -> float:
    return float((ranks < k).mean())


def ndcg(ranks: np.ndarray, k: int) -> float:
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(gains.mean())


def mrr(ranks: np.ndarray, k: int) -> float:
    return float(np.where(ranks < k, 1.0 / (ranks + 1.0), 0.0).mean())


def recall(ranks: np.ndarray, k: int) -> float:
    return hit_rate(ranks, k)


def precision(ranks: np.ndarray, k: int) -> float:
    return hit_rate(ranks, k) / k


def f1(ranks: np.ndarray, k: int) -> float:
    p, r = precision(ranks, k), recall(ranks, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


FUNCTIONS = {"HR": hit_rate, "NDCG": ndcg, "MRR": mrr, "Recall": recall, "Precision": precision, "F1": f1}


def all_metrics(ranks: np.ndarray, ks: tuple[int, ...] = (5, 10, 20)) -> dict[str, float]:
    """{"HR@10": ..., "NDCG@10": ..., ...} for every metric and cut-off."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return {}
    return {f"{name}@{k}": fn(ranks, k) for k in ks for name, fn in FUNCTIONS.items()}
