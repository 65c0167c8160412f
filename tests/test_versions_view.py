"""The loop made visible (issue 23, "Deliver 4"): per model version, what changed for a shopper
(the items whose rank moved most, with each version's own explanation sentence) and the share of
"explanation helpful" per method and version, in the API, the live view's data and the report."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recscope import versions
from recscope.cli import app
from recscope.finetune import finetune
from recscope.recommend import Recommender
from recscope.run import load_info, save_info
from recscope.serve.app import create_app
from recscope.serve.settings import Settings
from recscope.serve.store import Store
from recscope.viz.versions import movers

A, B = 7, 11  # the stored pattern: after item A, shoppers now buy item B


@pytest.fixture(scope="module")
def tuned(tiny_run, tmp_path_factory) -> dict:
    """A copy of the tiny run fine-tuned once on a stored pattern (promoted): its two versions."""
    run = tmp_path_factory.mktemp("versions") / "run"
    shutil.copytree(tiny_run, run)
    info = load_info(run)
    info.config = dataclasses.replace(
        info.config, finetune=dataclasses.replace(info.config.finetune, epochs=20, lr=0.005)
    )
    save_info(run, info)
    parent = versions.current(run)
    before = Recommender.load(run, parent)
    data = before.data
    with Store.for_run(run) as store:
        store.add_events(
            [
                {"event_id": f"{u}-{k}", "user_id": u, "item_id": data.item_ids[(A, B)[k % 2]]}
                for u in data.user_ids[:80]
                for k in range(4)
            ]
        )
        result = finetune(run, store)
    assert result.verdict == "promoted", result.reason
    return {"run": run, "parent": parent, "child": result.version}


def _history(rec: Recommender, user: str) -> list[str]:
    """A shopper of the run (not one who posted the pattern) who has just bought item A."""
    return [rec.data.item_ids[i] for i in rec.history(user)] + [rec.data.item_ids[A]]


def test_movers_are_the_two_versions_ranks_and_sentences(tuned):
    before = Recommender.load(tuned["run"], tuned["parent"])
    after = Recommender.load(tuned["run"], tuned["child"])
    n = before.data.n_items
    checked = 0
    for user in before.data.user_ids[120:126]:
        history = _history(before, user)
        found = movers(before, after, history, k=10, top=5, method="occlusion")
        assert 1 <= len(found) <= 5
        # the whole ranking of each version, computed directly (recommend over the whole catalog)
        full = {
            side: {r.item_id: r.rank for r in rec.recommend(history=history, k=n)}
            for side, rec in (("before", before), ("after", after))
        }
        tops = {side: [i for i, r in ranks.items() if r <= 10] for side, ranks in full.items()}
        candidates = set(tops["before"]) | set(tops["after"])
        moves = sorted((abs(full["before"][i] - full["after"][i]) for i in candidates), reverse=True)
        assert [abs(m.moved) for m in found] == moves[: len(found)]  # the largest moves, largest first
        for m in found:
            assert m.item_id in candidates and m.moved != 0
            assert (m.before, m.after) == (full["before"][m.item_id], full["after"][m.item_id])
            for rec, rank, sentence in ((before, m.before, m.sentence_before), (after, m.after, m.sentence_after)):
                e = rec.explain(history=history, item=m.item_id, k=10, method="occlusion")[0]
                assert (e.rank, e.sentence) == (rank, sentence)
            assert m.sentence_before != m.sentence_after  # each version's own words
        checked += 1
    assert checked == 6


KEY = {"X-API-Key": "k"}


def _client(run, tmp_path, **settings) -> TestClient:
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"  # a store of its own: the module's run is shared
    return TestClient(create_app(Settings(run=run, db=db, api_key="k", follow_every=0.05, **settings)))


def _serve_and_vote(client: TestClient, user: str, method: str | None, votes: list[str]) -> dict:
    """One list served to ``user`` (explained by ``method``; None: not explained), ``votes[i]``
    posted on its item i."""
    params = {"k": 5, "explain": method is not None, **({"method": method} if method else {})}
    served = client.get(f"/users/{user}/recommendations", params=params).json()
    for item, action in zip(served["items"], votes, strict=False):
        answer = client.post(
            "/feedback",
            json={"request_id": served["request_id"], "user_id": user, "item_id": item["item_id"], "action": action},
            headers=KEY,
        )
        assert answer.status_code == 201, answer.text
    return served


def test_helpful_shares_by_method_and_version(tuned, tmp_path):
    run, parent, child = tuned["run"], tuned["parent"], tuned["child"]
    users = Recommender.load(run).data.user_ids
    good, bad = "explanation_helpful", "explanation_unhelpful"
    with _client(run, tmp_path) as client:
        assert client.get("/model").json()["version"] == child
        _serve_and_vote(client, users[0], "occlusion", [good, good, bad])
        _serve_and_vote(client, users[1], "occlusion", [good, "click", good])
        _serve_and_vote(client, users[2], "attention", [bad])
        _serve_and_vote(client, users[3], None, [good])  # no explanation shown: counts under no method
        assert client.put("/model", json={"version": parent}, headers=KEY).status_code == 200
        served = _serve_and_vote(client, users[4], "occlusion", [bad, bad])
        assert served["model_version"] == parent
        answer = client.get("/model/feedback")
        assert answer.status_code == 200, answer.text
        got = answer.json()
        only = client.get("/model/feedback", params={"version": child}).json()
    assert got["version"] == parent
    by = {v["version"]: v for v in got["versions"]}
    assert [v["version"] for v in got["versions"]] == [parent, child]  # oldest first
    assert (by[parent]["serving"], by[child]["serving"]) == (True, False)

    def table(v):
        return [(m["method"], m["helpful"], m["unhelpful"], m["votes"], m["share"], m["lists"]) for m in v["methods"]]

    assert table(by[child]) == [
        (None, 1, 0, 1, 1.0, 1),
        ("attention", 0, 1, 1, 0.0, 1),
        ("occlusion", 4, 1, 5, 0.8, 2),
    ]
    assert table(by[parent]) == [("occlusion", 0, 2, 2, 0.0, 1)]
    assert [v["version"] for v in only["versions"]] == [child] and table(only["versions"][0]) == table(by[child])


def test_the_panel_data_is_the_movers_of_the_serving_version(tuned, tmp_path):
    run, parent, child = tuned["run"], tuned["parent"], tuned["child"]
    before, after = Recommender.load(run, parent), Recommender.load(run, child)
    user = after.data.user_ids[130]
    history = [after.data.item_ids[i] for i in after.history(user)]
    direct = [m.to_dict() for m in movers(before, after, history, k=10, method="occlusion")]
    with _client(run, tmp_path, read_key="r") as client:
        assert client.get("/ui/versions", params={"user": user}).status_code == 401  # shopper data: the read key
        answer = client.get("/ui/versions", params={"user": user, "method": "occlusion"}, headers={"X-API-Key": "r"})
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert (data["serving"], data["parent"], data["method"], data["user"]) == (child, parent, "occlusion", user)
        assert data["movers"] == [direct] and len(direct) >= 1
        rows = {r["id"]: r for r in data["versions"]}
        assert rows[child]["verdict"] == "promoted" and rows[child]["parent"] == parent and rows[child]["serving"]
        assert rows[parent]["verdict"] is None and rows[parent]["source"] == "train"
        # rolled back to the parent: it has no parent, so nothing to compare, said plainly
        assert client.put("/model", json={"version": parent}, headers=KEY).status_code == 200
        back = client.get("/ui/versions", params={"user": user}, headers={"X-API-Key": "r"}).json()
        assert back["movers"] == [] and back["parent"] is None and "no parent" in back["note"]


def _report(run, out, *more: str) -> dict:
    """``recscope report`` on ``run``; the data its page embeds (the report's data contract)."""
    result = CliRunner().invoke(
        app, ["report", str(run), "--out", str(out), "--no-figures", "--merchant-users", "20", *more]
    )
    assert result.exit_code == 0, result.output
    html = (out / "index.html").read_text(encoding="utf-8")
    embedded = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1)
    return json.loads(embedded), html


def test_the_report_has_the_versions_section(tuned, tmp_path):
    run, parent, child = tuned["run"], tuned["parent"], tuned["child"]
    before, after = Recommender.load(run, parent), Recommender.load(run, child)
    users = after.data.user_ids[130:133]
    with Store.open(f"sqlite:///{tmp_path / 'votes.sqlite'}") as store:
        store.log_served("r1", users[0], child, [("P1", 1.0), ("P2", 0.5)], method="occlusion")
        store.add_feedback("r1", users[0], "P1", "explanation_helpful")
        store.add_feedback("r1", users[0], "P2", "explanation_unhelpful")
        store.log_served("r2", users[0], parent, [("P1", 1.0)], method="shapley")
        store.add_feedback("r2", users[0], "P1", "explanation_helpful")
    data, html = _report(
        run, tmp_path / "report", "--users", ",".join(users), "--db", f"sqlite:///{tmp_path / 'votes.sqlite'}"
    )
    v = data["versions"]
    method = after.default_method()
    assert (v["serving"], v["parent"], v["method"]) == (child, parent, method)
    for user, found in zip(users, v["movers"], strict=True):
        history = [after.data.item_ids[i] for i in after.history(user)]
        assert found == [m.to_dict() for m in movers(before, after, history, k=10, method=method)]
    rows = {r["id"]: r for r in v["versions"]}
    assert rows[child]["helpful"] == [
        {"method": "occlusion", "helpful": 1, "unhelpful": 1, "votes": 2, "share": 0.5, "lists": 1}
    ]
    assert rows[parent]["helpful"] == [
        {"method": "shapley", "helpful": 1, "unhelpful": 0, "votes": 1, "share": 1.0, "lists": 1}
    ]
    assert 'data-tab="versions"' in html and 'id="versions-table"' in html


def test_a_run_with_one_version_says_there_is_nothing_to_compare(tiny_run, tmp_path):
    user = Recommender.load(tiny_run).data.user_ids[0]
    data, _ = _report(tiny_run, tmp_path / "report", "--users", user)
    v = data["versions"]
    assert len(v["versions"]) == 1 and v["parent"] is None and v["movers"] == []
    assert "one model version only: nothing to compare yet" in v["note"]
    assert v["versions"][0]["helpful"] is None  # the run has no store: no feedback to read
