"""What a page may show: an explanation reveals only the requesting user's own history and the model.

For a target shopper T of the tiny shop, everything shown where T's explanation is shown (the
API's explanations and what-if, the report, the web view's data) may name:
- T's own history (what was bought, attributions over it, counterfactual removals);
- the model's outputs over the catalog: the items it ranks for T (top-K, before/after a what-if,
  the item a counterfactual brings in) and items the request itself names (a simulated purchase);
- catalog-level aggregates (the report's merchant view; built here over T alone).
It may not name any other user's id, nor any item outside those sets, such as the items only
other shoppers bought. With ``--pseudonymise`` T's own id is not shown either: its keyed pseudonym is.
"""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from recscope.cli import app
from recscope.pseudonyms import KEY_ENV, Pseudonyms
from recscope.recommend import Recommender
from recscope.serve.app import create_app
from recscope.serve.settings import Settings
from recscope.viz.report import build_report

TARGET = "U00003"
USER_ID = re.compile(r"U\d{5}")
ITEM_ID = re.compile(r"P\d{4}")
PSEUDONYM = re.compile(r"^u-[0-9a-f]{16}$")
KEY = "test key: not secret"


@pytest.fixture(scope="module")
def rec(tiny_run) -> Recommender:
    return Recommender.load(tiny_run)


@pytest.fixture(scope="module")
def own(rec) -> set[str]:
    """T's own history (item ids)."""
    return {rec.data.item_ids[i] for i in rec.history(TARGET)}


@pytest.fixture(scope="module")
def others_only(rec, own) -> set[str]:
    """Items bought by shoppers whose histories share nothing with T's (none of them is T's): what
    a leak of another shopper's history would show, unless the model ranks them for T."""
    histories = [{rec.data.item_ids[i] for i in rec.history(u)} for u in rec.data.user_ids]
    strangers = [h for h in histories if not own & h]
    found = set().union(*strangers)
    assert len(strangers) >= 3 and len(found) >= 20  # the check below has something to find
    return found


def _ids(text: str) -> tuple[set[str], set[str]]:
    return set(USER_ID.findall(text)), set(ITEM_ID.findall(text))


def _ranked(payload) -> set[str]:
    """The model's outputs a payload names: ranked lists (the API's items, the page's recs, a
    what-if's before / after / entered / left) and the item a counterfactual brings in."""
    found: set[str] = set()
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key in ("recs", "before", "after", "items") and isinstance(value, list):
                found |= {v["id"] if "id" in v else v["item_id"] for v in value if isinstance(v, dict)}
            elif key in ("entered", "left"):
                found |= set(value)
            elif key == "replaced_by" and value:
                found |= {value} if isinstance(value, str) else set(value)
            found |= _ranked(value)
    elif isinstance(payload, list):
        for value in payload:
            found |= _ranked(value)
    return found


def _check(text: str, payload, own: set[str], others_only: set[str], user: str | None = TARGET, named=()) -> None:
    users, items = _ids(text)
    assert users <= ({user} if user else set()), users  # no other user's id (none at all when pseudonymised)
    ranked = _ranked(payload)
    assert items <= own | ranked | set(named), items - own - ranked
    assert not (others_only - ranked - set(named)) & items


@pytest.fixture(scope="module")
def client(tiny_run, tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('privacy') / 'store.sqlite'}"
    with TestClient(create_app(Settings(run=tiny_run, db=db))) as c:
        yield c


def test_api_explanations_and_what_if_show_only_the_users_own_history(client, rec, own, others_only):
    got = client.get(f"/users/{TARGET}/recommendations", params={"k": 5, "explain": True, "counterfactual": True})
    assert got.status_code == 200, got.text
    body = got.json()
    for item in body["items"]:
        assert {h["item_id"] for h in item["explanation"]["history"]} <= own
    _check(got.text, body, own, others_only)
    first = body["items"][0]["item_id"]
    got = client.get(f"/users/{TARGET}/recommendations/{first}/explanation")
    assert got.status_code == 200, got.text
    assert {h["item_id"] for h in got.json()["history"]} <= own
    _check(got.text, got.json(), own, others_only, named=[first])
    removed = sorted(own)[0]
    got = client.post("/what-if", json={"user_id": TARGET, "remove": [removed], "k": 5})
    assert got.status_code == 200, got.text
    _check(got.text, got.json(), own, others_only)


def test_web_view_data_shows_only_the_users_own_history(client, rec, own, others_only):
    got = client.get("/ui/data", params={"user": TARGET, "k": 5})
    assert got.status_code == 200, got.text
    case = got.json()["histories"][0]
    read = [rec.data.item_ids[i] for i in rec.history(TARGET)][-rec.config.model.max_len :]
    assert [h["id"] for h in case["history"]] == read  # the history shown is T's, whole and alone
    _check(got.text, got.json(), own, others_only)
    simulated = sorted(others_only)[0]  # an item the request itself names may be shown: it is its own
    got = client.get("/ui/data", params={"user": TARGET, "k": 5, "add": simulated})
    _check(got.text, got.json(), own, others_only, named=[simulated])
    got = client.get("/ui/versions", params={"user": TARGET})
    assert got.status_code == 200, got.text
    _check(got.text, got.json(), own, others_only)


def test_report_shows_only_the_users_own_history(rec, own, others_only, tmp_path):
    page = build_report(rec, [TARGET], tmp_path, k=5, methods=["attention"], merchant_users=[TARGET], figures=False)
    payload = _payload(page.read_text())
    assert [h["id"] for h in payload["histories"][0]["history"]][-3:] == [
        rec.data.item_ids[i] for i in rec.history(TARGET)[-3:]
    ]
    _check(json.dumps(payload), payload, own, others_only)


def _payload(html: str) -> dict:
    text = html.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0]
    return json.loads(text)


# ------------------------------------------------------------------------------ --pseudonymise
def test_report_pseudonymises_every_user_id(tiny_run, rec, own, others_only, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)  # the key from the environment: nothing is written into the shared run
    args = ["report", str(tiny_run), "--out", str(tmp_path), "--users", TARGET, "--k", "5", "--methods", "attention"]
    result = CliRunner().invoke(app, [*args, "--merchant-users", "1", "--no-figures", "--pseudonymise"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "index.html").read_text()
    name = Pseudonyms(KEY.encode(), rec.data.user_ids)(TARGET)
    assert USER_ID.findall(html) == []  # no raw id anywhere in the page, its data or its labels
    payload = _payload(html)
    assert (payload["histories"][0]["user"], payload["histories"][0]["label"]) == (name, f"user {name}")
    _check(json.dumps(payload), payload, own, others_only, user=None)


@pytest.fixture(scope="module")
def masked(tiny_run, tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('masked') / 'store.sqlite'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        with TestClient(create_app(Settings(run=tiny_run, db=db, pseudonymise=True))) as c:
            yield c


def test_web_view_shows_and_takes_pseudonyms_only(masked, rec, own, others_only):
    names = Pseudonyms(KEY.encode(), rec.data.user_ids)
    offered = masked.get("/ui/shoppers", params={"limit": 50}).json()
    assert len(offered) == 50 and all(PSEUDONYM.match(n) for n in offered)
    assert {names.find(n) for n in offered} <= set(rec.data.user_ids)
    assert masked.get("/ui/shoppers", params={"q": TARGET}).json() == []  # no id -> pseudonym oracle
    assert masked.get("/ui/shoppers", params={"q": names(TARGET)[:8]}).json()[0].startswith(names(TARGET)[:8])
    got = masked.get("/ui/data", params={"user": names(TARGET), "k": 5})
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["live"]["user"], body["histories"][0]["label"]) == (names(TARGET), f"shopper {names(TARGET)}")
    assert [h["id"] for h in body["histories"][0]["history"]][-3:] == [
        rec.data.item_ids[i] for i in rec.history(TARGET)[-3:]
    ]  # the pseudonym was mapped back to T, on the server
    _check(got.text, body, own, others_only, user=None)
    assert masked.get("/ui/data", params={"user": TARGET}).status_code == 404  # raw ids are not taken
    got = masked.get("/ui/versions", params={"user": names(TARGET)})
    assert got.status_code == 200 and got.json()["user"] == names(TARGET)
    assert USER_ID.findall(got.text) == []
    assert USER_ID.findall(masked.get("/ui").text) == []


def test_pseudonymise_is_refused_with_ui_writes(tiny_run):
    with pytest.raises(ValidationError, match="pseudonymise and ui_writes"):
        Settings(run=tiny_run, pseudonymise=True, ui_writes=True)


def test_the_run_key_is_made_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    first = Pseudonyms.for_run(tmp_path, ["a", "b"])
    assert (tmp_path / "pseudonym.key").stat().st_mode & 0o777 == 0o600
    again = Pseudonyms.for_run(tmp_path, ["a", "b"])
    assert first("a") == again("a") != first("b") and again.find(first("b")) == "b"
    monkeypatch.setenv(KEY_ENV, KEY)
    assert Pseudonyms.for_run(tmp_path, ["a"])("a") != first("a")  # another key, other pseudonyms
