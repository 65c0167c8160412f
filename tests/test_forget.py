"""Forgetting a user, exactly (issue 24): DELETE /users/{id} and `recscope forget` delete every
stored row of theirs and write a tombstone every reader honours; `recscope retrain` writes a run
whose training data holds none of them; a fine-tune after a forget reads none of them."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from pg import postgres_server  # noqa: F401  (a fixture)
from recscope import versions
from recscope.cli import app as cli
from recscope.data import Dataset, split_of
from recscope.data.split import training_windows
from recscope.errors import StoreError
from recscope.finetune import StoreReading, plan
from recscope.forget import forgotten_counts, training_data
from recscope.run import load_data, load_info
from recscope.serve.app import create_app
from recscope.serve.models import Event, Feedback, Served, ServedItem, Tombstone, key
from recscope.serve.settings import Settings
from recscope.serve.store import Store
from servers import Server


def _store_url(kind: str, tmp_path: Path, request) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("postgres_server").new_database()
    return f"sqlite:///{tmp_path / 'store.sqlite'}"


def _rows(store: Store, user: str) -> dict[str, int]:
    """The store's rows of ``user`` in every table keyed by a user (served items through their lists)."""
    with Session(store.engine) as s:
        lists = select(Served.request_id).where(Served.user_id == user)
        return {
            "events": s.scalar(select(func.count()).where(Event.user_key == key(user))),
            "served": s.scalar(select(func.count()).where(Served.user_key == key(user))),
            "served_items": s.scalar(select(func.count()).where(ServedItem.request_id.in_(lists))),
            "feedback": s.scalar(select(func.count()).where(Feedback.user_key == key(user))),
        }


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_forgotten_user_is_gone_from_every_route_and_retrain_leaves_them_out(tiny_run, tmp_path, request, kind):
    url = _store_url(kind, tmp_path, request)
    data = load_data(tiny_run)
    user, other = data.user_ids[7], data.user_ids[8]
    trained_items = [data.item_ids[i] for i in data.sequence(7)]
    with TestClient(create_app(Settings(run=tiny_run, db=url))) as client:
        before = client.get("/users", params={"limit": 1000}).json()
        listed = client.get(f"/users/{user}/recommendations").json()
        assert listed["source"] == "model"
        shown = listed["items"][0]["item_id"]
        feedback = {"request_id": listed["request_id"], "user_id": user, "item_id": shown, "action": "dismiss"}
        assert client.post("/feedback", json=feedback).status_code == 201
        events = [
            {"event_id": f"{kind}-{n}", "user_id": u, "item_id": trained_items[n], "timestamp": 1e9 + n}
            for n, u in enumerate([user, user, other])
        ]
        assert client.post("/events", json={"events": events}).json()["accepted"] == 3
        assert client.get("/ui/data", params={"user": user}).status_code == 200

        gone = client.delete(f"/users/{user}").json()
        assert gone["deleted"] == {"events": 2, "served": 1, "served_items": 10, "feedback": 1}
        assert gone["forgotten_at"] > 0

        with Store.open(url) as store:
            assert _rows(store, user) == {"events": 0, "served": 0, "served_items": 0, "feedback": 0}
            with Session(store.engine) as s:
                assert s.scalars(select(Tombstone.user_id)).all() == [user]
        assert client.get(f"/users/{user}/history").status_code == 404
        fallback = client.get(f"/users/{user}/recommendations").json()
        assert fallback["source"] == "fallback" and fallback["fallback"]["reason"] == "unknown_user"
        assert client.get(f"/users/{user}/recommendations", params={"fallback": "false"}).status_code == 404
        assert client.get(f"/users/{user}/recommendations/{shown}/explanation").status_code == 404
        assert client.post("/what-if", json={"user_id": user, "remove": [trained_items[0]]}).status_code == 404
        assert client.get("/ui/data", params={"user": user}).status_code == 404
        assert client.get("/ui/versions", params={"user": user}).status_code == 404
        assert user not in client.get("/ui/shoppers", params={"q": user}).json()
        after = client.get("/users", params={"limit": 1000}).json()
        assert after["total"] == before["total"] - 1
        assert [u["user_id"] for u in after["users"]] == [u["user_id"] for u in before["users"] if u["user_id"] != user]
        pages = [client.get("/users", params={"limit": 7, "offset": o}).json()["users"] for o in range(0, 210, 7)]
        assert [u["user_id"] for page in pages for u in page] == [u["user_id"] for u in after["users"]]
        again = {"request_id": listed["request_id"], "user_id": user, "item_id": shown, "action": "click"}
        assert client.post("/feedback", json=again).status_code == 404  # their lists are gone
        assert [v["forgotten"] for v in client.get("/model").json()["versions"]] == [1]

        # A later event is a new history that starts after the tombstone.
        new = {"event_id": f"{kind}-new", "user_id": user, "item_id": trained_items[0], "timestamp": 2e9}
        assert client.post("/events", json={"events": [new]}).json()["accepted"] == 1
        history = client.get(f"/users/{user}/history").json()["items"]
        assert [(h["item_id"], h["source"]) for h in history] == [(trained_items[0], "store")]
        assert user in [u["user_id"] for u in client.get("/users", params={"limit": 1000}).json()["users"]]

    # retrain: the run's data without their training events, plus the store's events
    out = tmp_path / "retrained"
    done = CliRunner().invoke(cli, ["retrain", str(tiny_run), "--db", url, "--out", str(out), "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output.strip().splitlines()[-1])
    retrained = Dataset.load(out)  # what the new run was trained on, as it recorded it
    assert retrained.sequence(retrained.user_index(user)).tolist() == [data.item_index(trained_items[0])]
    assert retrained.sequence(retrained.user_index(other)).tolist() == [*data.sequence(8), data.sequence(7)[2]]
    assert retrained.n_events == data.n_events - len(trained_items) + 1 + 1
    assert result["tombstones"]["count"] == 1 and result["lineage"]["events_left_out"] == len(trained_items)
    version = versions.read(out, versions.current(out))
    assert version.source == "retrain" and version.details["tombstones"] == result["tombstones"]
    assert load_info(out).config.model == load_info(tiny_run).config.model
    with Store.open(url) as store:
        assert forgotten_counts(out, retrained.user_ids, store) == {version.id: 0}
        assert forgotten_counts(tiny_run, data.user_ids, store) == {versions.current(tiny_run): 1}


def test_the_report_leaves_a_forgotten_user_out(tiny_run, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    data = load_data(tiny_run)
    user = data.user_ids[3]
    with Store.open(url) as store:
        store.forget_user(user)
    runner = CliRunner()
    refused = runner.invoke(cli, ["report", str(tiny_run), "--db", url, "--users", user, "--out", str(tmp_path / "r")])
    assert refused.exit_code != 0 and "has been forgotten" in str(refused.exception)
    done = runner.invoke(
        cli,
        ["report", str(tiny_run), "--db", url, "--sample", "3", "--merchant-users", str(data.n_users),
         "--methods", "attention", "--k", "3", "--no-figures", "--out", str(tmp_path / "r")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    page = (tmp_path / "r" / "index.html").read_text()
    assert user not in page  # neither sampled nor among the merchant view's users


def test_two_workers_honour_a_forget_at_once(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    user = load_data(run).user_ids[5]
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with (
        Server(run, "--workers", "1", "--db", db, log=tmp_path / "a.log") as a,
        Server(run, "--workers", "1", "--db", db, log=tmp_path / "b.log") as b,
    ):
        import httpx2 as httpx

        assert httpx.get(f"{b.base}/users/{user}/history").status_code == 200
        assert httpx.delete(f"{a.base}/users/{user}").status_code == 200
        for server in (a, b):  # no wait: the next request of either reads the tombstone
            assert httpx.get(f"{server.base}/users/{user}/history").status_code == 404
            page = httpx.get(f"{server.base}/users", params={"limit": 1000}).json()
            assert user not in [u["user_id"] for u in page["users"]]


def test_recscope_forget_is_the_delete_route_from_the_command_line(tiny_run, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    user = load_data(tiny_run).user_ids[2]
    with Store.open(url) as store:
        store.add_events({"event_id": "e1", "user_id": user, "item_id": "P0001"})
    done = CliRunner().invoke(cli, ["forget", str(tiny_run), "--user", user, "--db", url, "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output.strip().splitlines()[-1])
    assert result["deleted"]["events"] == 1 and result["version"] is None  # not sharded: no new version
    with Store.open(url) as store:
        assert store.forgotten() == {user: result["forgotten_at"]}
        assert store.history(user) == []


def test_a_finetune_after_a_forget_neither_reads_nor_replays_them(tiny_run, tmp_path):
    data = load_data(tiny_run)
    config = load_info(tiny_run).config
    config = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, replay=50.0))
    user, u = data.user_ids[9], 9
    new_item = data.item_ids[data.sequence(0)[0]]
    reading = StoreReading({user: [(new_item, 2e9, 2e9)], data.user_ids[1]: [(new_item, 2e9, 2e9)]}, [], 0)
    remembered = plan(data, data, reading, 1e9, config)
    forgotten = plan(data, data, reading, 1e9, config, frozenset({user}))
    mine = np.repeat(np.arange(data.n_users), data.lengths) == u
    theirs = training_windows(data, split_of(data, config).train & mine, config.model.max_len)
    rows = lambda w: {tuple(r) for r in w.tolist()}  # noqa: E731
    assert rows(theirs) <= rows(remembered.windows)  # replayed when remembered (replay 50x: every window)
    assert not rows(theirs) & rows(forgotten.windows)

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with Store.for_run(run) as store:
        store.forget_user(user)
        events = [{"event_id": f"f{n}", "user_id": data.user_ids[1], "item_id": new_item} for n in range(3)]
        store.add_events(events)
        done = CliRunner().invoke(cli, ["finetune", str(run), "--json"])
        assert done.exit_code == 0, done.output
        result = json.loads(done.output.strip().splitlines()[-1])
        assert result["lineage"]["tombstones"]["count"] == 1
        # it starts from its parent's weights, trained on the user: it carries the parent's mark
        assert forgotten_counts(run, data.user_ids, store)[result["version"]] == 1
        rebuilt, summary = training_data(data, store, store.forgotten())
        assert user not in rebuilt.user_ids and summary["events_left_out"] == len(data.sequence(u))


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_no_event_written_beside_a_forget_survives_it_unseen(tmp_path, request, kind):
    """Writers of a user's rows and a forget of that user take turns: a batch of events, a served
    list or a feedback row committed while the forget runs is either deleted by it or stamped
    after its tombstone (new data of a user who came back), never left behind as older. Posting
    threads race eight forgets; then every stored row of the user is younger than the last one."""
    url = _store_url(kind, tmp_path, request)
    user, stop, errors = "U-race", threading.Event(), []
    with Store.open(url) as store:

        def post(name: str) -> None:
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    batch = [{"event_id": f"{name}-{n}-{j}", "user_id": user, "item_id": f"P{j:04d}"} for j in range(3)]
                    store.add_events(batch)
                    store.log_served(f"{name}-{n}", user, "v1", [("P0001", 1.0), ("P0002", 0.5)])
                    try:
                        store.add_feedback(f"{name}-{n}", user, "P0001", "click")
                    except StoreError:  # a forget deleted the list in between: refused, as it should be
                        pass
            except Exception as e:  # noqa: BLE001 (reported below, not swallowed)
                errors.append(e)

        threads = [threading.Thread(target=post, args=(f"t{i}",)) for i in range(3)]
        for t in threads:
            t.start()
        for _ in range(8):
            time.sleep(0.05)
            store.forget_user(user)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors
        last = store.forgotten()[user]
        with Session(store.engine) as s:
            stamps = {
                "events": s.scalars(select(Event.received_at).where(Event.user_key == key(user))).all(),
                "served": s.scalars(select(Served.created_at).where(Served.user_key == key(user))).all(),
                "feedback": s.scalars(select(Feedback.created_at).where(Feedback.user_key == key(user))).all(),
            }
        older = {table: sum(stamp <= last for stamp in found) for table, found in stamps.items()}
        assert older == {"events": 0, "served": 0, "feedback": 0}, f"rows older than the last forget: {older}"
