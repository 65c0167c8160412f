"""The live web view's routes (GET /ui and its data and search routes) over a tiny run whose
catalog holds hostile titles and ids: read-only by default (what-if answers, nothing stored, not
even the list shown), writing only with ``ui_writes``; the page in a real browser is
tests/test_ui_browser.py."""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import HOSTILE_BRAND, HOSTILE_ID, HOSTILE_TITLE, HOSTILE_USER, LONG_TITLE, RTL_TITLE
from recscope.recommend import Recommender
from recscope.serve.app import create_app
from recscope.serve.settings import Settings

USER = "U00007"


@pytest.fixture(scope="module")
def rec(hostile_run) -> Recommender:
    return Recommender.load(hostile_run)


@pytest.fixture(scope="module")
def store_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-store") / "store.sqlite"


@pytest.fixture(scope="module")
def client(hostile_run, store_file):
    """The service as `recscope serve` starts it: the page read-only."""
    with TestClient(create_app(Settings(run=hostile_run, db=f"sqlite:///{store_file}"))) as c:
        yield c


@pytest.fixture(scope="module")
def writer(hostile_run, tmp_path_factory):
    """The service started with --ui-writes: the page acts as the shopper."""
    db = f"sqlite:///{tmp_path_factory.mktemp('ui-writes') / 'store.sqlite'}"
    with TestClient(create_app(Settings(run=hostile_run, db=db, ui_writes=True))) as c:
        yield c


def rows(store_file: Path) -> dict[str, int]:
    """How many rows each table of the store holds that a page's click could add."""
    with sqlite3.connect(store_file) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events", "served", "feedback")}


def _data(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _recs(data: dict) -> list[str]:
    return [r["id"] for r in data["histories"][0]["recs"]]


def test_the_page_carries_its_code_inline_under_a_strict_policy(client):
    page = client.get("/ui", params={"user": USER})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    html = page.text
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 2 and html.count("<script") == 2  # report.js (shared) and live.js
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert "function drawHeatmap" in scripts[0] and "hooks.recItem = decorate" in scripts[1]
    for rule in ("default-src 'none'", "connect-src 'self'", "img-src 'self' data:", "frame-ancestors 'none'"):
        assert rule in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert not re.search(r"<(script|link|img|iframe)[^>]*(src|href)=(?!\"data:)", html), "nothing fetched by markup"
    assert not re.search(r"https?://", html.replace("http://www.w3.org/2000/svg", "")), "no external URL"
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"
    # read-only unless started with --ui-writes, and it says so before any script runs
    assert '<body class="live" data-writes="off">' in html and "Read-only: nothing you do here is stored." in html
    assert "Acting as the shopper" not in html
    # the shared "why" markup report.js draws into, with the live page's own parts around it
    for element in ("heatmap", "attention", "bars-history", "counterfactual", "method", "layer", "head", "changes"):
        assert f'id="{element}"' in html


def test_shopper_data_is_the_report_contract_for_the_served_list(client, writer, rec):
    data = _data(client.get("/ui/data", params={"user": USER, "k": 5}))
    case = data["histories"][0]
    method = rec.default_method()
    assert data["live"]["method"] == method and list(case["explanations"]) == [method]
    served = client.get(f"/users/{USER}/recommendations", params={"k": 5}).json()
    assert _recs(data) == [r["item_id"] for r in served["items"]]
    assert [r["rank"] for r in case["recs"]] == [1, 2, 3, 4, 5]
    expected = rec.explain(user=USER, top=5, k=5, method=method)
    assert case["explanations"][method]["sentences"] == [e.sentence for e in expected]
    assert case["length"] == len(rec.history(USER)) and data["live"]["events"] == case["length"]
    assert {"layers", "heads", "methods", "default_method"} <= set(data) and data["title"].startswith("recscope live: ")
    assert len(case["attention"]) == data["layers"] and len(case["attention"][0]) == data["heads"]
    assert data["live"]["request_id"] is None, "a read-only page logs no served list"
    # with writes on, the list is served like any other: feedback names it by its request id
    data = _data(writer.get("/ui/data", params={"user": USER, "k": 5}))
    feedback = {"request_id": data["live"]["request_id"], "user_id": USER, "item_id": _recs(data)[1]}
    assert writer.post("/feedback", json={**feedback, "action": "click"}).status_code == 201


def test_with_writes_on_the_page_says_it_acts_as_the_shopper(writer):
    html = writer.get("/ui").text
    assert '<body class="live" data-writes="on">' in html and "Acting as the shopper." in html
    words = " ".join(html.split())
    assert "write real events and feedback for the shopper shown" in words and "Read-only:" not in html


def test_what_if_is_answered_and_nothing_is_stored(client, store_file, rec):
    """Read-only, the page's buttons ask GET /ui/data with add= and hide=: the answer is what
    POST /what-if says the list would become, and the store gains no row, not even a served list."""
    user = "U00021"
    before = rows(store_file)
    real = _data(client.get("/ui/data", params={"user": user}))
    bought = _recs(real)[0]
    what_if = _data(client.get("/ui/data", params={"user": user, "add": [bought]}))
    expected = client.post("/what-if", json={"user_id": user, "add": [bought]}).json()
    assert _recs(what_if) == [r["item_id"] for r in expected["after"]] and _recs(real) == [
        r["item_id"] for r in expected["before"]
    ]
    case = what_if["histories"][0]
    assert case["history"][-1]["id"] == bought and case["length"] == real["histories"][0]["length"] + 1
    assert what_if["live"]["recent"][0] == {
        "id": bought,
        "title": rec.data.title(rec.data.item_index(bought)),
        "event": "purchase",
        "source": "request",
    }
    assert what_if["live"]["simulated"] == {"add": [bought], "hide": []} and what_if["live"]["request_id"] is None
    # a simulated dismissal hides the item; the rest move up by one
    hidden = _data(client.get("/ui/data", params={"user": user, "hide": _recs(real)[1]}))
    assert _recs(hidden)[:9] == _recs(real)[:1] + _recs(real)[2:10]
    assert hidden["live"]["dismissed"] == [] and hidden["live"]["simulated"]["hide"] == [_recs(real)[1]]
    # an anonymous session rides along the same way: add= is its history
    history = [rec.data.item_ids[i] for i in rec.history(USER)[:4]]
    session = _data(client.get("/ui/data", params={"add": history, "hide": ["P0005"], "k": 6}))
    posted = _data(client.post("/ui/data", json={"history": history, "exclude": ["P0005"], "k": 6}))
    assert _recs(session) == _recs(posted) and session["live"]["user"] is None and "P0005" not in _recs(session)
    assert rows(store_file) == before, "a read-only page stored something"
    assert client.get("/ui/data", params={"user": user}).json()["histories"][0]["recs"] == real["histories"][0]["recs"]


def test_a_purchase_and_a_dismissal_change_the_next_data(writer):
    client = writer
    user = "U00011"
    before = _recs(_data(client.get("/ui/data", params={"user": user})))
    event = {"event_id": "ui-buy-1", "user_id": user, "item_id": before[0], "event": "purchase"}
    assert client.post("/events", json={"events": [event]}).status_code == 200
    after = _data(client.get("/ui/data", params={"user": user}))
    case = after["histories"][0]
    assert _recs(after) != before and before[0] not in _recs(after)
    assert case["history"][-1]["id"] == before[0], "the purchase is the newest history row"
    assert after["live"]["recent"][0] == {
        "id": before[0],
        "title": case["history"][-1]["title"],
        "event": "purchase",
        "source": "store",
    }
    dismiss = {"request_id": after["live"]["request_id"], "user_id": user, "item_id": _recs(after)[0]}
    assert client.post("/feedback", json={**dismiss, "action": "dismiss"}).status_code == 201
    again = _data(client.get("/ui/data", params={"user": user}))
    assert _recs(again)[:9] == _recs(after)[1:] and again["live"]["dismissed"] == [_recs(after)[0]]
    client.delete(f"/users/{user}")


def test_an_anonymous_session_with_dismissals_and_unknown_ids(client, rec):
    history = [rec.data.item_ids[i] for i in rec.history(USER)[:4]]
    first = _data(client.post("/ui/data", json={"history": [*history, "NOT-AN-ITEM"], "k": 6}))
    assert first["live"]["user"] is None and first["live"]["unknown"] == ["NOT-AN-ITEM"]
    assert _recs(first) == [r.item_id for r in rec.recommend(history=history, k=6)]
    hidden = _recs(first)[:2]
    second = _data(client.post("/ui/data", json={"history": history, "exclude": hidden, "k": 6}))
    assert _recs(second)[:4] == _recs(first)[2:] and not set(hidden) & set(_recs(second))
    assert [r["rank"] for r in second["histories"][0]["recs"]] == [1, 2, 3, 4, 5, 6]


def test_another_method_is_explained_on_request(client):
    data = _data(client.get("/ui/data", params={"user": USER, "method": "attention"}))
    case = data["histories"][0]
    assert list(case["explanations"]) == ["attention"] and data["live"]["method"] == "attention"
    assert list(case["attributes"]) == ["shapley"], "attention's attribute bars come from Shapley values"
    assert len(data["methods"]) == 6, "the method control offers them all"


def test_hostile_ids_and_titles_come_back_whole(client):
    data = _data(client.get("/ui/data", params={"user": HOSTILE_USER}))
    case = data["histories"][0]
    assert data["live"]["user"] == case["user"] == HOSTILE_USER and case["label"] == f"shopper {HOSTILE_USER}"
    assert [i["id"] for i in case["history"]][:4] == ["P0001", HOSTILE_ID, "P0003", "P0004"]
    titles = [i["title"] for i in case["history"]]
    assert (titles[0], titles[2], titles[3]) == (HOSTILE_TITLE, RTL_TITLE, LONG_TITLE)
    assert case["history"][0]["attrs"]["brand"] == [HOSTILE_BRAND]


def test_bad_input_is_refused_with_what_to_do(client):
    missing = client.get("/ui/data", params={"user": "nobody-at-all"})
    assert missing.status_code == 404 and "nobody-at-all" in missing.json()["error"]
    bogus = client.get("/ui/data", params={"user": USER, "method": "bogus"})
    assert bogus.status_code == 422 and "bogus" in bogus.json()["error"] and "shapley" in bogus.json()["fix"]
    unknown = client.post("/ui/data", json={"history": ["NOPE-1", "NOPE-2"]})
    assert unknown.status_code == 422 and "NOPE-1" in unknown.json()["error"] and unknown.json()["fix"]
    nothing = client.get("/ui/data")
    assert nothing.status_code == 422 and "neither user nor add" in nothing.json()["error"]
    assert "add=ITEM" in nothing.json()["fix"]
    unknown = client.get("/ui/data", params={"user": USER, "add": ["NOPE-1"]})
    assert unknown.status_code == 404 and "NOPE-1" in unknown.json()["error"] and "P00" in unknown.json()["fix"]
    many = {"user": USER, "add": ["P0005"] * 101}
    for params, field in (({"user": ""}, "user"), ({"user": USER, "k": 0}, "k"), (many, "add")):
        refused = client.get("/ui/data", params=params)
        assert refused.status_code == 422 and field in [e["loc"][-1] for e in refused.json()["detail"]]
    for body, field in (({"history": []}, "history"), ({"history": ["P0005"], "colour": 1}, "colour")):
        refused = client.post("/ui/data", json=body)
        assert refused.status_code == 422 and field in [e["loc"][-1] for e in refused.json()["detail"]]
    assert client.get("/ui/items", params={"q": "x" * 201}).status_code == 422
    assert client.get("/ui/items", params={"q": "P", "limit": 0}).status_code == 422


def test_search_finds_items_by_id_or_title_and_returns_them_whole(client, rec):
    hits = client.get("/ui/items", params={"q": "p0010"}).json()
    assert hits[0]["item_id"] == "P0010" and hits[0]["title"] == rec.data.title(rec.data.item_index("P0010"))
    assert all(h["item_id"].startswith("P0010") or "p0010" in h["title"].casefold() for h in hits)
    word = rec.data.title(rec.data.item_index("P0020")).split()[0]
    hits = client.get("/ui/items", params={"q": word.upper(), "limit": 50}).json()
    assert "P0020" in [h["item_id"] for h in hits] and all(word.casefold() in h["title"].casefold() for h in hits)
    assert len(client.get("/ui/items", params={"q": "P", "limit": 3}).json()) == 3
    assert client.get("/ui/items", params={"q": "  "}).json() == []
    assert [h["item_id"] for h in client.get("/ui/items", params={"q": "'><svg onload"}).json()] == [HOSTILE_ID]
    long = client.get("/ui/items", params={"q": "window.__pwned=1</script>L"}).json()
    assert [h["title"] for h in long] == [LONG_TITLE]
    assert [h["title"] for h in client.get("/ui/items", params={"q": "<img src=x"}).json()] == [HOSTILE_TITLE]


def test_search_finds_shoppers(client):
    assert client.get("/ui/shoppers", params={"q": "u0000", "limit": 3}).json() == ["U00000", "U00001", "U00002"]
    assert HOSTILE_USER in client.get("/ui/shoppers", params={"q": "<svg"}).json()
    assert len(client.get("/ui/shoppers").json()) == 10


def test_with_an_api_key_the_page_and_its_data_stay_open(hostile_run, tmp_path):
    settings = Settings(run=hostile_run, db=f"sqlite:///{tmp_path / 'keyed.sqlite'}", api_key="ui-key-5")
    with TestClient(create_app(settings)) as keyed:
        page = keyed.get("/ui")
        assert page.status_code == 200 and 'id="api-key"' in page.text and "ui-key-5" not in page.text
        assert _recs(_data(keyed.get("/ui/data", params={"user": USER})))
        assert keyed.get("/ui/items", params={"q": "P00"}).status_code == 200
        event = {"events": [{"event_id": "ui-k", "user_id": USER, "item_id": "P0005", "event": "view"}]}
        assert keyed.post("/events", json=event).status_code == 401, "what the page posts needs the key"
        assert keyed.post("/events", json=event, headers={"X-API-Key": "ui-key-5"}).status_code == 200


def test_with_a_read_key_shoppers_data_needs_it(hostile_run, tmp_path):
    """Who the shoppers are and what they did is personal data: behind the read key when the service
    has one (the page asks for it and sends it on every request); the page and the catalog stay open."""
    settings = Settings(run=hostile_run, db=f"sqlite:///{tmp_path / 'read.sqlite'}", read_key="ui-read-7")
    with TestClient(create_app(settings)) as keyed:
        assert keyed.get("/ui").status_code == 200 and keyed.get("/ui/items", params={"q": "P00"}).status_code == 200
        for path, params in (("/ui/data", {"user": USER}), ("/ui/shoppers", {})):
            assert keyed.get(path, params=params).status_code == 401
            assert keyed.get(path, params=params, headers={"X-API-Key": "ui-read-7"}).status_code == 200
