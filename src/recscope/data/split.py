"""Train/valid/test splits and vectorised batching of sequences.

A split says which events are trained on, as a per-event mask: a prefix of each user's items
for ``loo`` and ``temporal``; for ``cold_items`` that leave-one-out prefix without any event of
the held-out items. It lists evaluation cases (user, history length, target): the history is
the user's first ``hist_len`` items, every one of them, trained on or not (a held-out item in a
history is read through its attribute and text fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recscope.config import Config
from recscope.data.dataset import Dataset
from recscope.errors import ConfigError


@dataclass
class EvalCases:
    users: np.ndarray  # (n,) dense user indices
    hist_len: np.ndarray  # (n,) history = the user's first hist_len items
    targets: np.ndarray  # (n,) dense item index to predict

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, keep: np.ndarray) -> EvalCases:
        """The cases where the (n,) bool ``keep`` is true, in order."""
        return EvalCases(self.users[keep], self.hist_len[keep], self.targets[keep])

    def sample(self, n: int, seed: int) -> EvalCases:
        """A seeded sample of ``n`` cases, in their order (all of them when ``n`` is 0 or covers them)."""
        if n <= 0 or n >= len(self):
            return self
        keep = np.zeros(len(self), dtype=bool)
        keep[np.random.default_rng(seed).choice(len(self), n, replace=False)] = True
        return self.subset(keep)


@dataclass
class Split:
    kind: str
    train: np.ndarray  # (n_events,) bool: the events trained on, as inputs and as targets
    train_len: np.ndarray  # (n_users,) training events per user (loo, temporal: the prefix length)
    valid: EvalCases
    test: EvalCases
    # (n_cold,) sorted dense indices of the items no training event holds (cold_items); else empty
    cold: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def describe(self) -> str:
        cold = f"; {len(self.cold):,} items held out of training" if len(self.cold) else ""
        return (
            f"{self.kind} split: {int(self.train.sum()):,} training events, "
            f"{len(self.valid):,} valid and {len(self.test):,} test cases{cold}"
        )


def make_split(
    data: Dataset,
    kind: str = "loo",
    valid_q: float = 0.8,
    test_q: float = 0.9,
    cold_share: float = 0.1,
    cold_seed: int = 0,
) -> Split:
    if kind == "loo":
        return leave_one_out(data)
    if kind == "temporal":
        return temporal(data, valid_q, test_q)
    if kind == "cold_items":
        return cold_items(data, cold_share, cold_seed)
    raise ConfigError(f"unknown split {kind!r}", fix='use data.split="loo", "temporal" or "cold_items"')


def split_of(data: Dataset, config: Config) -> Split:
    """The split a run's config defines (its ``data`` section)."""
    d = config.data
    return make_split(data, d.split, d.temporal_valid, d.temporal_test, d.cold_share, d.cold_seed)


def _user_of(data: Dataset) -> np.ndarray:
    """(n_events,) the user of each event."""
    return np.repeat(np.arange(data.n_users), data.lengths)


def _prefix_mask(data: Dataset, train_len: np.ndarray) -> np.ndarray:
    """(n_events,) bool: each user's first ``train_len`` events."""
    user_of = _user_of(data)
    return (np.arange(data.n_events) - data.offsets[user_of]) < train_len[user_of]


def _with_mask(kind: str, data: Dataset, train: np.ndarray, valid: EvalCases, test: EvalCases, cold=None) -> Split:
    train_len = np.bincount(_user_of(data)[train], minlength=data.n_users).astype(np.int64)
    extra = {} if cold is None else {"cold": cold}
    return Split(kind, train, train_len, valid, test, **extra)


def leave_one_out(data: Dataset) -> Split:
    """Last item = test, second-last = valid (SASRec, S3-Rec). Users with < 3 items only train."""
    lengths = data.lengths
    evaluable = np.flatnonzero(lengths >= 3)
    train_len = np.where(lengths >= 3, lengths - 2, lengths)
    starts = data.offsets[evaluable]
    n = lengths[evaluable]
    valid = EvalCases(evaluable, n - 2, data.items[starts + n - 2])
    test = EvalCases(evaluable, n - 1, data.items[starts + n - 1])
    return _with_mask("loo", data, _prefix_mask(data, train_len), valid, test)


def temporal(data: Dataset, valid_q: float, test_q: float) -> Split:
    """Global time split: train before the valid cut; each user's first event in a window is a case."""
    t_valid, t_test = np.quantile(data.timestamps, [valid_q, test_q])
    user_of = _user_of(data)
    position = np.arange(data.n_events) - data.offsets[user_of]
    in_train = data.timestamps < t_valid
    train_len = np.bincount(user_of[in_train], minlength=data.n_users).astype(np.int64)

    def first_in(mask: np.ndarray) -> EvalCases:
        idx = np.flatnonzero(mask & (position > 0))  # needs at least one item of history
        users, first = np.unique(user_of[idx], return_index=True)
        idx = idx[first]
        return EvalCases(users, position[idx], data.items[idx])

    valid = first_in((data.timestamps >= t_valid) & (data.timestamps < t_test))
    test = first_in(data.timestamps >= t_test)
    # Events are in time order per user, so "before the cut" is a prefix of each user's items.
    return _with_mask("temporal", data, _prefix_mask(data, train_len), valid, test)


def cold_items(data: Dataset, share: float, seed: int) -> Split:
    """Leave-one-out cases, with a seeded ``share`` of the items that have events held out of
    training entirely: none of their events is trained on, as input or as target.

    The held-out items are drawn uniformly (``numpy.random.default_rng(seed)``, at least one)
    among the items with events. Valid and test cases are those of leave-one-out, whatever
    their target; their histories may hold held-out items (read through their fields).
    """
    if not 0 < share < 1:
        raise ConfigError(f"data.cold_share={share} is not valid: it must be in (0, 1)", fix="e.g. data.cold_share=0.1")
    seen = np.unique(data.items)
    n_cold = min(max(1, round(share * len(seen))), len(seen))
    cold = np.sort(np.random.default_rng(seed).choice(seen, n_cold, replace=False)).astype(np.int64)
    loo = leave_one_out(data)
    train = loo.train & ~np.isin(data.items, cold)
    return _with_mask("cold_items", data, train, loo.valid, loo.test, cold)


def pad_left(
    data: Dataset, users: np.ndarray, ends: np.ndarray, length: int, source: np.ndarray | None = None
) -> np.ndarray:
    """(n, length) item indices: each user's items before ``ends`` (exclusive), left-padded with 0.

    ``source`` (n_events,) reads another per-event array aligned with the items instead (event
    labels, values), cut and padded the same way (padding 0: a float source's padding is 0.0)."""
    return _pad_left(data.offsets, data.items if source is None else source, users, ends, length)


def _pad_left(offsets: np.ndarray, items: np.ndarray, users: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """pad_left over CSR sequences ``items[offsets[u]:offsets[u + 1]]``."""
    starts = offsets[users]
    absolute_end = starts + ends
    idx = absolute_end[:, None] - length + np.arange(length)[None, :]  # (n, length)
    valid = idx >= starts[:, None]
    return np.where(valid, items[np.clip(idx, 0, max(len(items) - 1, 0))], 0)


def training_windows(data: Dataset, train: np.ndarray, max_len: int, source: np.ndarray | None = None) -> np.ndarray:
    """(W, max_len + 1) windows covering every training transition exactly once.

    ``train`` (n_events,) bool marks the events trained on (``Split.train``): each user's training
    sequence is their marked events in order (the others, e.g. held-out items, are skipped as if
    they never happened). A sequence longer than max_len + 1 is cut into windows from its end
    backwards, so long histories are not truncated away. Inputs are ``w[:, :-1]``, targets ``w[:, 1:]``.
    ``source`` gives the same windows of another per-event array (see :func:`pad_left`).
    """
    users_of = np.repeat(np.arange(data.n_users), data.lengths)[train]
    train_len = np.bincount(users_of, minlength=data.n_users)
    offsets = np.concatenate([[0], np.cumsum(train_len)]).astype(np.int64)
    items = (data.items if source is None else source)[train]
    n_transitions = np.maximum(train_len - 1, 0)
    n_windows = -(-n_transitions // max_len)  # ceil
    users = np.repeat(np.arange(data.n_users), n_windows)
    k = np.arange(len(users)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    ends = train_len[users] - k * max_len
    return _pad_left(offsets, items, users, ends, max_len + 1)
