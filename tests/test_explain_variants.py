"""Variants of a history (items taken out with their event labels) are scored one way for every
explanation: faithfulness reads the event labels the served path reads, and a counterfactual's
steps are ranked against the whole catalog by counting only the rivals that can reach the item."""

import dataclasses

import numpy as np
import pytest
import torch
from tests.test_events import event_run  # noqa: F401  (a fixture)

from recscope.config import ModelConfig
from recscope.explain.base import NOT_FOUND, OTHERS_ROSE, OWN_SCORE_FELL
from recscope.explain.counterfactual import Removal, smallest_removal
from recscope.explain.faithfulness import _aopc, _Case, _exit_rate, _labels
from recscope.explain.occlusion import OcclusionExplainer
from recscope.explain.variants import Rivals, variant_hidden, variant_scores, without
from recscope.model import SeqRec
from recscope.ranking import Ranking, cutoff, hide, rank, top_k
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


# ---------------------------------------------------------------- counterfactuals count only the rivals that can matter
def _whole_catalog(model, table, history, owned, target, weights, k, events=None):
    """The counterfactual as it was found before :class:`Rivals`: every step's scores over the
    whole catalog, ranked by ``rank``; -> (positions, new rank, entered, kind, own scores)."""
    order = [int(p) for p in torch.argsort(weights, descending=True) if weights[p] > 0][:10][: len(history) - 1]
    masks = torch.ones(len(order) + 1, len(history), dtype=torch.bool)
    for step in range(len(order)):
        masks[step + 1 :, order[step]] = False
    scores = hide(variant_scores(model, table, history, masks, events=events), owned=owned)
    own, ranks = scores[:, target], rank(scores, torch.full((len(scores),), target))
    old = cutoff(scores[0], k)
    out = ranks[1:] >= k
    fell = out & (own[1:] < old) if old is not None else torch.zeros_like(out)
    exits = torch.nonzero(fell) if fell.any() else torch.nonzero(out)
    if len(exits) == 0:
        return None, int(ranks[-1]) + 1 if order else None, None, NOT_FOUND, own[-1]
    m = int(exits[0]) + 1
    before = set(top_k(scores[0], k).indices.tolist())
    entered = next(i for i in top_k(scores[m], k).indices.tolist() if i not in before)
    return order[:m], int(ranks[m]) + 1, entered, OWN_SCORE_FELL if fell[m - 1] else OTHERS_ROSE, own[m]


def _same(found: Removal, expected) -> None:
    positions, new_rank, entered, kind, score = expected
    assert (found.positions, found.new_rank, found.entered, found.kind) == (positions, new_rank, entered, kind)
    assert found.score_after == pytest.approx(float(score), abs=1e-4)


def test_a_served_lists_counterfactuals_are_those_of_the_whole_catalog(rec):
    for u in range(6):
        user = rec.data.user_ids[u]
        history = rec.resolve(user=user)
        read = rec.tensor(history.indices)[0]
        events = rec.tensor(rec.event_codes(history))[0]
        owned = torch.from_numpy(np.unique(history.indices))
        explainer = OcclusionExplainer(rec.model)
        for e in rec.explain(user, top=5, k=5, method="occlusion"):
            target = rec.data.item_index(e.item_id)
            weights = explainer.attribute(read, torch.tensor([target]), events)[0]
            expected = _whole_catalog(rec.model, explainer.table, read, owned, target, weights, 5, events)
            cf = e.counterfactual
            replaced = None if cf.replaced_by is None else rec.data.item_index(cf.replaced_by)
            removed = None if not cf.found else [h.position - (len(history.indices) - len(read)) for h in cf.removed]
            assert (removed, cf.new_rank, replaced, cf.kind) == expected[:4]


def test_towers_bound_their_mean_score_and_the_pools_are_what_can_reach_the_item():
    cfg = ModelConfig(max_len=10, d_model=8, n_layers=1, n_heads=2, dropout=0.0, attn_dropout=0.0, n_items=400)
    torch.manual_seed(1)
    model = SeqRec(dataclasses.replace(cfg, towers=3)).eval()
    with torch.no_grad():  # untrained weights are too small to give interesting scores
        for p in model.parameters():
            p.mul_(6.0) if p.dim() > 1 else None
    table = model.item_table()
    generator = torch.Generator().manual_seed(3)
    kinds, pools = set(), []
    for _ in range(8):
        history = torch.randint(1, cfg.n_items + 1, (7,), generator=generator)
        scores = hide(model.score(history[None], table)[0], owned=history)
        base = Ranking.of(model.score(history[None], table)[0], owned=history)
        origin = variant_hidden(model, table, history, torch.ones(1, len(history), dtype=torch.bool))[0]
        rivals = Rivals(model, table, base, origin)
        # the unchanged history: only the items at or above an item's score can reach it
        for place, item in enumerate(base.top(5).indices.tolist(), 1):
            field = rivals.field(origin, item, float(scores[item]))
            assert field.items[0] == item and sorted(field.items.tolist()) == sorted(base.top(place).indices.tolist())
            own, higher, tied = field.counts()
            assert (int(higher), int(tied)) == (place - 1, 0) and float(own) == pytest.approx(float(scores[item]))
        field = rivals.field
        rivals.field = lambda *given, field=field: pools.append(field(*given)) or pools[-1]
        for k in (3, 5):
            for target in base.top(k).indices.tolist():
                weights = torch.randn(len(history), generator=generator)
                found = smallest_removal(model, table, history, history, target, weights, k, rivals=rivals)
                _same(found, _whole_catalog(model, table, history, history, target, weights, k))
                kinds.add(found.kind)
    assert kinds == {OWN_SCORE_FELL, OTHERS_ROSE, NOT_FOUND}
    small = [f for f in pools if f.items is not None and len(f.items) < 100]
    assert len(small) > len(pools) / 3, "many steps rank against a few items"
    assert any(f.items is None for f in pools), "and some against the whole catalog"
