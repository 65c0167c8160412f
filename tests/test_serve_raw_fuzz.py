"""Raw requests against every route of the app, over SQLite and PostgreSQL: no 5xx, and every
answer a body its client can read.

Schemathesis (test_serve_fuzz.py) draws requests from the OpenAPI document: well-formed JSON of
about the documented shape. Here Hypothesis draws what a broken or hostile client sends: any
bytes, truncated JSON, JSON with lone-surrogate escapes ("\\ud800", which Python's parser reads
into a str UTF-8 cannot encode), NaN and Infinity, nesting hundreds deep, numbers past float and
past Python's 4300 digits, long strings, wrong types and unknown fields, alone or in a body the
route's schema allows (from Schemathesis, with ids of the run: the hostile part then reaches the
model and the store), with hostile path ids (percent-encoded bytes that are no UTF-8), query
strings and headers. The routes are ``app.routes`` (pages and /docs too), so a new route is
fuzzed without being named here.

Checked: no answer is a 5xx; an error, or any answer that says it is JSON, parses as strict JSON
(no NaN), and an error holds no lone surrogate even as an escape (it names one as the text
``\\ud800``); any other answer (the /ui page, /metrics, /docs) is UTF-8 text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
import schemathesis
import schemathesis.specs.openapi.schemas  # noqa: F401  (rewritten at collection, see below)
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from starlette.routing import Mount

from pg import postgres_server  # noqa: F401  (a fixture)
from recscope.serve.app import create_app

# schemathesis imports its OpenAPI modules on first use, and pytest rewrites them then; rewritten
# deep in a test's stack, CPython 3.11.7's AST validator can fail ("AST constructor recursion
# depth mismatch", pytest-dev/pytest#10763): the import above rewrites them at collection instead.
from recscope.serve.settings import Settings

KEY = "raw-fuzz-key"
EXAMPLES = 30  # per route and backend: 25 routes x 2 backends in about 25 s
BACKENDS = ["sqlite", "postgresql"]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # the template, as "/users/{user_id:path}/history"
    queries: tuple[str, ...] = ()  # the query parameters the OpenAPI document names for it

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def operation(self) -> tuple[str, str]:
        """Its key in the OpenAPI document: ("/users/{user_id}/history", "get")."""
        return re.sub(r":\w+\}", "}", self.path), self.method.lower()


def routes() -> list[Route]:
    """Every method of every route the app serves (HEAD is GET without a body), and a file under
    each mount (the Swagger UI assets). An app without a run builds them: nothing is loaded."""
    app = create_app(Settings())
    paths, found = app.openapi()["paths"], []
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, Mount):
            found.append(Route("GET", f"{route.path}/{{file:path}}"))
            continue
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            path, key = Route(method, route.path).operation
            parameters = paths.get(path, {}).get(key, {}).get("parameters", [])
            found.append(Route(method, route.path, tuple(p["name"] for p in parameters if p["in"] == "query")))
    return found


ROUTES = routes()
QUERIES = sorted({name for route in ROUTES for name in route.queries})
USERS, ITEMS = ["U00001", "U00007"], ["P0001", "P0002", "P0003"]  # of the tiny run
KNOWN = [*USERS, *ITEMS, "brand=Voltra", "shapley", "occlusion"]

# -- what a client may send ---------------------------------------------------------------------

lone_surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
LONE = re.compile("[\ud800-\udfff]")  # in a str parsed from JSON: a pair is one character, so only a lone half
strings = st.one_of(
    st.sampled_from(KNOWN),
    st.text(st.one_of(st.characters(), lone_surrogate), max_size=20),
    st.builds("{}{}".format, st.sampled_from(KNOWN), st.text(lone_surrogate, min_size=1, max_size=2)),
    st.integers(1_000, 300_000).map(lambda n: "x" * n),  # long: a 1 MiB body is the limit
)
numbers = st.one_of(
    st.integers(),
    st.integers(-(10**400), 10**400),  # past any float; past int64 for the databases
    st.floats(),  # NaN and +-Infinity included: Python's JSON parser and writer take them
)


def _nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


deep = st.integers(20, 600).map(_nested_list)  # deeper than any echo; Python's JSON writer still takes it
json_values = st.recursive(
    st.none() | st.booleans() | numbers | strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4) | deep,
    max_leaves=12,
)
TOKENS = [
    b"",
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"-0",
    b"9" * 4301,  # one digit over Python's int parsing limit
    b'"\\ud800"',
    b'"\\udc00\\ud800"',  # a pair the wrong way round: two lone halves
    b'{"history": ["P0001"], "k": 1e999}',
    b'{"title": "\\ud800", "attributes": {"\\udfff": ["\\ud800"]}}',
    b'{"events": [{"event_id": "\\ud800", "user_id": "\\ud800", "item_id": "P0001"}]}',
    b'{"k": 1, "k": 2}',
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    b"\xff\xfe{\x00}\x00",  # UTF-16
    b"{" * 100_000,
]


def _json_text(value: Any, ascii_only: bool) -> bytes:
    """JSON as Python writes it (NaN, Infinity); ``ascii_only``: surrogates as \\udXXX escapes,
    else as the bytes of UTF-8 that would encode them (no UTF-8: the body is refused)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _known_ids(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with the run's ids in place of drawn ones (a user_id, an item_id, lists of ids):
    a valid body then gets past "unknown user" to the model and the store."""
    if isinstance(value, dict):
        pools = {"user_id": USERS, "item_id": ITEMS}
        return {
            k: draw(st.sampled_from(pools[k])) if k in pools and isinstance(v, str) else _known_ids(draw, v)
            for k, v in value.items()
        }
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return draw(st.lists(st.sampled_from(ITEMS), min_size=len(value), max_size=len(value)))
    return [_known_ids(draw, v) for v in value] if isinstance(value, list) else value


def _spoil(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one part made hostile: a value replaced by any JSON (a wrong type, a lone
    surrogate, NaN, a huge number or string, deep nesting) or, in an object, an unknown field."""
    if isinstance(value, dict) and value and draw(st.integers(0, 3)):
        name = draw(st.sampled_from(sorted(value)))
        return {**value, name: _spoil(draw, value[name])}
    if isinstance(value, dict):
        return {**value, draw(strings): draw(json_values)}
    if isinstance(value, list) and value and draw(st.booleans()):
        at = draw(st.integers(0, len(value) - 1))
        return [*value[:at], _spoil(draw, value[at]), *value[at + 1 :]]
    return draw(json_values)


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """Lists or objects up to 3000 deep (past Python's parser), at the top or under a field,
    closed or not."""
    depth = draw(st.integers(1, 3_000))
    opening, closing = draw(st.sampled_from([("[", "]"), ('{"a": ', "}")]))
    inner = opening * depth + "1" + closing * depth * draw(st.sampled_from([1, 0]))
    return draw(st.sampled_from([inner, f"{{{json.dumps(draw(strings)[:20])}: {inner}}}"])).encode()


@st.composite
def bodies(draw: st.DrawFn, valid: st.SearchStrategy | None) -> bytes:
    """A raw body for a route whose ``valid`` bodies (by its schema) are drawn from Schemathesis:
    one of them as is or spoiled, any JSON, truncated or not, nesting, odd tokens, any bytes."""
    kinds = ["json", "truncated", "nested", "token", "bytes"]
    kinds += ["valid", "spoiled", "spoiled"] if valid is not None else []
    kind = draw(st.sampled_from(kinds))
    if kind == "nested":
        return draw(nested())
    if kind == "token":
        return draw(st.sampled_from(TOKENS))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    value = draw(json_values)
    if kind in ("valid", "spoiled"):
        value = draw(valid)
        value = _known_ids(draw, value) if draw(st.booleans()) else value
    ascii_only = draw(st.sampled_from([True, True, True, False]))  # mostly: surrogates as escapes reach the parser
    text = _json_text(_spoil(draw, value) if kind == "spoiled" else value, ascii_only)
    return text[: draw(st.integers(0, max(len(text) - 1, 0)))] if kind == "truncated" else text


segments = st.one_of(
    st.sampled_from(KNOWN),
    st.sampled_from(["%ED%A0%80", "%ED%BF%BF", "%FF%FE", "%C0%AF", "%F4%90%80%80", "%00", "%0A", "..", "%2F", ""]),
    st.binary(max_size=12).map(lambda b: quote_from_bytes(b, safe="")),  # any bytes, UTF-8 or not
    st.text(max_size=12).map(lambda s: quote(s, safe="/")),
)
query_values = st.one_of(
    st.sampled_from(KNOWN), segments, st.sampled_from(["-1", "0", "1e999", "NaN", "true", "9" * 30])
)
# JSON most of the time, so that the body reaches the validation (FastAPI reads no other type as JSON)
content_types = st.sampled_from(
    [b"application/json"] * 6
    + [
        b"application/json; charset=latin-1",
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"",
        b"\xff\xfe",
    ]
)
# The key most of the time, so that writes reach the store; else none, or a wrong or non-ASCII one.
api_keys = st.sampled_from([KEY.encode()] * 4 + [None, b"", b"wrong", b"\xff\xfe\x00", KEY.encode() + b"\xe9"])


@st.composite
def raw_request(draw: st.DrawFn, route: Route, valid: st.SearchStrategy | None) -> dict[str, Any]:
    path = re.sub(r"\{\w+(?::\w+)?\}", lambda _: draw(segments), route.path)
    names = st.sampled_from(route.queries or QUERIES) | segments
    query = "&".join(f"{n}={v}" for n, v in draw(st.lists(st.tuples(names, query_values), max_size=4)))
    headers = {b"content-type": draw(content_types)}
    key = draw(api_keys)
    if key is not None:
        headers[b"x-api-key"] = key
    body = draw(bodies(valid)) if route.method in ("POST", "PUT") or draw(st.booleans()) else b""
    return {"method": route.method, "url": f"{path}?{query}" if query else path, "headers": headers, "content": body}


# -- what every answer must be ------------------------------------------------------------------


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} in a JSON answer: no JSON parser but Python's reads it")


def _texts(value: Any) -> list[str]:
    """Every string of a parsed JSON value, keys too."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (k, *_texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return [value] if isinstance(value, str) else []


def check(response) -> None:
    """No 5xx; an error or a JSON answer parses as strict JSON; anything else is UTF-8 text."""
    assert response.status_code < 500, response.text[:500]
    kind = response.headers.get("content-type", "")
    if 300 <= response.status_code < 400:  # /ui/ -> /ui: nothing to read but the Location
        assert response.headers["location"]
    elif response.status_code >= 400 or "json" in kind:
        assert kind == "application/json", (response.status_code, kind)
        body = json.loads(response.content.decode("utf-8"), parse_constant=_no_constant)
        if response.status_code >= 400:
            assert not [t for t in _texts(body) if LONE.search(t)], response.text[:500]
    else:
        assert kind.startswith(("text/html", "text/plain")), kind
        response.content.decode("utf-8")


@pytest.fixture(scope="module", params=BACKENDS)
def service(request, tiny_run, tmp_path_factory):
    """A client of the app over a tiny run and a store of the backend, and its OpenAPI document."""
    if request.param == "sqlite":
        db = f"sqlite:///{tmp_path_factory.mktemp('raw-fuzz') / 'store.sqlite'}"
    else:
        db = request.getfixturevalue("postgres_server").new_database()
    app = create_app(Settings(run=tiny_run, db=db, api_key=KEY))
    with TestClient(app, follow_redirects=False) as client:
        yield client, app.openapi()


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_no_raw_request_gets_a_5xx_or_an_unreadable_body(service, route):
    client, document = service
    path, method = route.operation
    valid = None  # bodies its schema allows, when the document lists one
    if "requestBody" in document["paths"].get(path, {}).get(method, {}):
        operation = schemathesis.openapi.from_dict(document)[path][method]
        valid = operation.as_strategy(generation_mode=GenerationMode.POSITIVE).map(lambda case: case.body)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=raw_request(route, valid))
    def one(request: dict[str, Any]) -> None:
        note(f"{request['method']} {request['url']} {request['headers']} {request['content'][:300]!r}")
        check(client.request(**request))

    one()
