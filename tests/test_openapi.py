"""The committed OpenAPI document (docs/openapi.json) is the app's, and a client generated from it
reads the service's real answers, explanations included; 503 bodies name their case; the read key.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recscope.explain import base, words
from recscope.serve import explanation as schema
from recscope.serve.app import create_app
from recscope.serve.openapi import document
from recscope.serve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "openapi.json"
REGENERATE = "regenerate it: python -m recscope.serve.openapi docs/openapi.json"


def test_the_committed_document_is_the_apps():
    assert COMMITTED.exists(), f"docs/openapi.json is missing: {REGENERATE}"
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == document(), f"docs/openapi.json differs from the app's document: {REGENERATE}"


@pytest.mark.parametrize(
    "dataclass, model",
    [
        (base.Explanation, schema.Explanation),
        (base.HistoryWeight, schema.HistoryWeight),
        (base.Counterfactual, schema.Counterfactual),
        (words.Words, schema.Words),
        (words.WordWeight, schema.WordWeight),
        (words.TitleWords, schema.TitleWords),
    ],
)
def test_the_explanation_schema_has_the_dataclasses_fields(dataclass, model):
    assert [f.name for f in dataclasses.fields(dataclass)] == list(model.model_fields)


@pytest.fixture(scope="module")
def client_models(tmp_path_factory):
    """pydantic models generated from the committed document by datamodel-codegen, extra keys
    forbidden: a key the service sends that the document does not declare fails validation."""
    codegen = shutil.which("datamodel-codegen", path=str(Path(sys.executable).parent))
    if codegen is None:
        pytest.fail("datamodel-codegen is not installed: pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("client") / "client_models.py"
    subprocess.run(
        [
            codegen,
            "--input",
            str(COMMITTED),
            "--input-file-type",
            "openapi",
            "--output",
            str(out),
            "--output-model-type",
            "pydantic_v2.BaseModel",
            "--extra-fields",
            "forbid",
        ],
        check=True,
        capture_output=True,
    )
    spec = importlib.util.spec_from_file_location("client_models", out)
    module = importlib.util.module_from_spec(spec)
    sys.modules["client_models"] = module  # pydantic resolves forward references through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def service(tiny_run, tmp_path_factory):
    db = tmp_path_factory.mktemp("store") / "store.sqlite"
    with TestClient(create_app(Settings(run=tiny_run, db=f"sqlite:///{db}"))) as client:
        yield client


def _ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_a_generated_client_reads_real_explained_lists(service, client_models):
    rec = service.app.state.service.recommender
    user = rec.data.user_ids[1]
    body = _ok(service.get(f"/users/{user}/recommendations", params={"k": 5, "explain": True, "counterfactual": True}))
    parsed = client_models.RecommendationsOut.model_validate(body)
    assert len(parsed.items) == 5
    for item in parsed.items:
        explained = item.explanation
        assert isinstance(explained, client_models.Explanation)  # typed, not a dict
        assert explained.item_id == item.item_id and explained.history
        assert isinstance(explained.history[0], client_models.HistoryWeight)
        assert explained.counterfactual is None or isinstance(explained.counterfactual, client_models.Counterfactual)
    assert any(i.explanation.counterfactual is not None for i in parsed.items)

    anonymous = _ok(service.post("/recommendations", json={"history": rec.data.item_ids[1:4], "explain": True}))
    assert client_models.RecommendationsOut.model_validate(anonymous).items[0].explanation.user is None

    what_if = _ok(service.post("/what-if", json={"user_id": user, "add": [rec.data.item_ids[7]], "k": 5}))
    parsed = client_models.WhatIfOut.model_validate(what_if)
    assert len(parsed.after) == 5 and parsed.model_version == service.app.state.service.model_version


def test_a_generated_client_reads_the_single_explanation_with_attentions_and_words(service, client_models):
    rec = service.app.state.service.recommender
    user, item = rec.data.user_ids[2], rec.data.item_ids[3]
    body = _ok(service.get(f"/users/{user}/recommendations/{item}/explanation", params={"words": True}))
    parsed = client_models.SingleExplanation.model_validate(body)
    assert parsed.item_id == item and parsed.status.value in {"recommended", "outside_top_k", "owned", "dismissed"}
    assert parsed.model_version == service.app.state.service.model_version  # which version computed it
    attention = _ok(service.get(f"/users/{user}/recommendations/{item}/explanation", params={"method": "attention"}))
    assert client_models.SingleExplanation.model_validate(attention).method == "attention"


def test_a_field_the_document_does_not_declare_fails_the_generated_client(client_models):
    """The check above can fail: a key the schema lacks is refused, not ignored."""
    with pytest.raises(Exception, match="extra"):
        client_models.HistoryWeight.model_validate(
            {"position": 0, "item_id": "a", "title": "t", "weight": 1.0, "secret": 1}
        )


def test_503_says_whether_the_service_is_loading_or_busy(tiny_run, tmp_path):
    loading = TestClient(create_app(Settings(run=tiny_run)))  # no lifespan: nothing loaded
    response = loading.get("/users/x/recommendations")
    assert response.status_code == 503
    assert response.json()["reason"] == "loading" and response.headers["Retry-After"] == "5"

    settings = Settings(run=tiny_run, db=f"sqlite:///{tmp_path / 's.sqlite'}", busy_after=0.05)
    with TestClient(create_app(settings)) as client:
        svc = client.app.state.service
        user = svc.recommender.data.user_ids[1]
        with svc.model():  # another request holds this worker's model
            busy = client.get(f"/users/{user}/recommendations")
        assert busy.status_code == 503
        assert busy.json()["reason"] == "busy" and busy.headers["Retry-After"] == "1"
        assert "0.05 s" in busy.json()["error"]
        assert client.get(f"/users/{user}/recommendations").status_code == 200


def test_the_read_key_closes_personal_data_and_nothing_else(tiny_run, tmp_path):
    settings = Settings(
        run=tiny_run,
        db=f"sqlite:///{tmp_path / 's.sqlite'}",
        read_key=SecretStr("reader"),
        api_key=SecretStr("writer"),
    )
    with TestClient(create_app(settings)) as client:
        rec = client.app.state.service.recommender
        user, item = rec.data.user_ids[1], rec.data.item_ids[1]
        personal = [
            ("get", f"/users/{user}/history", None),
            ("get", f"/users/{user}/recommendations", None),
            ("get", f"/users/{user}/recommendations/{item}/explanation", None),
            ("post", "/what-if", {"user_id": user, "add": [item]}),
            ("get", f"/ui/data?user={user}", None),
            ("get", "/ui/shoppers", None),
        ]
        for verb, path, body in personal:
            refused = client.request(verb, path, json=body)
            assert refused.status_code == 401, (path, refused.text)
            assert "personal data" in refused.json()["error"]
            assert client.request(verb, path, json=body, headers={"X-API-Key": "wrong"}).status_code == 401
            for key in ("reader", "writer"):  # the write key may do anything
                assert client.request(verb, path, json=body, headers={"X-API-Key": key}).status_code == 200, path
        # not personal: the catalog, an anonymous list, health
        assert client.get(f"/items/{item}").status_code == 200
        assert client.post("/recommendations", json={"history": [item]}).status_code == 200
        assert client.get("/health/ready").status_code == 200
        # the read key is no write key
        event = {"events": [{"event_id": "e1", "user_id": user, "item_id": item}]}
        assert client.post("/events", json=event, headers={"X-API-Key": "reader"}).status_code == 401
