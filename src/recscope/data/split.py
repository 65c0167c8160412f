"""Train/valid/test splits and vectorised batching of sequences.

A split says, per user, how long the training prefix is, and lists evaluation cases
(user, history length, target): the history is the user's first ``hist_len`` items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recscope.data.dataset import Dataset
from recscope.errors import ConfigError


@dataclass
class EvalCases:
    users: np.ndarray  # (n,) dense user indices
    hist_len: np.ndarray  # (n,) history = the user's first hist_len items
    targets: np.ndarray  # (n,) dense item index to predict

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class Split:
    kind: str
    train_len: np.ndarray  # (n_users,) items of each user used for training (a prefix)
    valid: EvalCases
    test: EvalCases

    def describe(self) -> str:
        return (
            f"{self.kind} split: {int(self.train_len.sum()):,} training events, "
            f"{len(self.valid):,} valid and {len(self.test):,} test cases"
        )


def make_split(data: Dataset, kind: str = "loo", valid_q: float = 0.8, test_q: float = 0.9) -> Split:
    if kind == "loo":
        return leave_one_out(data)
    if kind == "temporal":
        return temporal(data, valid_q, test_q)
    raise ConfigError(f"unknown split {kind!r}", fix='use data.split="loo" or "temporal"')


def leave_one_out(data: Dataset) -> Split:
    """Last item = test, second-last = valid (SASRec, S3-Rec). Users with < 3 items only train."""
    lengths = data.lengths
    evaluable = np.flatnonzero(lengths >= 3)
    train_len = np.where(lengths >= 3, lengths - 2, lengths)
    starts = data.offsets[evaluable]
    n = lengths[evaluable]
    valid = EvalCases(evaluable, n - 2, data.items[starts + n - 2])
    test = EvalCases(evaluable, n - 1, data.items[starts + n - 1])
    return Split("loo", train_len, valid, test)


def temporal(data: Dataset, valid_q: float, test_q: float) -> Split:
    """Global time split: train before the valid cut; each user's first event in a window is a case."""
    t_valid, t_test = np.quantile(data.timestamps, [valid_q, test_q])
    user_of = np.repeat(np.arange(data.n_users), data.lengths)
    position = np.arange(data.n_events) - data.offsets[user_of]
    in_train = data.timestamps < t_valid
    train_len = np.bincount(user_of[in_train], minlength=data.n_users)

    def first_in(mask: np.ndarray) -> EvalCases:
        idx = np.flatnonzero(mask & (position > 0))  # needs at least one item of history
        users, first = np.unique(user_of[idx], return_index=True)
        idx = idx[first]
        return EvalCases(users, position[idx], data.items[idx])

    valid = first_in((data.timestamps >= t_valid) & (data.timestamps < t_test))
    test = first_in(data.timestamps >= t_test)
    return Split("temporal", train_len.astype(np.int64), valid, test)


def pad_left(
    data: Dataset, users: np.ndarray, ends: np.ndarray, length: int, source: np.ndarray | None = None
) -> np.ndarray:
    """(n, length) item indices: each user's items before ``ends`` (exclusive), left-padded with 0.

    ``source`` (n_events,) reads another per-event array aligned with the items instead (event
    labels, values), cut and padded the same way (padding 0: a float source's padding is 0.0)."""
    source = data.items if source is None else source
    starts = data.offsets[users]
    absolute_end = starts + ends
    idx = absolute_end[:, None] - length + np.arange(length)[None, :]  # (n, length)
    valid = idx >= starts[:, None]
    return np.where(valid, source[np.clip(idx, 0, max(data.n_events - 1, 0))], 0)


def training_windows(
    data: Dataset, train_len: np.ndarray, max_len: int, source: np.ndarray | None = None
) -> np.ndarray:
    """(W, max_len + 1) windows covering every training transition exactly once.

    A prefix longer than max_len + 1 is cut into windows from its end backwards, so long
    histories are not truncated away. Inputs are ``w[:, :-1]``, targets ``w[:, 1:]``.
    ``source`` gives the same windows of another per-event array (see :func:`pad_left`).
    """
    n_transitions = np.maximum(train_len - 1, 0)
    n_windows = -(-n_transitions // max_len)  # ceil
    users = np.repeat(np.arange(data.n_users), n_windows)
    k = np.arange(len(users)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    ends = train_len[users] - k * max_len
    return pad_left(data, users, ends, max_len + 1, source)
