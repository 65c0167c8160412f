"""The live service: ``create_app(settings)`` builds the FastAPI app over one run.

The lifespan loads the run's Recommender and opens the Store once; routes reach them through
the typed dependencies of ``deps.py``. Errors recscope raises for what a client sent come back
as JSON ``{"error": ..., "fix": ...}``: 401 for a write or admin request without the API key
(when one is set), 404 for an unknown user or item, 409 for a write the state refuses, 422 for
other bad input (pydantic's own 422 names the field and the reason). The OpenAPI document lists
them: the refusals a route shares with others follow from what it takes (``_shared_errors``), the
ones of its own (404, 409) it declares with ``schemas.errors``.
``/docs`` serves Swagger UI from the assets ``fastapi-offline`` installs: no CDN.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import recscope
from recscope.errors import RecscopeError, RunError
from recscope.histories import RunHistories
from recscope.recommend import Recommender
from recscope.run import load_info
from recscope.serve import metrics
from recscope.serve.deps import Conflict, NotFound, Service, Unauthorized, Unavailable
from recscope.serve.follow import Follower
from recscope.serve.limits import BodyLimit
from recscope.serve.live import StoreHistories, add_stored_items
from recscope.serve.metrics import Metrics, MetricsMiddleware
from recscope.serve.routes import events, feedback, health, items, model, recommendations, ui, users, whatif
from recscope.serve.schemas import ERRORS
from recscope.serve.settings import Settings
from recscope.serve.store import Store
from recscope.snapshot import Snapshot

DOCS_ASSETS = "/static/docs"  # Swagger UI's js/css, from the fastapi-offline package


class AnyText(PathConvertor):
    """``{id:path}`` that reads every character: starlette's is ``.*``, which stops at a newline,
    and its route pattern ends in ``$``, which matches before a final one, so DELETE
    /users/victim%0A forgot the user "victim". Ids are any text (but NUL) and stay exact."""

    regex = r"[\s\S]*"


register_url_convertor("path", AnyText())  # the route templates (and /metrics labels) are unchanged


def load_recommender(settings: Settings, store: Store, version: str | None) -> Recommender:
    """The run's model ``version`` reading histories from ``store``, over the catalog the store
    holds (the trained items and every item added since, in the order they were added)."""
    if settings.run is None:
        raise RunError("no run to serve", fix="pass the run directory (recscope serve RUN, or RECSCOPE_RUN)")
    snapshot = Snapshot.load(Path(settings.run), version)
    recommender = Recommender(snapshot, StoreHistories(RunHistories(snapshot.data), store))
    add_stored_items(recommender, store)
    return recommender


def load_service(settings: Settings, *, version: str | None = None, store: Store | None = None) -> Service:
    """The model version to serve over the store (opened from ``settings`` unless given): ``version``
    if given, else the one the store says every worker serves, else ``settings.version``, else the
    run's current one."""
    if settings.run is None:
        raise RunError("no run to serve", fix="pass the run directory (recscope serve RUN, or RECSCOPE_RUN)")
    load_info(Path(settings.run))  # a missing or damaged run is named before a store is opened in it
    if store is None:
        store = Store.open(settings.db) if settings.db else Store.for_run(Path(settings.run))
    seen = store.last_change()  # read first: a change made while loading is applied after
    recommender = load_recommender(settings, store, version or store.serving() or settings.version)
    # Loaded beside the service, not before it is ready: the first PUT /items waits for it if it
    # comes sooner, later ones encode their title at once.
    threading.Thread(target=recommender.load_text_encoder, name="text-encoder", daemon=True).start()
    return Service(
        recommender=recommender,
        store=store,
        model_version=recommender.version,
        busy_after=settings.busy_after,
        seen=seen,
    )


def _status(error: RecscopeError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Unavailable):
        return 503
    if isinstance(error, Unauthorized):
        return 401
    if isinstance(error, Conflict):
        return 409
    return 422


async def _recscope_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RecscopeError)
    body = _json_safe({"error": error.problem, "fix": error.fix})  # a message may quote an id as sent
    headers = None
    if isinstance(error, Unavailable):  # which case, so a client knows whether to wait or to send less
        body["reason"] = error.reason
        headers = {"Retry-After": str(error.retry_after)}
    return JSONResponse(body, status_code=_status(error), headers=headers)


ECHO_DEPTH = 20  # levels of an error body, the input it echoes included: deeper lists and objects are cut


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as an error body can always send, whatever the request held: echoing what
    Python's JSON parser reads but UTF-8 or JSON cannot carry back failed as a 500. A lone
    surrogate ("\\ud800" in a JSON string: half of a UTF-16 pair) becomes the six characters
    ``\\ud800``, and a byte that is no UTF-8 (in a body not sent as JSON, which stays bytes)
    ``\\x80``: both still name what was sent. NaN and Infinity become "nan", "inf"; a list or
    object nested deeper than ``ECHO_DEPTH`` becomes "[...]" or "{...}" (walking 500 levels of
    ``[[[...]]]`` overflowed the stack). Other objects (an exception in pydantic's ``ctx``) go
    through FastAPI's ``jsonable_encoder`` first."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes):  # a body that is no JSON, as FastAPI hands it to pydantic
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no such number
    if isinstance(value, dict):
        if depth >= ECHO_DEPTH:
            return "{...}"
        return {_json_safe(k, depth): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return "[...]" if depth >= ECHO_DEPTH else [_json_safe(v, depth + 1) for v in value]
    return _json_safe(jsonable_encoder(value), depth)


async def _invalid_request(_request: Request, error: Exception) -> JSONResponse:
    """pydantic's 422 as FastAPI sends it, with what it echoes (``input``; ``loc``, which names an
    unknown field as sent) made sendable by ``_json_safe``."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": _json_safe(error.errors())}, status_code=422)


def _shared_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Add to each operation of FastAPI's OpenAPI ``document`` the refusals that follow from what
    it takes: 401 with the API key (its ``security``), 400 and 413 with a body (not UTF-8; over the
    limit, ``BodyLimit``), and 422 with any input as either body it can be (FastAPI's default names
    pydantic's only). 503 (busy) the routes that compute with the model declare themselves."""
    models = sorted({m for bodies, _ in ERRORS.values() for m in bodies}, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "serialization") for m in models], ref_template="#/components/schemas/{model}")
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(defs["$defs"])
    for unused in ("HTTPValidationError", "ValidationError"):  # replaced by ValidationErrorOut
        schemas.pop(unused, None)

    def response(code: int) -> dict[str, Any]:
        bodies, description = ERRORS[code]
        refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in bodies]
        schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    for operation in (op for path in document["paths"].values() for op in path.values()):
        responses = operation["responses"]
        codes = [401] if operation.get("security") else []
        codes += [400, 413] if "requestBody" in operation else []
        for code in codes:
            responses.setdefault(str(code), response(code))
        if "422" in responses:
            responses["422"] = response(422)
    return document


class WorkerHeaders:
    """``X-Recscope-Worker: <pid>`` on every response: which worker process answered.

    With several workers, each connection belongs to the worker that accepted it, and a client
    that keeps its connections (a load balancer, a connection pool) would stay on the workers
    that happened to accept them: eight connections opened at once were all taken by one
    worker while the other idled. So with ``workers > 1`` every answer also says
    ``Connection: close``: the client's next request opens a new connection, which the
    least busy worker tends to accept first (its event loop is free; a busy worker's core is
    computing). A new loopback connection costs well under a millisecond."""

    def __init__(self, app: ASGIApp, close: bool = False):
        self.app = app
        self.headers = [(b"x-recscope-worker", str(os.getpid()).encode())]
        if close:
            self.headers.append((b"connection", b"close"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, tagged)


def create_app(settings: Settings, *, service: Service | None = None) -> FastAPI:
    """The app over ``settings.run``; a ``service`` already loaded (the CLI loads it first, so a
    bad run or store URL is one line of error, not a server traceback) is used as it is."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service if service is not None else load_service(settings)
        app.state.service = svc
        follower = Follower(
            get=lambda: app.state.service,
            put=lambda new: setattr(app.state, "service", new),
            load=lambda version: load_recommender(settings, svc.store, version),
            seen=svc.seen,
            applied=lambda kind, seconds: app.state.metrics.applied.labels(kind).observe(seconds),
        )
        app.state.follower = follower
        follower.start(settings.follow_every)
        try:
            yield
        finally:
            follower.stop()
            app.state.service = None
            svc.store.close()

    app = FastAPIOffline(
        title="recscope",
        version=recscope.__version__,
        description="Live recommendations with explanations over one trained run.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    app.state.settings = settings
    app.state.service = None
    app.add_exception_handler(RecscopeError, _recscope_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    fastapi_openapi, completed = app.openapi, []

    def openapi() -> dict[str, Any]:
        document = fastapi_openapi()  # FastAPI's, cached until the routes change
        if not completed or completed[-1] is not document:
            completed[:] = [_shared_errors(document)]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=settings.max_body)
    app.add_middleware(WorkerHeaders, close=settings.workers > 1)
    app.state.metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: counts 413s too
    for module in (health, metrics, model, events, feedback, items, users, recommendations, whatif, ui):
        app.include_router(module.router)
    return app
