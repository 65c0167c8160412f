"""The live shape: a Recommender over a history source, a catalog that grows while it serves,
dismissed items that are no one's rival, and lists explained in one call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pg import postgres_server  # noqa: F401  (a fixture)
from recscope.cli import app as cli
from recscope.errors import DataError, RunError
from recscope.histories import Event, History, resolve
from recscope.recommend import Recommender
from recscope.serve.app import create_app
from recscope.serve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SPEC = "synthetic:users=200,items=120,seed=11"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("live") / "run"
    args = ["train", "--data", SPEC, "--out", str(out), "--config", str(ROOT / "configs" / "tiny.yaml")]
    result = CliRunner().invoke(cli, [*args, "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def rec(run) -> Recommender:
    return Recommender.load(run)  # a fresh one per test: tests grow its catalog


@pytest.fixture
def client(run, tmp_path):
    with TestClient(create_app(Settings(run=run, db=f"sqlite:///{tmp_path / 'store.sqlite'}"))) as c:
        yield c


class Sessions:
    """A history source of its own: what a notebook user or another service might plug in."""

    def __init__(self, rec: Recommender, sessions: dict[str, list[str]]):
        self.rec, self.sessions = rec, sessions

    def history(self, user_id: str) -> History:
        if user_id not in self.sessions:
            raise DataError(f"no session {user_id!r}")
        events = [Event(i, "view", float(t), "session") for t, i in enumerate(self.sessions[user_id])]
        return resolve(self.rec.data, user_id, events, in_run=False)


def test_the_recommender_reads_histories_from_its_source(rec):
    ids = [rec.data.item_ids[i] for i in (5, 9, 14)]
    rec.histories = Sessions(rec, {"s1": [*ids, "NOT-AN-ITEM"]})
    got = rec.recommend(user="s1", k=5)
    assert [r.item_id for r in got] == [r.item_id for r in rec.recommend(history=ids, k=5)]
    assert got.unknown == ["NOT-AN-ITEM"], "ids the catalog does not know are skipped and named"
    assert rec.explain(user="s1", top=2)[0].user == "s1"
    with pytest.raises(DataError, match="no session"):
        rec.recommend(user="s2")
    rec.histories = Sessions(rec, {"s3": ["NOT-AN-ITEM"]})
    with pytest.raises(RunError, match="none of the 1 history items"):
        rec.recommend(user="s3")


def test_an_added_item_is_scored_from_its_fields_with_a_zero_id_embedding(rec):
    twin = 7  # a trained item whose attributes the new item copies
    attributes = {}
    for f in rec.data.fields:
        labels = f.labels(twin)
        if f.kind == "numeric":
            low, high = (float(x) for x in labels[0].split("(")[1].rstrip(")").split("-"))
            attributes[f.name] = (low + high) / 2  # a price inside the twin's band
        else:
            attributes[f.name] = labels if f.kind == "multi" else labels[0]
    n = rec.data.n_items
    added = rec.set_item("NEW/1", "A new twin", attributes)
    assert (added.index, added.new, added.unused) == (n + 1, True, [])
    assert rec.model.cfg.n_items == rec.data.n_items == n + 1
    history = rec.history(rec.data.user_ids[3])
    scores = rec.scores(history)
    hidden = rec.model(rec.tensor(history)).hidden[0, -1]
    with torch.no_grad():
        expected = scores[twin] - hidden @ rec.model.item_emb.weight[twin]
        if rec.model.cfg.text_dim:  # its own title's text vector in place of the twin's
            text = rec.model.field_embeddings(torch.tensor([twin, n + 1]))["text"]
            expected += hidden @ (text[1] - text[0])
    assert torch.isfinite(scores[n + 1]) and torch.allclose(scores[n + 1], expected, atol=1e-4)
    ranked = rec.recommend(history=[rec.data.item_ids[i] for i in history], k=rec.data.n_items - len(history))
    assert "NEW/1" in [r.item_id for r in ranked], "recommendable at once"
    explained = rec.explain(history=[rec.data.item_ids[i] for i in history], item="NEW/1")[0]
    assert explained.rank is not None and explained.title == "A new twin" and explained.sentence
    again = rec.set_item("NEW/1", "A new twin, renamed", {"brand": "NoSuchBrand", "colour": ["red"]})
    assert (again.index, again.new) == (n + 1, False) and rec.data.n_items == n + 1
    assert again.unused == ["brand=NoSuchBrand", "colour=red"]
    with pytest.raises(RunError, match="trained catalog"):
        rec.set_item(rec.data.item_ids[1], "renamed", {})


def test_an_item_put_to_the_service_is_recommended_explained_and_kept_over_a_restart(run, tmp_path, rec):
    settings = Settings(run=run, db=f"sqlite:///{tmp_path / 'store.sqlite'}")
    user = rec.data.user_ids[4]
    twin = rec.recommend(user=user, k=1)[0].item_id  # the user's top item: its twin ranks high too
    attributes = {f.name: f.labels(rec.data.item_index(twin)) for f in rec.data.fields if f.kind != "numeric"}
    with TestClient(create_app(settings)) as client:
        put = client.put("/items/shop/new item", json={"title": "Twin <i>", "attributes": attributes})
        assert put.status_code == 201 and put.json()["recommendable"] is True, put.text
        explained = client.get(f"/users/{user}/recommendations/shop/new item/explanation")
        assert explained.status_code == 200, explained.text
        first = explained.json()
        assert first["item_id"] == "shop/new item" and first["rank"] >= 1 and first["title"] == "Twin <i>"
        listed = client.get(f"/users/{user}/recommendations", params={"k": first["rank"]}).json()
        assert listed["items"][-1]["item_id"] == "shop/new item"
    with TestClient(create_app(settings)) as client:  # a restart: the catalog is rebuilt from the store
        again = client.get(f"/users/{user}/recommendations/shop/new item/explanation").json()
        assert again["rank"] == first["rank"] and again["score"] == pytest.approx(first["score"], abs=1e-5)


def test_a_dismissed_item_is_no_rival_and_says_so(client, rec):
    user = rec.data.user_ids[6]
    first = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    top, second = first["items"][0]["item_id"], first["items"][1]["item_id"]
    before = client.get(f"/users/{user}/recommendations/{second}/explanation").json()
    feedback = {"request_id": first["request_id"], "user_id": user, "item_id": top, "action": "dismiss"}
    assert client.post("/feedback", json=feedback).status_code == 201
    gone = client.get(f"/users/{user}/recommendations/{top}/explanation").json()
    assert gone["status"] == "dismissed" and gone["rank"] is None and "not interested" in gone["sentence"]
    after = client.get(f"/users/{user}/recommendations/{second}/explanation").json()
    assert (before["rank"], after["rank"]) == (2, 1), "the dismissed item no longer ranks above it"
    assert after["candidates"] == before["candidates"] - 1
    what_if = client.post("/what-if", json={"user_id": user, "k": 5}).json()
    assert top not in [r["item_id"] for r in what_if["before"] + what_if["after"]]


def _rounded(value):
    """Floats to 4 decimals: a batched explanation and a single one differ in float rounding."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def test_an_explained_list_is_one_call_and_the_same_as_each_explanation(client, rec):
    user = rec.data.user_ids[8]
    plain = client.get(f"/users/{user}/recommendations", params={"k": 4}).json()
    explained = client.get(f"/users/{user}/recommendations", params={"k": 4, "explain": True}).json()
    assert [r["item_id"] for r in explained["items"]] == [r["item_id"] for r in plain["items"]]
    assert [r["score"] for r in explained["items"]] == pytest.approx([r["score"] for r in plain["items"]], abs=1e-5)
    for row in explained["items"]:
        alone = client.get(f"/users/{user}/recommendations/{row['item_id']}/explanation", params={"k": 4}).json()
        got = dict(row["explanation"])
        assert got["counterfactual"] is None, "no counterfactual unless asked"
        assert alone["sentence"].startswith(row["sentence"]), "the counterfactual's clause is all that is missing"
        assert alone.pop("model_version") == explained["model_version"], "a list names its version once"
        for drop in ("ms", "counterfactual", "sentence"):
            got.pop(drop), alone.pop(drop)
        assert _rounded(got) == _rounded(alone)
    with_cf = client.get(f"/users/{user}/recommendations", params={"k": 2, "explain": True, "counterfactual": True})
    assert all(r["explanation"]["counterfactual"] is not None for r in with_cf.json()["items"])
    history = [rec.data.item_ids[i] for i in rec.history(user)]
    anonymous = client.post("/recommendations", json={"history": history, "k": 4, "explain": True}).json()
    assert [r["item_id"] for r in anonymous["items"]] == [r["item_id"] for r in plain["items"]]
    assert np.all([r["explanation"]["user"] is None for r in anonymous["items"]])


def test_training_publishes_an_immutable_version_that_is_served_and_can_be_rolled_back(run, tmp_path):
    from recscope import versions

    (first,) = versions.listing(run)
    assert versions.current(run) == first.id and first.source == "train" and first.details["best_epoch"] >= 1
    weights = run / "versions" / first.id / "model.safetensors"
    assert versions.digest(weights) == first.id == versions.digest(run / "model.safetensors")
    # a later version (what fine-tuning will write): published whole, then current
    rec = Recommender.load(run)
    assert rec.version == first.id
    with torch.no_grad():
        rec.model.ln_f.bias.add_(0.5)
    from recscope.run import save_weights

    save_weights(tmp_path / "tuned.safetensors", rec.model)
    second = versions.publish(run, tmp_path / "tuned.safetensors", source="fine-tune", parent=first.id)
    assert versions.current(run) == second.id != first.id and second.parent == first.id
    assert versions.publish(run, tmp_path / "tuned.safetensors", source="fine-tune").created == second.created
    assert Recommender.load(run).version == second.id
    assert Recommender.load(run, version=first.id).version == first.id
    assert versions.digest(weights) == first.id, "a version's files never change"
    result = CliRunner().invoke(cli, ["versions", str(run), "--promote", first.id, "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed["current"] == first.id and [v["id"] for v in listed["versions"]] == [first.id, second.id]
    with TestClient(create_app(Settings(run=run, db=f"sqlite:///{tmp_path / 's.sqlite'}"))) as client:
        assert client.get("/health/ready").json()["model_version"] == first.id
        user = Recommender.load(run).data.user_ids[0]
        assert client.get(f"/users/{user}/recommendations").json()["model_version"] == first.id
    bad = CliRunner().invoke(cli, ["versions", str(run), "--promote", "feedfeedfeedfeed"])
    assert isinstance(bad.exception, RunError), "main() prints it as one line of error"
    assert "no model version 'feedfeedfeedfeed'" in str(bad.exception) and first.id in str(bad.exception)
    assert versions.current(run) == first.id


def test_a_request_that_waits_too_long_for_the_model_is_refused_with_503(run, tmp_path):
    settings = Settings(run=run, db=f"sqlite:///{tmp_path / 'store.sqlite'}", busy_after=0.05)
    with TestClient(create_app(settings)) as client:
        user = client.app.state.service.recommender.data.user_ids[0]
        with client.app.state.service.lock:  # another request holds the model
            busy = client.get(f"/users/{user}/recommendations")
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert "busy" in busy.json()["error"] and busy.json()["fix"]
            assert client.get(f"/users/{user}/history").status_code == 200, "reads of the store need no model"
        assert client.get(f"/users/{user}/recommendations").status_code == 200


def test_a_counterfactual_re_ranks_without_the_items_the_user_dismissed(rec):
    """The first item outside the top-K is the natural newcomer when a top item drops out; once
    dismissed, no counterfactual may bring it back."""
    checked = 0
    for user in rec.data.user_ids[:40]:
        k = 5
        ranked = rec.recommend(user=user, k=k + 1)
        sixth = ranked[k].item_id
        before = rec.explain(user=user, top=k, k=k)
        if not any(e.counterfactual and e.counterfactual.replaced_by == sixth for e in before):
            continue
        checked += 1
        after = rec.explain(user=user, top=k, k=k, exclude=[sixth])
        assert [e.item_id for e in after] == [e.item_id for e in before]
        assert all(e.counterfactual.replaced_by != sixth for e in after if e.counterfactual), user
    assert checked >= 3, "the synthetic shop gives cases where the dismissed item would have entered"


def test_exclusion_filters_by_item_and_by_attribute(client, rec):
    user = rec.data.user_ids[9]
    first = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()["items"]
    top = first[0]["item_id"]
    brand = client.get(f"/items/{top}").json()["attributes"]["brand"]
    without_top = client.get(f"/users/{user}/recommendations", params={"k": 5, "exclude": [top, "NOT-AN-ITEM"]})
    assert [r["item_id"] for r in without_top.json()["items"]][:4] == [r["item_id"] for r in first[1:]]
    filtered = client.get(f"/users/{user}/recommendations", params={"k": 5, "exclude_attribute": f"brand={brand}"})
    assert filtered.status_code == 200, filtered.text
    brands = {client.get(f"/items/{r['item_id']}").json()["attributes"].get("brand") for r in filtered.json()["items"]}
    assert brand not in brands and len(filtered.json()["items"]) == 5
    history = [rec.data.item_ids[i] for i in rec.history(user)]
    body = {"history": history, "k": 5, "exclude": [top], "exclude_attributes": [f"brand={brand}"]}
    anonymous = client.post("/recommendations", json=body).json()["items"]
    assert [r["item_id"] for r in anonymous] == [r["item_id"] for r in filtered.json()["items"]]
    for bad, named in (("colour=red", "colour"), (f"brand={brand}x", f"{brand}x"), ("brand", "field=value")):
        refused = client.get(f"/users/{user}/recommendations", params={"exclude_attribute": bad})
        assert refused.status_code == 422 and named in refused.json()["error"] and refused.json()["fix"], bad


def test_the_running_service_switches_model_versions_without_a_restart(run, tmp_path):
    from recscope import versions
    from recscope.run import save_weights

    first = versions.current(run)
    rec = Recommender.load(run)
    with torch.no_grad():
        rec.model.ln_f.weight.mul_(-1.0)  # another model: a different ranking
    save_weights(tmp_path / "other.safetensors", rec.model)
    settings = Settings(run=run, db=f"sqlite:///{tmp_path / 'store.sqlite'}", api_key="k")
    with TestClient(create_app(settings)) as client:
        user = rec.data.user_ids[2]
        before = client.get(f"/users/{user}/recommendations").json()
        second = versions.publish(run, tmp_path / "other.safetensors", source="fine-tune", parent=first).id
        try:
            assert client.get("/model").json()["version"] == first, "publishing alone changes nothing served"
            assert client.put("/model", json={}).status_code == 401, "a write: the key is needed"
            switched = client.put("/model", json={}, headers={"X-API-Key": "k"}).json()
            assert switched["version"] == switched["current"] == second
            after = client.get(f"/users/{user}/recommendations").json()
            assert after["model_version"] == second and after["items"] != before["items"]
            back = client.put("/model", json={"version": first}, headers={"X-API-Key": "k"}).json()
            assert back["version"] == first and back["current"] == second
            assert client.get(f"/users/{user}/recommendations").json()["items"] == before["items"]
            missing = client.put("/model", json={"version": "feedfeedfeedfeed"}, headers={"X-API-Key": "k"})
            assert missing.status_code == 404 and first in missing.json()["fix"]
        finally:
            versions.promote(run, first)  # the module's other tests serve the trained version


def test_the_service_over_postgresql_reacts_and_keeps_what_it_was_sent(run, request):
    """The same live loop with the store on a throwaway PostgreSQL server (--db URL)."""
    url = request.getfixturevalue("postgres_server").new_database()
    settings = Settings(run=run, db=url)
    rec = Recommender.load(run)
    user = rec.data.user_ids[12]
    with TestClient(create_app(settings)) as client:
        before = [r["item_id"] for r in client.get(f"/users/{user}/recommendations").json()["items"]]
        event = {"event_id": "pg-1", "user_id": user, "item_id": before[0], "event": "purchase"}
        assert client.post("/events", json={"events": [event]}).json() == {"accepted": 1, "duplicates": 0}
        after = [r["item_id"] for r in client.get(f"/users/{user}/recommendations").json()["items"]]
        assert before[0] not in after and after != before
        put = client.put("/items/PG/1", json={"title": "Ünïcode item ✓", "attributes": {}})
        assert put.status_code == 201
    with TestClient(create_app(settings)) as client:  # a restart: everything is in PostgreSQL
        history = client.get(f"/users/{user}/history").json()["items"]
        assert history[-1] == {
            "item_id": before[0],
            "event": "purchase",
            "timestamp": history[-1]["timestamp"],
            "source": "store",
            "value": None,
        }
        assert client.get("/items/PG/1").json()["title"] == "Ünïcode item ✓"
        assert [r["item_id"] for r in client.get(f"/users/{user}/recommendations").json()["items"]] == after
