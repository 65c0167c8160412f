"""Variants of a history (items taken out with their event labels) are scored one way for every
explanation: faithfulness reads the event labels the served path reads."""

import numpy as np
import pytest
import torch
from tests.test_events import event_run  # noqa: F401  (a fixture)

from recscope.explain.faithfulness import _aopc, _Case, _exit_rate, _labels
from recscope.explain.variants import variant_hidden, variant_scores, without
from recscope.ranking import rank
from recscope.recommend import Recommender


@pytest.fixture(scope="module")
def rec(request) -> Recommender:
    """test_events' tiny run, whose model reads event labels (views and purchases)."""
    return Recommender.load(request.getfixturevalue("event_run"))


def test_a_variant_is_scored_as_the_shorter_history_with_its_event_labels(rec):
    history = rec.resolve(user=rec.data.user_ids[1])
    read = rec.tensor(history.indices)[0]
    events = rec.tensor(rec.event_codes(history))[0]
    masks = torch.ones(3, len(read), dtype=torch.bool)
    masks[1, 0] = masks[2, -1] = masks[2, 1] = False  # variant 0 all, 1 without the first, 2 without two
    table = rec.snapshot.table
    expected = rec.model.score(without(read, masks), table, without(events, masks))  # (3, N + 1), padding -inf
    every = variant_scores(rec.model, table, read, masks, events=events)
    torch.testing.assert_close(every[:, 1:], expected[:, 1:])
    targets = torch.tensor([4, 7])
    torch.testing.assert_close(variant_scores(rec.model, table, read, masks, targets, events), expected[:, targets])
    hidden = variant_hidden(rec.model, table, read, masks, events)
    torch.testing.assert_close(hidden, rec.model.query(without(read, masks), without(events, masks), table))
    assert not torch.allclose(variant_hidden(rec.model, table, read, masks), hidden), "the labels are read"


def test_faithfulness_removes_items_with_the_event_labels_the_served_path_reads(rec):
    u = 2
    history = rec.resolve(user=rec.data.user_ids[u])
    assert history.indices.tolist() == rec.data.sequence(u).tolist()
    n = len(history.indices) - 1  # everything before the last event, as faithfulness cuts a test case
    read = torch.from_numpy(rec.data.sequence(u)[:n][-rec.config.model.max_len :].astype(np.int64))
    labels = _labels(rec, u, n, len(read))
    assert labels.tolist() == rec.event_codes(history)[:n][-len(read) :].tolist()
    model, table, targets = rec.model, rec.snapshot.table, torch.tensor([5, 9])
    full = model.score(read[None], table, labels[None])[0, targets]
    case = _Case(read, torch.unique(read), targets, full, None, None, events=labels)
    oldest_first = torch.arange(len(read)).expand(len(targets), -1)  # (K, T) the "most important" order
    removed, _ = _aopc(model, table, case, oldest_first)
    for size, drop in enumerate(removed, 1):
        keep = (torch.arange(len(read)) >= size)[None]
        shorter = model.score(without(read, keep), table, without(labels, keep))[0, targets]
        assert drop == pytest.approx(float((full - shorter).mean()), abs=1e-5)
    k = 3
    keep = (torch.arange(len(read)) >= 2)[None].expand(len(targets), -1)
    scores = model.score(without(read, keep), table, without(labels, keep))  # row j for target j
    expected = float((rank(scores, targets, owned=case.owned) >= k).float().mean())
    assert _exit_rate(model, table, case, oldest_first[:, :2], k) == expected
