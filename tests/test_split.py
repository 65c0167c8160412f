"""Splits and batching: leave-one-out, the global temporal split, left padding and training windows."""

from collections import Counter

import numpy as np
import pytest

from recscope.data import Dataset, load_dataset, make_split, pad_left, training_windows
from recscope.data.split import leave_one_out, temporal
from recscope.errors import ConfigError


def dataset(sequences: list[list[int]], times: list[list[float]] | None = None) -> Dataset:
    """A Dataset whose dense item indices are the given ones (items are unique across users here)."""
    n_items = max(max(s) for s in sequences if s)
    lengths = [len(s) for s in sequences]
    flat_times = [t for ts in times for t in ts] if times else [float(i) for n in lengths for i in range(n)]
    return Dataset(
        name="toy",
        user_ids=[f"u{u}" for u in range(len(sequences))],
        item_ids=[""] + [f"i{i}" for i in range(1, n_items + 1)],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        items=np.array([i for s in sequences for i in s], dtype=np.int64),
        timestamps=np.array(flat_times, dtype=np.float64),
    )


# Lengths 5, 2, 3 and 1.
LOO = dataset([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10], [11]])


def test_leave_one_out_holds_out_the_last_two_items():
    split = leave_one_out(LOO)
    assert split.kind == "loo"
    # 5 items: train 3; users with fewer than 3 items only train, on everything they have
    assert split.train_len.tolist() == [3, 2, 1, 1]
    # valid: history = the first n - 2 items, target = the second-last item
    assert split.valid.users.tolist() == [0, 2]
    assert split.valid.hist_len.tolist() == [3, 1]
    assert split.valid.targets.tolist() == [4, 9]
    # test: history = everything but the last item (it includes the valid item), target = the last
    assert split.test.users.tolist() == [0, 2]
    assert split.test.hist_len.tolist() == [4, 2]
    assert split.test.targets.tolist() == [5, 10]
    assert len(split.valid) == len(split.test) == 2
    assert split.describe() == "loo split: 7 training events, 2 valid and 2 test cases"


def test_make_split_dispatches_and_refuses_unknown_kinds():
    assert make_split(LOO, "loo").train_len.tolist() == [3, 2, 1, 1]
    with pytest.raises(ConfigError, match="unknown split 'random'") as e:
        make_split(LOO, "random")
    assert 'data.split="loo"' in str(e.value)


# Twelve events at times 0..11, so np.quantile(q) = 11 q: valid_q = 0.4 cuts at 4.4, test_q = 0.75 at 8.25.
TEMPORAL = dataset(
    [[1, 2, 3, 4], [5, 6, 7], [8, 12], [9, 10], [11]],
    [[0, 2, 6, 9], [1, 7, 10], [4, 5], [3, 11], [8]],
)


def test_temporal_split_cuts_at_global_time_quantiles():
    split = temporal(TEMPORAL, 0.4, 0.75)
    assert split.kind == "temporal"
    # training = each user's events before 4.4
    assert split.train_len.tolist() == [2, 1, 1, 1, 0]
    # valid = each user's first event in [4.4, 8.25) that has some history:
    # u0 at t=6 (position 2), u1 at t=7 (1), u2 at t=5 (1); u4's only event (t=8) has no history
    assert split.valid.users.tolist() == [0, 1, 2]
    assert split.valid.hist_len.tolist() == [2, 1, 1]
    assert split.valid.targets.tolist() == [3, 6, 12]
    # test = each user's first event at or after 8.25: u0 at t=9, u1 at t=10, u3 at t=11
    assert split.test.users.tolist() == [0, 1, 3]
    assert split.test.hist_len.tolist() == [3, 2, 1]
    assert split.test.targets.tolist() == [4, 7, 10]
    assert make_split(TEMPORAL, "temporal", 0.4, 0.75).train_len.tolist() == [2, 1, 1, 1, 0]


def test_temporal_split_never_trains_on_the_future():
    data = load_dataset("synthetic:users=120,items=80,seed=4")
    split = make_split(data, "temporal", 0.8, 0.9)
    t_valid, t_test = np.quantile(data.timestamps, [0.8, 0.9])
    for u in range(data.n_users):
        times = data.timestamps[data.offsets[u] : data.offsets[u + 1]]
        assert np.all(times[: split.train_len[u]] < t_valid) and np.all(times[split.train_len[u] :] >= t_valid)
    for cases, low, high in ((split.valid, t_valid, t_test), (split.test, t_test, np.inf)):
        assert len(cases) > 0
        target_times = data.timestamps[data.offsets[cases.users] + cases.hist_len]
        assert np.all((target_times >= low) & (target_times < high))
        assert np.all(cases.hist_len > 0)


def test_pad_left_pads_with_zero_and_keeps_the_most_recent_items():
    users = np.array([0, 1, 0, 2])
    ends = np.array([5, 2, 2, 0])  # exclusive end of each history inside the user's sequence
    got = pad_left(LOO, users, ends, 3)
    assert got.shape == (4, 3)
    assert got.tolist() == [
        [3, 4, 5],  # 5 items cut to the last 3
        [0, 6, 7],  # u1's 2 items padded: nothing leaks from u0 before it
        [0, 1, 2],  # a prefix of u0
        [0, 0, 0],  # an empty history
    ]


def test_training_windows_cover_each_transition_once():
    # u0 has 9 items and trains on the first 7 (loo); max_len 3 cuts its 6 transitions into 2 windows
    data = dataset([[1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11], [12], [13, 14, 15], [16, 17, 18, 19, 20]])
    split = leave_one_out(data)
    assert split.train_len.tolist() == [7, 2, 1, 1, 3]
    windows = training_windows(data, split.train, max_len=3)
    assert windows.shape == (4, 4)  # (W, max_len + 1)
    assert windows.tolist() == [
        [4, 5, 6, 7],  # u0, the most recent window first
        [1, 2, 3, 4],  # u0, the rest: transitions 1->2 .. 3->4
        [0, 0, 10, 11],  # u1 is too short to evaluate and trains on both items
        [0, 16, 17, 18],  # u4: 3 training items; u2 and u3 have one training item, no transition
    ]
    inputs, targets = windows[:, :-1], windows[:, 1:]
    assert np.array_equal(inputs[:, 1:], targets[:, :-1]), "each target is the next item"
    held_out = set(split.valid.targets.tolist()) | set(split.test.targets.tolist())
    assert held_out == {8, 9, 14, 15, 19, 20}
    assert not held_out & set(windows.ravel().tolist()), "valid and test items never reach training"


def test_training_windows_on_real_shaped_data_have_no_leak_and_no_loss():
    data = load_dataset("synthetic:users=100,items=80,seed=7")
    split = leave_one_out(data)
    windows = training_windows(data, split.train, max_len=5)
    inputs, targets = windows[:, :-1], windows[:, 1:]
    real = (inputs > 0) & (targets > 0)  # the positions the loss trains on
    got = Counter(zip(inputs[real].tolist(), targets[real].tolist(), strict=True))
    expected = Counter()
    for u in range(data.n_users):
        prefix = data.sequence(u)[: split.train_len[u]].tolist()
        expected.update(zip(prefix[:-1], prefix[1:], strict=False))
    assert got == expected, "every training transition exactly once, and nothing else"
    assert got.total() == int(np.maximum(split.train_len - 1, 0).sum())


def test_valid_sample_is_seeded_ordered_and_whole_when_asked():
    cases = make_split(load_dataset("synthetic:users=200,items=120,seed=5")).valid
    some = cases.sample(50, seed=3)
    assert len(some) == 50 and (np.diff(some.users) > 0).all()  # in their order, each user once
    assert np.array_equal(some.users, cases.sample(50, seed=3).users)  # the same every evaluation
    assert not np.array_equal(some.users, cases.sample(50, seed=4).users)
    assert set(some.users) <= set(cases.users)
    assert cases.sample(0, seed=3) is cases and cases.sample(10_000, seed=3) is cases


def test_training_selects_on_the_valid_sample(tmp_path):
    from recscope.config import load
    from recscope.train import fit

    spec = "synthetic:users=200,items=120,seed=5"
    config = load("configs/tiny.yaml", ["train.epochs=1", "eval.valid_users=40"])
    info = fit(load_dataset(spec), config, tmp_path / "run", data_spec=spec)
    assert "40 valid" in info.state["split"]
