"""The integrator's API, scripted as a web shop would use it on day one (issue 22): a first-time
visitor gets the fallback list, labelled; a hidden item (out of stock, recalled; one of the run
included) is in no list, from any worker; lists restricted to a category; a product page's
similar items with their reasons; feedback sent twice (and at once, by racing workers) stored
once; the catalog and the users in pages.

The service is the real app over the session's tiny run (TestClient; one test starts `recscope
serve --workers 2`), each test over a store of its own. Expected lists are worked out from the
run's data and the Python API, not read back from the route under test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from pg import postgres_server  # noqa: F401  (a fixture)
from recscope.recommend import Recommender
from recscope.serve.app import create_app
from recscope.serve.settings import Settings
from recscope.serve.store import Store
from servers import Server

USER = "U00007"
WITHIN = 3.0  # seconds for a change to reach every worker (the bar is 1 s; a loaded machine takes more)


@pytest.fixture(scope="module")
def rec(tiny_run) -> Recommender:
    return Recommender.load(tiny_run)


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite'}"


@pytest.fixture
def client(tiny_run, db):
    """The app over the tiny run (read only: the store is elsewhere) and a store of this test's own."""
    with TestClient(create_app(Settings(run=tiny_run, db=db))) as c:
        yield c


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["item_id"] for r in response.json()["items"]]


def _labels(rec: Recommender, item_id: str, field: str) -> set[str]:
    """The catalog's values of ``field`` for the item (the run's data, not the API)."""
    f = next(f for f in rec.data.fields if f.name == field)
    return set(f.labels(rec.data.item_index(item_id)))


def _counts(rec: Recommender) -> Counter:
    """How many of the run's events each item has, counted here from the event rows."""
    return Counter(rec.data.item_ids[i] for i in rec.data.items.tolist())


# -- a first-time visitor ---------------------------------------------------------------------


def test_an_unknown_visitor_gets_the_popular_list_labelled_fallback(client, rec, tiny_run, db):
    counts = _counts(rec)
    first = client.get("/users/first-visit/recommendations", params={"k": 5})
    body = first.json()
    assert first.status_code == 200 and body["source"] == "fallback"
    assert body["fallback"] == {"kind": "popular", "reason": "unknown_user"}
    ids = _ids(first)
    assert [r["score"] for r in body["items"]] == [float(counts[i]) for i in ids], "scored by its event count"
    assert [counts[i] for i in ids] == sorted(counts.values(), reverse=True)[:5], "the five most frequent"
    assert [r["rank"] for r in body["items"]] == [1, 2, 3, 4, 5] and body["unknown_items"] == []

    model = client.get(f"/users/{USER}/recommendations", params={"k": 5}).json()
    assert model["source"] == "model" and model["fallback"] is None
    assert set(model) == set(body), "the same shape either way"
    refused = client.get("/users/first-visit/recommendations", params={"fallback": False})
    assert refused.status_code == 404 and "first-visit" in refused.json()["error"]

    # Logged as served like any list: feedback joins to it, and a dismissal holds for this visitor.
    with Store.open(db) as store:
        assert [i for i, _ in store.served(body["request_id"]).items] == ids
    dismiss = {"request_id": body["request_id"], "user_id": "first-visit", "item_id": ids[0], "action": "dismiss"}
    assert client.post("/feedback", json=dismiss).status_code == 201
    again = _ids(client.get("/users/first-visit/recommendations", params={"k": 5}))
    assert again[:4] == ids[1:] and ids[0] not in again

    # Filters hold on the fallback: the most frequent of the category, none of the brand left out.
    category, brand = "Phones", next(iter(_labels(rec, ids[1], "brand")))
    params = {"k": 4, "include_attribute": f"category={category}", "exclude_attribute": f"brand={brand}"}
    filtered = client.get("/users/another-visit/recommendations", params=params)
    fitting = {
        i: n
        for i, n in counts.items()
        if category in _labels(rec, i, "category") and brand not in _labels(rec, i, "brand")
    }
    assert [counts[i] for i in _ids(filtered)] == sorted(fitting.values(), reverse=True)[:4]
    assert all(i in fitting for i in _ids(filtered))


def test_an_empty_or_unknown_history_gets_the_fallback_too(client, rec):
    empty = client.post("/recommendations", json={"history": [], "k": 3}).json()
    assert empty["source"] == "fallback" and empty["fallback"]["reason"] == "empty_history"
    assert [r["item_id"] for r in empty["items"]] == [r.item_id for r in rec.popular(3)]
    unknown = client.post("/recommendations", json={"history": ["NOPE-1", "NOPE-2"], "k": 3}).json()
    assert unknown["fallback"] == {"kind": "popular", "reason": "no_known_items"}
    assert unknown["unknown_items"] == ["NOPE-1", "NOPE-2"]
    explained = client.post("/recommendations", json={"history": [], "k": 2, "explain": True}).json()["items"]
    total = len(rec.data.items)
    assert explained[0]["sentence"].startswith(f"Popular: {int(explained[0]['score']):,} of the run's {total:,} events")
    assert explained[0]["explanation"] is None, "no history was read: nothing of the model to explain"
    refused = client.post("/recommendations", json={"history": [], "fallback": False})
    assert refused.status_code == 422 and "empty" in refused.json()["error"]

    # A user only the store knows, whose events all name items the catalog does not hold.
    event = {"event_id": "ghost-1", "user_id": "ghost-buyer", "item_id": "GHOST-ITEM"}
    assert client.post("/events", json={"events": [event]}).status_code == 200
    ghost = client.get("/users/ghost-buyer/recommendations", params={"k": 3}).json()
    assert ghost["fallback"]["reason"] == "no_known_items" and ghost["unknown_items"] == ["GHOST-ITEM"]
    assert client.get("/users/ghost-buyer/recommendations", params={"fallback": False}).status_code == 422


# -- hidden items -----------------------------------------------------------------------------


def test_a_hidden_item_is_in_no_list_for_any_worker_until_shown_again(client, rec, tiny_run, db):
    held = [rec.data.item_ids[i] for i in rec.history(USER)]

    def lists(c: TestClient, k: int) -> dict[str, list[str]]:
        what_if = c.post("/what-if", json={"user_id": USER, "remove": held[-1:], "k": k}).json()
        return {
            "user": _ids(c.get(f"/users/{USER}/recommendations", params={"k": k})),
            "explained": _ids(c.get(f"/users/{USER}/recommendations", params={"k": k, "explain": True})),
            "anonymous": _ids(c.post("/recommendations", json={"history": held[-3:], "k": k})),
            "similar": _ids(c.get(f"/items/{held[-1]}/similar", params={"k": k})),
            "fallback": _ids(c.get("/users/first-visit/recommendations", params={"k": k})),
            "what-if before": [r["item_id"] for r in what_if["before"]],
            "what-if after": [r["item_id"] for r in what_if["after"]],
        }

    before = lists(client, 20)
    hidden = sorted({ranked[0] for ranked in before.values()})  # the top of every list: items of the run
    assert all(rec.trained(i) for i in hidden)
    for item in hidden:
        put = client.put(f"/items/{item}", json={"hidden": True})
        assert put.status_code == 200 and put.json()["hidden"] is True and put.json()["source"] == "run"
    want = {name: [i for i in ranked if i not in hidden][:10] for name, ranked in before.items()}
    assert lists(client, 10) == want
    status = client.get(f"/users/{USER}/recommendations/{hidden[0]}/explanation").json()
    assert status["status"] == "hidden" and status["rank"] is None and "Hidden" in status["sentence"]
    assert client.get(f"/items/{hidden[0]}").json()["hidden"] is True

    # A worker starting now reads the hidden set from the store.
    with TestClient(create_app(Settings(run=tiny_run, db=db))) as other:
        assert lists(other, 10) == want

    for item in hidden:
        assert client.put(f"/items/{item}", json={"hidden": False}).json()["hidden"] is False
    assert lists(client, 20) == before


def test_a_trained_item_takes_hidden_and_delete_but_not_a_new_title(client, rec):
    item = rec.data.item_ids[4]
    entry = client.get(f"/items/{item}").json()
    renamed = client.put(f"/items/{item}", json={"title": "Another title"})
    assert renamed.status_code == 409 and item in renamed.json()["error"] and "hidden" in renamed.json()["fix"]
    same = client.put(
        f"/items/{item}", json={"title": entry["title"], "attributes": entry["attributes"], "hidden": True}
    )
    assert same.status_code == 200 and same.json() == {**entry, "hidden": True}, "its own entry back, hidden"

    deleted = client.delete(f"/items/{item}")
    assert deleted.status_code == 200
    assert deleted.json() == {"item_id": item, "source": "run", "removed": False, "hidden": True}
    assert client.get(f"/items/{item}").json() == {**entry, "hidden": True, "deleted": True}
    shown = client.put(f"/items/{item}", json={"hidden": False})
    assert shown.status_code == 409 and "deleted" in shown.json()["error"]
    assert client.delete(f"/items/{item}").status_code == 200, "deleting it again changes nothing"
    assert client.put("/items/NOT-AN-ITEM", json={"hidden": True}).status_code == 404
    assert client.get("/items/NOT-AN-ITEM").status_code == 404, "nothing stored by a refused hide"


def test_a_deleted_added_item_leaves_the_catalog(client, rec):
    brand = next(iter(_labels(rec, rec.data.item_ids[1], "brand")))
    added = client.put("/items/NEW/lamp", json={"title": "A lamp", "attributes": {"brand": brand}})
    assert added.status_code == 201 and added.json()["hidden"] is False
    total = client.get("/items", params={"limit": 1}).json()["total"]
    assert total == rec.data.n_items + 1
    history = [rec.data.item_ids[2], "NEW/lamp"]
    assert client.post("/recommendations", json={"history": history}).json()["unknown_items"] == []
    assert client.get(f"/users/{USER}/recommendations/NEW/lamp/explanation").status_code == 200

    deleted = client.delete("/items/NEW/lamp")
    assert deleted.json() == {"item_id": "NEW/lamp", "source": "store", "removed": True, "hidden": True}
    assert client.get("/items/NEW/lamp").status_code == 404
    assert client.get("/items", params={"limit": 1}).json()["total"] == total - 1
    assert client.post("/recommendations", json={"history": history}).json()["unknown_items"] == ["NEW/lamp"]
    assert client.get(f"/users/{USER}/recommendations/NEW/lamp/explanation").status_code == 404
    assert client.delete("/items/NEW/lamp").status_code == 404, "gone already"

    # Added again later it is a new item; one added hidden is in no list from the start.
    assert client.put("/items/NEW/lamp", json={"title": "A lamp"}).status_code == 201
    hidden = client.put("/items/NEW/fan", json={"title": "A fan", "attributes": {"brand": brand}, "hidden": True})
    assert hidden.status_code == 201 and hidden.json()["hidden"] is True
    status = client.get(f"/users/{USER}/recommendations/NEW/fan/explanation").json()["status"]
    assert status == "hidden"


def _get(base: str, path: str, **kwargs) -> httpx.Response:
    """One request on a connection of its own (so the kernel may hand it to any worker)."""
    with httpx.Client(base_url=base, timeout=30) as c:
        return c.get(path, **kwargs)


def _until_every_worker(base: str, workers: set[int], path: str, check) -> None:
    start, done = time.monotonic(), set()
    while done != workers:
        response = _get(base, path)
        if check(response):
            done.add(int(response.headers["x-recscope-worker"]))
        assert time.monotonic() - start < WITHIN, f"only workers {sorted(done)} of {sorted(workers)} agree"


def test_two_workers_hide_an_item_and_store_racing_feedback_once(tiny_run, rec, tmp_path):
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with Server(tiny_run, "--workers", "2", "--db", db, log=tmp_path / "serve.log", ready_in=120) as server:
        pids = set(server.workers())
        assert len(pids) == 2
        recs = f"/users/{USER}/recommendations"
        top = _get(server.base, recs).json()["items"][0]["item_id"]
        seen = set()
        for _ in range(200):  # both workers list it before the hide
            response = _get(server.base, recs)
            assert top in [r["item_id"] for r in response.json()["items"]]
            seen.add(int(response.headers["x-recscope-worker"]))
            if seen == pids:
                break
        assert seen == pids

        with httpx.Client(base_url=server.base, timeout=30) as c:
            assert c.put(f"/items/{top}", json={"hidden": True}).json()["hidden"] is True
        _until_every_worker(server.base, pids, recs, lambda r: top not in [i["item_id"] for i in r.json()["items"]])
        # Once a worker has it, it has it for good: no answer from either lists the item again.
        for _ in range(20):
            assert top not in [i["item_id"] for i in _get(server.base, recs).json()["items"]]

        # The same feedback sent by 8 clients at once, to whichever worker: stored once.
        served = _get(server.base, recs).json()
        feedback = {
            "request_id": served["request_id"],
            "user_id": USER,
            "item_id": served["items"][0]["item_id"],
            "action": "click",
            "feedback_id": "race-1",
        }
        start, answers = threading.Barrier(8), []

        def send() -> None:
            with httpx.Client(base_url=server.base, timeout=30) as c:
                start.wait()
                response = c.post("/feedback", json=feedback)
                answers.append((response.status_code, response.json()["duplicate"]))

        threads = [threading.Thread(target=send) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) == [(200, True)] * 7 + [(201, False)]
        with Store.open(db) as store:
            assert len(store.served(served["request_id"]).feedback) == 1

        with httpx.Client(base_url=server.base, timeout=30) as c:
            assert c.put(f"/items/{top}", json={"hidden": False}).json()["hidden"] is False
        _until_every_worker(server.base, pids, recs, lambda r: top in [i["item_id"] for i in r.json()["items"]])


# -- filters ----------------------------------------------------------------------------------


def test_include_filters_restrict_a_list_to_attribute_values(client, rec):
    ranked = [r.item_id for r in rec.recommend(user=USER, k=rec.data.n_items)]  # every item it may get, best first

    def only(keep, k: int = 6) -> list[str]:
        return [i for i in ranked if keep(i)][:k]

    def get(k: int = 6, **params) -> list[str]:
        return _ids(client.get(f"/users/{USER}/recommendations", params={"k": k, **params}))

    electronics = get(include_attribute="category=Electronics")  # a level of the category tree
    assert electronics == only(lambda i: "Electronics" in _labels(rec, i, "category")) and len(electronics) == 6
    either = get(k=1000, include_attribute=["category=Phones", "category=Cameras"])  # one field: ORed
    assert either == only(lambda i: _labels(rec, i, "category") & {"Phones", "Cameras"}, k=1000)
    assert {"Phones", "Cameras"} <= set().union(*(_labels(rec, i, "category") for i in either)), "both kinds in it"
    brand = next(iter(_labels(rec, electronics[0], "brand")))
    both = get(include_attribute=["category=Electronics", f"brand={brand}"])  # two fields: ANDed
    assert both == only(lambda i: "Electronics" in _labels(rec, i, "category") and brand in _labels(rec, i, "brand"))
    assert both and all(brand in _labels(rec, i, "brand") for i in both)
    not_brand = get(include_attribute="category=Electronics", exclude_attribute=f"brand={brand}")
    assert not_brand == only(
        lambda i: "Electronics" in _labels(rec, i, "category") and brand not in _labels(rec, i, "brand")
    )

    history = [rec.data.item_ids[i] for i in rec.history(USER)]
    body = {"history": history, "k": 6, "include_attributes": ["category=Electronics"]}
    anonymous = client.post("/recommendations", json=body)
    assert _ids(anonymous) == electronics, "the same history anonymously: the same list"

    for bad, named in (("colour=red", "colour"), ("category=Nope", "Nope"), ("category", "field=value")):
        refused = client.get(f"/users/{USER}/recommendations", params={"include_attribute": bad})
        assert refused.status_code == 422 and named in refused.json()["error"] and refused.json()["fix"], bad
        assert "include_attribute" in refused.json()["error"]
    refused = client.post("/recommendations", json={**body, "include_attributes": ["colour=red"]})
    assert refused.status_code == 422 and "include_attributes 'colour=red'" in refused.json()["error"]


# -- similar items ----------------------------------------------------------------------------


def test_similar_items_are_what_the_model_scores_after_the_item_alone(client, rec, db):
    item = rec.data.item_ids[5]
    index = rec.data.find(item)
    got = client.get(f"/items/{item}/similar", params={"k": 5})
    assert got.status_code == 200 and set(got.json()) == {"request_id", "model_version", "item_id", "items"}
    body = got.json()
    scores = rec.scores(np.array([index]))  # the model's scores after a history of the item alone, item hidden
    best = np.argsort(-scores.numpy())[:5]
    assert body["item_id"] == item and _ids(got) == [rec.data.item_ids[i] for i in best]
    assert [r["score"] for r in body["items"]] == pytest.approx(scores[best].tolist(), abs=1e-5)
    assert item not in _ids(got)
    with Store.open(db) as store:
        assert [i for i, _ in store.served(body["request_id"]).items] == _ids(got), "logged as served"

    explained = client.get(f"/items/{item}/similar", params={"k": 5, "explain": True}).json()["items"]
    assert [r["item_id"] for r in explained] == _ids(got)
    python = rec.explain(history=[item], top=5, k=5, counterfactual=False)
    title = rec.data.title(index)
    for row, expl in zip(explained, python, strict=True):
        reason = row["reason"]
        shared = {
            f.name: sorted(set(f.labels(index)) & set(f.labels(rec.data.find(row["item_id"])))) for f in rec.data.fields
        }
        assert reason["shared"] == {name: values for name, values in shared.items() if values}
        assert reason["reads"] == pytest.approx(expl.attributes_history) and reason["method"] == expl.attributes_method
        assert reason["own"] == pytest.approx(expl.attributes_candidate)
        assert f"Scored {row['score']:.3f} after “{title}”" in reason["sentence"]
        pushing = max(reason["reads"], key=reason["reads"].get)
        assert reason["reads"][pushing] <= 0 or f"its {pushing}" in reason["sentence"].replace("id embedding", "id")
        for name, values in reason["shared"].items():
            assert f"{name} {', '.join(values)}" in reason["sentence"]

    hidden = _ids(got)[0]
    assert client.put(f"/items/{hidden}", json={"hidden": True}).status_code == 200
    assert _ids(client.get(f"/items/{item}/similar", params={"k": 4})) == _ids(got)[1:5]
    assert client.put(f"/items/{item}", json={"hidden": True}).status_code == 200
    assert _ids(client.get(f"/items/{item}/similar", params={"k": 4})) == _ids(got)[1:5], "a hidden item's page"

    missing = client.get("/items/NO-SUCH-ITEM/similar")
    assert missing.status_code == 404 and "NO-SUCH-ITEM" in missing.json()["error"]
    assert client.get(f"/items/{item}/similar", params={"k": 0}).status_code == 422


def test_similar_items_of_ids_with_slashes(client, rec):
    for item_id in ("shoes/trail/42", "odd/similar"):
        assert client.put(f"/items/{item_id}", json={"title": item_id}).status_code == 201
    assert client.get("/items/shoes/trail/42/similar").json()["item_id"] == "shoes/trail/42"
    assert client.get("/items/shoes/trail/42").json()["item_id"] == "shoes/trail/42"
    assert client.get("/items/odd/similar/similar").json()["item_id"] == "odd/similar"
    ambiguous = client.get("/items/odd/similar")  # the similar list of "odd", which is no item
    assert ambiguous.status_code == 404 and "'odd/similar'" in ambiguous.json()["error"]
    assert "/items/odd/similar/similar" in ambiguous.json()["fix"]
    listed = client.get("/items", params={"offset": rec.data.n_items}).json()["items"]
    assert [i["item_id"] for i in listed] == ["shoes/trail/42", "odd/similar"]


# -- feedback ---------------------------------------------------------------------------------


def test_feedback_sent_twice_is_stored_once_and_a_reused_id_is_409(client, db):
    served = client.get(f"/users/{USER}/recommendations", params={"k": 3}).json()
    shown = [r["item_id"] for r in served["items"]]
    body = {"request_id": served["request_id"], "user_id": USER, "item_id": shown[0], "action": "click"}

    first = client.post("/feedback", json={**body, "feedback_id": "fb-1"})
    assert first.status_code == 201 and first.json() == {**body, "feedback_id": "fb-1", "duplicate": False}
    again = client.post("/feedback", json={**body, "feedback_id": "fb-1"})
    assert again.status_code == 200 and again.json() == {**body, "feedback_id": "fb-1", "duplicate": True}

    other = client.post("/feedback", json={**body, "feedback_id": "fb-1", "action": "purchase", "item_id": shown[1]})
    assert other.status_code == 409
    error = other.json()["error"]
    assert "fb-1" in error and f"item_id '{shown[0]}' (now '{shown[1]}')" in error
    assert "action 'click' (now 'purchase')" in error and "user_id" not in error and other.json()["fix"]

    assert client.post("/feedback", json={**body, "feedback_id": "fb-2"}).status_code == 201
    assert client.post("/feedback", json=body).status_code == 201  # no id: stored each time, as before
    assert client.post("/feedback", json=body).status_code == 201
    with Store.open(db) as store:
        assert len(store.served(served["request_id"]).feedback) == 4  # fb-1, fb-2 and the two without an id

    for bad in ("", "x" * 129, "a\x00b"):
        refused = client.post("/feedback", json={**body, "feedback_id": bad})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "feedback_id"]
    assert client.post("/feedback", json={**body, "feedback_id": "x" * 128}).status_code == 201


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_racing_workers_store_a_feedback_id_once_and_the_database_refuses_a_second(backend, tmp_path, request):
    """Eight stores (eight workers' connections) add one feedback_id at the same moment."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    with Store.open(url) as store:
        store.log_served("r-race", "u1", "v1", [("a", 1.0), ("b", 0.5)])
    stores = [Store.open(url) for _ in range(8)]
    start, results, errors = threading.Barrier(len(stores)), [], []

    def add(store: Store) -> None:
        start.wait()
        try:
            results.append(store.add_feedback("r-race", "u1", "a", "click", feedback_id="same"))
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=add, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in stores:
        store.close()
    assert not errors, errors
    stored = [r for r in results if r is None]
    assert len(stored) == 1, "one writer stored it"
    assert {(r.request_id, r.user_id, r.item_id, r.action, r.feedback_id) for r in results if r is not None} == {
        ("r-race", "u1", "a", "click", "same")
    }, "the others got the stored row back"

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM feedback WHERE feedback_id = 'same'")).scalar() == 1
        with pytest.raises(IntegrityError), engine.begin() as connection:  # the database itself refuses a second
            connection.execute(
                text(
                    "INSERT INTO feedback (request_id, user_key, user_id, item_id, action, created_at, feedback_id)"
                    " VALUES ('r-race', 'k', 'u1', 'b', 'click', 0, 'same')"
                )
            )
    finally:
        engine.dispose()


# -- paging -----------------------------------------------------------------------------------


def test_items_and_users_come_in_pages_with_their_totals(client, rec):
    assert client.put("/items/ADDED-1", json={"title": "Added", "attributes": {"colour": "red"}}).status_code == 201
    assert client.put(f"/items/{rec.data.item_ids[3]}", json={"hidden": True}).status_code == 200
    pages, offset = [], 0
    while True:
        page = client.get("/items", params={"limit": 7, "offset": offset}).json()
        assert page["total"] == rec.data.n_items + 1
        if not page["items"]:
            break
        pages += page["items"]
        offset += 7
    assert [i["item_id"] for i in pages] == [*rec.data.item_ids[1:], "ADDED-1"], "trained order, then added"
    for shown in (pages[2], pages[-1], pages[40]):
        assert shown == client.get(f"/items/{shown['item_id']}").json(), "each as GET /items/{id} shows it"
    assert pages[2]["hidden"] is True and pages[-1]["unused"] == ["colour=red"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "many"}):
        assert client.get("/items", params=bad).status_code == 422, bad
    assert len(client.get("/items").json()["items"]) == 100, "100 by default"

    events = [
        {"event_id": "p-1", "user_id": "new-b", "item_id": rec.data.item_ids[1]},
        {"event_id": "p-2", "user_id": "new-a", "item_id": rec.data.item_ids[2]},
        {"event_id": "p-3", "user_id": "new-b", "item_id": rec.data.item_ids[3]},
        {"event_id": "p-4", "user_id": USER, "item_id": rec.data.item_ids[4]},
    ]
    assert client.post("/events", json={"events": events}).json()["accepted"] == 4
    n = rec.data.n_users
    users, offset = [], 0
    while offset <= n + 2:
        page = client.get("/users", params={"limit": 50, "offset": offset}).json()
        assert page["total"] == n + 2
        users += page["users"]
        offset += 50
    assert [u["user_id"] for u in users] == [*rec.data.user_ids, "new-b", "new-a"], "run order, then first event"
    assert users[-2:] == [
        {"user_id": "new-b", "source": "store", "run_events": 0, "stored_events": 2},
        {"user_id": "new-a", "source": "store", "run_events": 0, "stored_events": 1},
    ]
    mine = next(u for u in users if u["user_id"] == USER)
    assert mine == {"user_id": USER, "source": "run", "run_events": len(rec.history(USER)), "stored_events": 1}
    tail = client.get("/users", params={"limit": 3, "offset": n - 1}).json()["users"]
    assert [u["user_id"] for u in tail] == [rec.data.user_ids[-1], "new-b", "new-a"]
    assert client.get("/users", params={"limit": 1001}).status_code == 422
