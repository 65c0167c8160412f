"""Top-K metrics as pure functions of the target's 0-based rank (one relevant item per case).

A rank r means r items scored strictly higher than the target. With one relevant item,
Recall@k equals HR@k, and Precision@k is HR@k / k.

The task heads' metrics are pure functions of labels and predictions: RMSE and MAE (ratings),
AUC and log loss (clicks).
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


# ---------------------------------------------------------------------- task heads
def rmse(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(labels) - np.asarray(predicted)) ** 2)))


def mae(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(labels) - np.asarray(predicted))))


def auc(labels: np.ndarray, predicted: np.ndarray) -> float:
    """The chance a random clicked case is scored above a random unclicked one (ties count half):
    the Mann-Whitney statistic from average ranks. NaN when only one class is present."""
    from scipy.stats import rankdata

    labels = np.asarray(labels) > 0.5
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(predicted)  # 1-based, ties averaged
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: np.ndarray, predicted: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``predicted`` (clipped to [eps, 1 - eps])."""
    p = np.clip(np.asarray(predicted, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
