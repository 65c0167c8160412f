"""The live service over a tiny run: TestClient for the routes, one real uvicorn process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx2 as httpx  # what starlette's TestClient uses; httpx there is deprecated
import pytest
from fastapi.testclient import TestClient

from recscope.recommend import Recommender
from recscope.serve.app import create_app
from recscope.serve.settings import Settings
from servers import Server, recscope

USER = "U00007"


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the session's tiny run: the client keeps its store in the run (store.sqlite)."""
    return Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("serve") / "run"))


@pytest.fixture(scope="module")
def rec(run) -> Recommender:
    return Recommender.load(run)


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(Settings(run=run))) as c:
        yield c


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["item_id"] for r in response.json()["items"]]


def _event(event_id, user, item, **more):
    return {"event_id": event_id, "user_id": user, "item_id": item, **more}


def test_health(client):
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["model"] and ready.json()["store"]
    assert re.fullmatch(r"[0-9a-f]{16}", ready.json()["model_version"])


def test_settings_never_fail_at_import_and_an_app_without_a_run_is_not_ready():
    app = create_app(Settings())
    assert TestClient(app).get("/health/ready").status_code == 503  # no lifespan run: nothing loaded


def test_recommend_for_a_known_user(client, rec):
    response = client.get(f"/users/{USER}/recommendations", params={"k": 5})
    body = response.json()
    assert [r["rank"] for r in body["items"]] == [1, 2, 3, 4, 5]
    assert body["request_id"] and body["model_version"] and body["unknown_items"] == []
    assert _ids(response) == [r.item_id for r in rec.recommend(user=USER, k=5)], "same as the Python API"
    assert all(r["sentence"] is None and r["explanation"] is None for r in body["items"])


def test_a_posted_purchase_changes_the_next_answer(client, rec):
    user = "U00011"
    before = _ids(client.get(f"/users/{user}/recommendations", params={"k": 10}))
    length = len(client.get(f"/users/{user}/history").json()["items"])
    bought = before[0]
    event = _event("e-headline-1", user, bought, timestamp="2030-01-01T00:00:00Z", value=9.5)
    assert client.post("/events", json={"events": [event]}).json() == {"accepted": 1, "duplicates": 0}
    history = client.get(f"/users/{user}/history").json()
    assert len(history["items"]) == length + 1
    assert history["items"][-1] == {
        "item_id": bought,
        "event": "purchase",
        "timestamp": 1893456000.0,
        "source": "store",
        "value": 9.5,
    }
    after = _ids(client.get(f"/users/{user}/recommendations", params={"k": 10}))
    assert after != before and bought not in after
    assert client.post("/events", json={"events": [event]}).json() == {"accepted": 0, "duplicates": 1}
    forgot = client.delete(f"/users/{user}").json()
    assert forgot["deleted"]["events"] == 1 and forgot["deleted"]["served"] == 2
    # forgotten: their training history is hidden too, so they are an unknown visitor (issue 24)
    assert client.get(f"/users/{user}/recommendations", params={"k": 10}).json()["source"] == "fallback"


def test_ad_hoc_history_names_unknown_ids(client, rec):
    known = [rec.data.item_ids[i] for i in rec.history(USER)[:3]]
    body = client.post("/recommendations", json={"history": [*known, "NOPE-1"], "k": 4}).json()
    assert len(body["items"]) == 4 and not set(known) & {r["item_id"] for r in body["items"]}
    assert body["unknown_items"] == ["NOPE-1"]
    assert [r["item_id"] for r in body["items"]] == [r.item_id for r in rec.recommend(history=known, k=4)]


def test_explanations_are_the_python_apis(client, rec):
    top = rec.recommend(user=USER, k=3)[0].item_id
    method = rec.default_method()
    got = client.get(f"/users/{USER}/recommendations/{top}/explanation", params={"method": method}).json()
    want = json.loads(rec.explain(user=USER, item=top, method=method)[0].to_json())
    got.pop("ms"), want.pop("ms")  # time taken
    assert got.pop("model_version") == rec.version  # the service names the version that explained it
    assert got == want
    body = client.get(f"/users/{USER}/recommendations", params={"k": 2, "explain": True}).json()
    assert all(r["sentence"] and r["explanation"]["item_id"] == r["item_id"] for r in body["items"])


def test_a_dismissed_item_is_never_recommended(client, run):
    from recscope.serve.store import Store

    user = "U00013"
    first = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    with Store.for_run(run) as store:
        store.add_feedback(first["request_id"], user, first["items"][0]["item_id"], "dismiss")
    after = _ids(client.get(f"/users/{user}/recommendations", params={"k": 5}))
    assert first["items"][0]["item_id"] not in after
    assert after[:4] == [r["item_id"] for r in first["items"][1:]]


def _field(response) -> list:
    assert response.status_code == 422, response.text
    return [e["loc"][-1] for e in response.json()["detail"]]


def test_bad_input_is_422_naming_the_field_and_unknowns_are_404(client, rec):
    assert "k" in _field(client.get(f"/users/{USER}/recommendations", params={"k": 0}))
    assert "user_id" in _field(client.post("/events", json={"events": [{"event_id": "x", "item_id": "P1"}]}))
    extra = _event("x", USER, "P1", colour="red")
    assert "colour" in _field(client.post("/events", json={"events": [extra]}))
    assert "k" in _field(client.post("/recommendations", json={"history": ["P1"], "k": 0}))
    missing = client.get("/users/nobody-at-all/recommendations", params={"fallback": False})  # else: fallback
    assert missing.status_code == 404 and "nobody-at-all" in missing.json()["error"]
    assert client.get("/users/nobody-at-all/history").status_code == 404
    item = client.get(f"/users/{USER}/recommendations/NO-SUCH-ITEM/explanation")
    assert item.status_code == 404 and "NO-SUCH-ITEM" in item.json()["error"]
    bogus = client.get(f"/users/{USER}/recommendations", params={"explain": True, "method": "bogus"})
    assert bogus.status_code == 422 and "bogus" in bogus.json()["error"] and bogus.json()["fix"]
    bad_time = client.post("/events", json={"events": [_event("t", USER, "P1", timestamp="yesterday")]})
    assert bad_time.status_code == 422 and "timestamp" in bad_time.json()["error"]
    assert client.post("/events", json={"events": [_event("e-once", USER, rec.data.item_ids[1])]}).status_code == 200
    changed = client.post("/events", json={"events": [_event("e-once", USER, rec.data.item_ids[2])]})
    assert changed.status_code == 422 and "e-once" in changed.json()["error"]
    client.delete(f"/users/{USER}")


def test_unicode_and_markup_ids_come_back_exactly(client, rec):
    user = "<b>Zoë</b> & 用户 🛒\"'"
    odd_item = "<script>alert('x')</script>–ü"
    known = rec.data.item_ids[5]
    events = [_event("u-1", user, known, timestamp=100.0), _event("u-2", user, odd_item, timestamp=200.0)]
    assert client.post("/events", json={"events": events}).json() == {"accepted": 2, "duplicates": 0}
    history = client.get(f"/users/{user}/history").json()
    assert history["user_id"] == user and [h["item_id"] for h in history["items"]] == [known, odd_item]
    body = client.get(f"/users/{user}/recommendations", params={"k": 3}).json()
    assert body["unknown_items"] == [odd_item] and known not in {r["item_id"] for r in body["items"]}
    assert client.delete(f"/users/{user}").json()["deleted"]["events"] == 2


def test_docs_are_served_without_a_cdn(client):
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(
        r"""url: ?['"]([^'"]+)['"]""", page.text
    )
    assert not re.search(r"https?://", page.text.replace("http://testserver", "")), "no external URL"
    assets = [u for u in urls if u.startswith("/")]
    assert any(u.endswith(".js") for u in assets) and any(u.endswith(".css") for u in assets)
    for url in assets:
        assert client.get(url).status_code == 200, url


def test_a_non_loopback_host_or_a_missing_run_is_one_line_of_error(run, tmp_path):
    result = subprocess.run([recscope(), "serve", str(run), "--host", "0.0.0.0"], capture_output=True, text=True)
    assert result.returncode == 2 and "API key" in result.stderr and len(result.stderr.splitlines()) == 1
    result = subprocess.run([recscope(), "serve", str(tmp_path / "nope")], capture_output=True, text=True)
    assert result.returncode == 2 and "no run.json" in result.stderr and len(result.stderr.splitlines()) == 1


def test_an_api_key_lifts_the_loopback_rule_and_an_unset_key_variable_is_one_line(run, tmp_path):
    env = {**os.environ, "RECSCOPE_TEST_KEY": "cli-key-3"}
    env.pop("RECSCOPE_UNSET_KEY", None)
    unset = [recscope(), "serve", str(run), "--api-key-env", "RECSCOPE_UNSET_KEY"]
    for extra in ({}, {"RECSCOPE_UNSET_KEY": ""}):
        result = subprocess.run(unset, capture_output=True, text=True, env={**env, **extra})
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
        assert "RECSCOPE_UNSET_KEY" in result.stderr and "unset or empty" in result.stderr
    # with a key, 0.0.0.0 passes the host rule: what stops this run is the missing run.json
    cmd = [recscope(), "serve", str(tmp_path / "nope"), "--host", "0.0.0.0", "--api-key-env", "RECSCOPE_TEST_KEY"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "no run.json" in result.stderr and "API key" not in result.stderr
    assert "cli-key-3" not in result.stderr + result.stdout


def test_with_an_api_key_writes_and_admin_need_it_and_reads_stay_open(run, rec, tmp_path):
    settings = Settings(run=run, db=f"sqlite:///{tmp_path / 'keyed.sqlite'}", api_key="s3cret-key")
    assert "s3cret-key" not in repr(settings) + str(settings)
    user, item = "U00021", rec.data.item_ids[4]
    with TestClient(create_app(settings)) as keyed:
        good, bad = {"X-API-Key": "s3cret-key"}, {"X-API-Key": "s3cret-kex"}
        served = keyed.get(f"/users/{user}/recommendations", params={"k": 3})
        assert served.status_code == 200, "reads stay open"
        top = served.json()["items"][0]["item_id"]
        feedback = {"request_id": served.json()["request_id"], "user_id": user, "item_id": top, "action": "click"}
        writes = [
            ("post", "/events", {"json": {"events": [_event("k-1", user, item)]}}),
            ("post", "/feedback", {"json": feedback}),
            ("put", "/items/KEYED-1", {"json": {"title": "Keyed"}}),
            ("delete", f"/users/{user}", {}),
        ]
        for method, url, kwargs in writes:
            for headers in ({}, bad, {"X-API-Key": ""}):
                refused = keyed.request(method, url, headers=headers, **kwargs)
                assert refused.status_code == 401, (method, url, headers)
                assert "X-API-Key" in refused.json()["error"] and refused.json()["fix"]
            assert keyed.request(method, url, headers=good, **kwargs).status_code in (200, 201), (method, url)
        assert keyed.put("/items/KEYED-2", json={"title": ""}).status_code == 401, "the key is checked first"
        assert keyed.get("/items/KEYED-1").status_code == 200
        assert keyed.post("/what-if", json={"user_id": "U00022", "k": 3}).status_code == 200  # user: forgotten
        assert keyed.post("/recommendations", json={"history": [item], "k": 3}).status_code == 200
        assert keyed.get("/health/ready").status_code == 200 and keyed.get("/docs").status_code == 200


def test_recscope_serve_in_a_real_process(run, rec, tmp_path):
    db = f"sqlite:///{tmp_path / 'live.sqlite'}"
    args = ["--db", db, "--api-key-env", "RECSCOPE_TEST_KEY"]
    with Server(run, *args, log=tmp_path / "serve.log", env={"RECSCOPE_TEST_KEY": "live-key-7"}) as server:
        base = server.base
        before = _ids(httpx.get(f"{base}/users/{USER}/recommendations", params={"k": 5}))
        event = {"events": [_event("live-1", USER, before[0])]}
        assert httpx.post(f"{base}/events", json=event).status_code == 401
        key = {"X-API-Key": "live-key-7"}
        assert httpx.post(f"{base}/events", json=event, headers=key).json() == {"accepted": 1, "duplicates": 0}
        after = _ids(httpx.get(f"{base}/users/{USER}/recommendations", params={"k": 5}))
        assert before[0] not in after


def test_feedback_dismiss_hides_the_item_and_bad_feedback_is_refused(client):
    user = "U00017"
    first = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    top = first["items"][0]["item_id"]
    body = {"request_id": first["request_id"], "user_id": user, "item_id": top, "action": "dismiss"}
    posted = client.post("/feedback", json=body)
    assert posted.status_code == 201 and posted.json() == {**body, "feedback_id": None, "duplicate": False}
    after = _ids(client.get(f"/users/{user}/recommendations", params={"k": 5}))
    assert top not in after and after[:4] == [r["item_id"] for r in first["items"][1:]]
    helpful = {**body, "item_id": first["items"][1]["item_id"], "action": "explanation_helpful"}
    assert client.post("/feedback", json=helpful).status_code == 201
    unknown = client.post("/feedback", json={**body, "request_id": "no-such-request"})
    assert unknown.status_code == 404 and "no-such-request" in unknown.json()["error"] and unknown.json()["fix"]
    assert "action" in _field(client.post("/feedback", json={**body, "action": "like"}))
    for name in ("request_id", "user_id", "item_id", "action"):
        assert name in _field(client.post("/feedback", json={k: v for k, v in body.items() if k != name}))
    assert "colour" in _field(client.post("/feedback", json={**body, "colour": "red"}))
    other = client.post("/feedback", json={**body, "user_id": "U00018"})
    assert other.status_code == 422 and "user_id" in other.json()["error"]
    absent = client.post("/feedback", json={**body, "item_id": "NOT-SHOWN"})
    assert absent.status_code == 422 and "NOT-SHOWN" in absent.json()["error"]
    client.delete(f"/users/{user}")


def test_what_if_on_the_live_history(client, rec):
    user = "U00019"
    held = [rec.data.item_ids[i] for i in rec.history(user)]
    top = rec.recommend(user=user, k=3)[0].item_id
    body = client.post("/what-if", json={"user_id": user, "remove": held[-1:], "add": [top], "k": 5}).json()
    want = rec.what_if(user, remove=held[-1:], add=[top], k=5)
    assert [r["item_id"] for r in body["before"]] == [r["item_id"] for r in want["before"]]
    assert [r["item_id"] for r in body["after"]] == [r["item_id"] for r in want["after"]]
    assert body["entered"] == want["entered"] and body["left"] == want["left"] and body["unknown"] == []
    assert top in body["left"] and len(body["before"]) == 5
    # a stored event joins the live history: it can be removed
    assert client.post("/events", json={"events": [_event("wi-1", user, top)]}).status_code == 200
    live = client.post("/what-if", json={"user_id": user, "remove": [top]}).json()
    assert len(live["before"]) == 10 and top in [r["item_id"] for r in live["after"]]
    not_held = client.post("/what-if", json={"user_id": user, "remove": ["NOT-HELD-9"]})
    assert not_held.status_code == 422 and "NOT-HELD-9" in not_held.json()["error"]
    not_item = client.post("/what-if", json={"user_id": user, "add": ["NO-SUCH-ITEM"]})
    assert not_item.status_code == 404 and "NO-SUCH-ITEM" in not_item.json()["error"]
    nobody = client.post("/what-if", json={"user_id": "nobody-at-all"})
    assert nobody.status_code == 404 and "nobody-at-all" in nobody.json()["error"]
    assert "k" in _field(client.post("/what-if", json={"user_id": user, "k": 0}))
    assert "user_id" in _field(client.post("/what-if", json={"remove": []}))
    assert "remove" in _field(client.post("/what-if", json={"user_id": user, "remove": "P1"}))
    assert "colour" in _field(client.post("/what-if", json={"user_id": user, "colour": 1}))
    client.delete(f"/users/{user}")


def test_items_of_the_run_and_of_the_store(client, rec):
    index = 3
    item_id = rec.data.item_ids[index]
    got = client.get(f"/items/{item_id}").json()
    assert got["item_id"] == item_id and got["title"] == rec.data.title(index)
    assert got["source"] == "run" and got["recommendable"] is True and got["attributes"]
    for f in rec.data.fields:
        labels = f.labels(index)
        if labels:
            assert got["attributes"][f.name] == (labels if f.kind == "multi" else labels[0])
    body = {"title": "Nova Lamp <b>2</b>", "attributes": {"brand": "Nova", "tags": ["home", "light"], "price": 19.5}}
    created = client.put("/items/NEW-ITEM/1", json=body)
    assert created.status_code == 201, created.text
    unused = ["brand=Nova", "tags=home", "tags=light"]  # no trained item has brand Nova; no field "tags"
    assert created.json() == {
        **body,
        "item_id": "NEW-ITEM/1",
        "source": "store",
        "recommendable": True,
        "unused": unused,
        "hidden": False,
        "deleted": False,
    }
    assert client.get("/items/NEW-ITEM/1").json() == created.json()
    updated = client.put("/items/NEW-ITEM/1", json={"title": "Nova Lamp 3"})
    assert updated.status_code == 200 and updated.json()["title"] == "Nova Lamp 3"
    assert updated.json()["attributes"] == {}
    in_run = client.put(f"/items/{item_id}", json=body)
    assert in_run.status_code == 409 and item_id in in_run.json()["error"] and in_run.json()["fix"]
    missing = client.get("/items/NO-SUCH-ITEM")
    assert missing.status_code == 404 and "NO-SUCH-ITEM" in missing.json()["error"]
    assert "title" in _field(client.put("/items/X", json={"attributes": {}}))
    assert "title" in _field(client.put("/items/X", json={"title": ""}))
    assert "colour" in _field(client.put("/items/X", json={"title": "t", "colour": "red"}))
    assert "attributes" in [
        e["loc"][1] for e in client.put("/items/X", json={"title": "t", "attributes": {"a": {"b": 1}}}).json()["detail"]
    ]
    assert client.get("/items/X").status_code == 404, "nothing stored by a refused PUT"


def test_a_body_over_the_limit_is_413_before_it_is_read(client, rec):
    item = rec.data.item_ids[1]
    big = {"events": [_event(f"big-{n}", "U00023", item, event="x" * 90) for n in range(8000)]}
    refused = client.post("/events", json=big)
    assert refused.status_code == 413 and "1048576" in refused.json()["error"]

    def chunks():
        yield b'{"events": ['
        for n in range(8000):
            yield json.dumps(_event(f"chunk-{n}", "U00023", item, event="x" * 90)).encode() + b","
        yield b"]}"

    chunked = client.post("/events", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and "1048576" in chunked.json()["detail"]
    assert client.get("/users/U00023/history").json()["items"][-1]["source"] == "run", "nothing stored"
    small_body = json.dumps({"events": [_event("small-1", "U00023", item)]}).encode()
    small = client.post("/events", content=iter([small_body]), headers={"content-type": "application/json"})
    assert small.status_code == 200
    client.delete("/users/U00023")


def test_metrics_count_requests_by_route_template_and_status(client):
    client.get(f"/users/{USER}/recommendations", params={"k": 2})
    client.get("/users/nobody-at-all/recommendations", params={"fallback": False})
    client.get("/no/such/path")
    page = client.get("/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    text = page.text
    route = "/users/{user_id:path}/recommendations"
    for status in ("200", "404"):
        assert re.search(
            rf'recscope_http_requests_total\{{method="GET",route="{re.escape(route)}",status="{status}"\}} [1-9]', text
        )
    assert 'route="unmatched",status="404"' in text
    assert f'recscope_http_request_duration_seconds_bucket{{le="0.005",method="GET",route="{route}"}}' in text
    assert "nobody-at-all" not in text, "ids never become labels"
