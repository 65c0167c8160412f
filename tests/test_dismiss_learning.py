"""A dismissal is part of the history a version that learned the label "dismiss" reads: a version
without it reads exactly what it read before; a fine-tune over a store holding dismissals gives
its version the label (events.json), trains the dismissals as context never as targets, and every
reader (recommend, explain, the history route, the web view) labels a dismissal so."""

from __future__ import annotations

import dataclasses
import shutil
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from recscope import versions
from recscope.explain.base import Explanation, HistoryWeight
from recscope.explain.text import sentence
from recscope.finetune import finetune, plan, read_store
from recscope.histories import DISMISS, RunHistories
from recscope.recommend import Recommender
from recscope.run import load_info, save_info, save_weights
from recscope.serve.app import create_app
from recscope.serve.live import StoreHistories
from recscope.serve.settings import Settings
from recscope.serve.store import Store
from recscope.snapshot import Snapshot
from recscope.viz.report import history_data

USERS = 40  # buy a, dismiss X, buy b (timestamps around the dismissal's own time)
A, B, X = 7, 11, 3  # dense indices of the tiny shop's items


def _dismiss(store: Store, user: str, item_id: str, version: str) -> None:
    request = f"r-{user}-{item_id}"
    store.log_served(request, user, version, [(item_id, 1.0)])
    store.add_feedback(request, user, item_id, "dismiss")


@pytest.fixture(scope="module")
def loop(tiny_run, tmp_path_factory):
    """A copy of the tiny run whose store holds USERS shoppers' a, dismissal of X, b and one
    shopper (``quiet``) with a dismissal only; one fine-tune over it (not promoted here)."""
    run = tmp_path_factory.mktemp("dismiss") / "run"
    shutil.copytree(tiny_run, run)
    info = load_info(run)
    info.config = dataclasses.replace(info.config, finetune=dataclasses.replace(info.config.finetune, epochs=1))
    save_info(run, info)
    parent = Snapshot.load(run)
    data = parent.data
    users = data.user_ids[1 : USERS + 1]
    quiet = data.user_ids[USERS + 5]
    now = time.time()
    with Store.for_run(run) as store:
        store.add_events(
            [{"event_id": f"{u}-a", "user_id": u, "item_id": data.item_ids[A], "timestamp": now - 100} for u in users]
        )
        for u in [*users, quiet]:
            _dismiss(store, u, data.item_ids[X], parent.version)
        store.add_events(
            [{"event_id": f"{u}-b", "user_id": u, "item_id": data.item_ids[B], "timestamp": now + 100} for u in users]
        )
        result = finetune(run, store)
        reading = read_store(store, 0.0, time.time(), 0.0, 1000)
    return {"run": run, "parent": parent, "result": result, "users": users, "quiet": quiet, "reading": reading}


def _live(snapshot: Snapshot, run) -> tuple[Recommender, Store]:
    store = Store.for_run(run)
    return Recommender(snapshot, StoreHistories(RunHistories(snapshot.data), store)), store


def test_a_version_without_the_label_reads_what_it_read_before(loop):
    """The quiet shopper's live history (training data + a dismissal) gives the parent exactly the
    input, scores and list of their training history, but for the dismissed item left out."""
    parent, quiet = loop["parent"], loop["quiet"]
    live, store = _live(parent, loop["run"])
    offline = Recommender(parent)
    with store:
        history = live.user_history(quiet)
        assert [e.event for e in history.items] == [e.event for e in offline.user_history(quiet).items]
        assert history.dismissed == (parent.data.item_ids[X],) and history.dismissals is None
        assert np.array_equal(history.indices, offline.history(quiet))
        n = parent.data.n_items
        served = [(r.item_id, r.score) for r in live.recommend(user=quiet, k=n)]
        before = [(r.item_id, r.score) for r in offline.recommend(user=quiet, k=n)]
    assert served == [r for r in before if r[0] != parent.data.item_ids[X]]  # bit-equal scores, X filtered
    assert len(served) == len(before) - 1


def test_the_finetune_gives_its_version_the_label_and_a_rollback_drops_it(loop):
    run, result, parent = loop["run"], loop["result"], loop["parent"]
    # finetune.dismiss_token=negated (the default): a dismissal reads as minus its item's token
    assert result.version and versions.event_labels(run, result.version) == (["", DISMISS], [DISMISS])
    assert versions.event_labels(run, parent.version) is None  # the run's own: none
    child = Snapshot.load(run, result.version)
    assert child.reads_dismissals and not parent.reads_dismissals
    assert child.inputs.code(DISMISS) == 1 and child.model.cfg.n_events == 2
    assert float(child.model.event_emb.weight[1].detach().abs().sum()) > 0  # the new row trained
    assert float(child.model.event_emb.weight[0].detach().abs().sum()) == 0  # label 0 still adds nothing

    user = loop["users"][0]
    live, store = _live(child, run)
    with store:
        history = live.user_history(user)
        kinds = [(e.event, e.source) for e in history.items[-3:]]
        assert kinds == [("purchase", "store"), (DISMISS, "store"), ("purchase", "store")]
        x = parent.data.item_ids[X]
        assert history.indices[-2] == X and history.dismissals.tolist()[-3:] == [False, True, False]
        assert live.event_codes(history)[-3:].tolist() == [0, 1, 0]
        assert X not in history.owned  # dismissed, not owned: an explanation says "dismissed"
        assert live.explain(user=user, item=x)[0].status == "dismissed"
        assert x not in [r.item_id for r in live.recommend(user=user, k=parent.data.n_items)]
        # the service swaps a version in: the parent reads no dismissal again
        back = live.with_snapshot(parent)
        assert X not in back.user_history(user).indices.tolist()
        assert back.user_history(user).dismissed == (x,)
        with_token = live.scores(history.indices, events=live.event_codes(history))
        without = live.scores(np.delete(history.indices, -2), events=np.zeros(len(history.indices) - 1, np.int64))
        assert not torch.equal(with_token, without)  # the model reads the dismissal


def test_a_training_window_never_targets_a_dismissal(loop):
    """A dismissal is context of the windows (label "dismiss"), never a target; the purchase after
    it is one. Its negative's history ends with the dismissal itself."""
    parent, reading = loop["parent"], loop["reading"]
    work = plan(parent.data, parent.data, reading, 0.0, parent.config)
    assert work.labels == ["", DISMISS]
    new = slice(0, work.new_windows)
    windows, marks, labels = work.windows[new], work.targets[new], work.window_events[new]
    dismissal = labels == 1
    assert int(dismissal.sum()) >= USERS - len(work.cases) and bool((windows[dismissal] == X).all())
    assert not bool(marks[dismissal].any())  # never a target: not trained to come after the one before it
    after = torch.zeros_like(dismissal)
    after[:, 1:] = dismissal[:, :-1]
    assert bool((windows[after] == B).all()) and bool(marks[after].all())  # the purchase after it is
    dismissals = work.neg_items == X
    assert int(dismissals.sum()) == USERS + 1 and bool((work.neg_events[dismissals, -1] == 1).all())
    assert bool((work.neg_histories[dismissals, -1] == X).all())
    # a parent that read no label and a store without dismissals: no label, as before
    quiet = dataclasses.replace(reading, dismissals={}, negatives=[n for n in reading.negatives if n[3] != DISMISS])
    plain = plan(parent.data, parent.data, quiet, 0.0, parent.config)
    assert plain.labels is None and plain.window_events is None and plain.neg_events is None


def test_mates_are_negatives_of_a_dismissal_when_asked(loop):
    parent, reading = loop["parent"], loop["reading"]
    config = dataclasses.replace(
        parent.config, finetune=dataclasses.replace(parent.config.finetune, dismiss_mates=("brand", "category"))
    )
    work = plan(parent.data, parent.data, reading, 0.0, config)
    data = parent.data
    brand, category = (next(f for f in data.fields if f.name == n) for n in ("brand", "category"))
    mates = [
        i
        for i in range(1, data.n_items + 1)
        if i != X and set(brand.labels(i)) & set(brand.labels(X)) and set(category.labels(i)) & set(category.labels(X))
    ]
    assert mates and work.neg_kinds["mates"] == (USERS + 1) * len(mates)
    assert sorted(set(work.neg_items.tolist()) - {X}) == mates


def test_the_service_labels_a_dismissal_in_the_history_and_the_explanation(loop):
    """Served by the version that read it: GET /users/{id}/history and an explanation's history
    say "dismiss", the page's history too; after PUT /model back to the parent, neither holds it."""
    run, result, parent = loop["run"], loop["result"], loop["parent"]
    user, x = loop["users"][0], parent.data.item_ids[X]
    settings = Settings(run=run, db=f"sqlite:///{run / 'store.sqlite'}")
    with TestClient(create_app(settings)) as client:
        assert client.put("/model", json={"version": result.version}).status_code == 200
        events = client.get(f"/users/{user}/history").json()["items"]
        assert [(e["item_id"], e["event"]) for e in events[-2:]] == [
            (x, DISMISS),
            (parent.data.item_ids[B], "purchase"),
        ]
        listed = client.get(f"/users/{user}/recommendations", params={"k": 3, "explain": True}).json()
        entries = listed["items"][0]["explanation"]["history"]
        assert [e.get("event") for e in entries][-3:] == [None, DISMISS, None]
        assert "event" not in entries[-1]  # an item the user had: its entry as before
        assert x not in [i["item_id"] for i in listed["items"]]
        assert client.put("/model", json={"version": parent.version}).status_code == 200
        events = client.get(f"/users/{user}/history").json()["items"]
        assert DISMISS not in [e["event"] for e in events]
        listed = client.get(f"/users/{user}/recommendations", params={"k": 3, "explain": True}).json()
        assert "event" not in str(listed["items"][0]["explanation"]["history"])  # as before: no key

    child = Snapshot.load(run, result.version)
    live, store = _live(child, run)
    with store:
        history = live.user_history(user)
        explained = live.explain(user=user, top=1, counterfactual=False)
        page = history_data(
            live, history.indices, {explained[0].method: explained}, explained[0].method, label="u", history=history
        )
    assert [h.get("event") for h in page["history"]][-3:] == [None, DISMISS, None]


def test_a_sentence_never_calls_a_dismissal_a_purchase():
    cited = [HistoryWeight(0, "i1", "Voltra Phone", 5.0), HistoryWeight(1, "i2", "Casa Mirror", 4.0, DISMISS)]
    expl = Explanation(None, "i3", "Item 3", 9.0, 1, "occlusion", True, cited)
    assert sentence(expl).startswith("Because you bought “Voltra Phone” and dismissed “Casa Mirror”")
    assert expl.to_dict()["history"][1]["event"] == DISMISS and "event" not in expl.to_dict()["history"][0]


def test_a_negated_dismissal_reads_minus_its_items_token_and_loads_so(loop, tmp_path):
    """The version records which labels are negated (events.json "negated"), and the model it loads
    reads such a dismissal as minus its item's token plus the label's embedding; a version whose
    dismissal token is its item's own (finetune.dismiss_token=item) loads without it."""
    run, result = loop["run"], loop["result"]
    child = Snapshot.load(run, result.version)
    negated = child.model
    assert negated.negated_events.tolist() == [1]
    items, codes = torch.tensor([[A, X, B]]), torch.tensor([[0, 1, 0]])
    tokens = negated.item_tokens(items)
    tokens[0, 1] = -tokens[0, 1]
    with torch.no_grad():
        read = negated(items, events=codes).hidden
        plain = negated(items, events=torch.zeros_like(codes)).hidden
        unlabelled = negated(items, tokens=tokens, events=torch.zeros_like(codes)).hidden
    assert not torch.equal(read, plain) and not torch.equal(read, unlabelled)
    flipped, negated.negated_events = negated.negated_events, None
    with torch.no_grad():  # by hand: the dismissal's token negated, the label's embedding added
        assert torch.equal(read, negated(items, tokens=tokens, events=codes).hidden)
    negated.negated_events = flipped
    with torch.no_grad():
        negated.event_emb.weight[1] += 0.5  # other weights than the version's: a new version
    weights = tmp_path / "item.safetensors"
    save_weights(weights, negated)
    published = versions.publish(
        run, weights, "finetune", result.version, event_labels=["", DISMISS], make_current=False
    )
    assert versions.event_labels(run, published.id) == (["", DISMISS], [])
    item = Snapshot.load(run, published.id).model
    assert item.negated_events is None
    negated.negated_events = None  # read by hand: the tokens negated, the label added
    with torch.no_grad():
        assert torch.equal(
            item(items, tokens=tokens, events=codes).hidden, negated(items, tokens=tokens, events=codes).hidden
        )
        assert not torch.equal(item(items, events=codes).hidden, negated(items, tokens=tokens, events=codes).hidden)
