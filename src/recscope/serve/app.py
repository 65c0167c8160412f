"""The live service: ``create_app(settings)`` builds the FastAPI app over one run.

The lifespan loads the run's Recommender and opens the Store once; routes reach them through
the typed dependencies of ``deps.py``. Errors recscope raises for what a client sent come back
as JSON ``{"error": ..., "fix": ...}``: 401 for a write or admin request without the API key
(when one is set), 404 for an unknown user or item, 409 for a write the state refuses, 422 for
other bad input (pydantic's own 422 names the field and the reason).
``/docs`` serves Swagger UI from the assets ``fastapi-offline`` installs: no CDN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

import recscope
from recscope.errors import RecscopeError, RunError
from recscope.recommend import Recommender
from recscope.serve import metrics
from recscope.serve.deps import Conflict, NotFound, NotReady, Service, Unauthorized
from recscope.serve.limits import BodyLimit
from recscope.serve.live import model_version
from recscope.serve.metrics import Metrics, MetricsMiddleware
from recscope.serve.routes import events, feedback, health, items, recommendations, users, whatif
from recscope.serve.settings import Settings
from recscope.serve.store import Store

DOCS_ASSETS = "/static/docs"  # Swagger UI's js/css, from the fastapi-offline package


def load_service(settings: Settings) -> Service:
    if settings.run is None:
        raise RunError("no run to serve", fix="pass the run directory (recscope serve RUN, or RECSCOPE_RUN)")
    run = Path(settings.run)
    recommender = Recommender.load(run)
    store = Store.open(settings.db) if settings.db else Store.for_run(run)
    return Service(recommender=recommender, store=store, model_version=model_version(run))


def _status(error: RecscopeError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, NotReady):
        return 503
    if isinstance(error, Unauthorized):
        return 401
    if isinstance(error, Conflict):
        return 409
    return 422


async def _recscope_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RecscopeError)
    return JSONResponse({"error": error.problem, "fix": error.fix}, status_code=_status(error))


def create_app(settings: Settings, *, service: Service | None = None) -> FastAPI:
    """The app over ``settings.run``; a ``service`` already loaded (the CLI loads it first, so a
    bad run or store URL is one line of error, not a server traceback) is used as it is."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service if service is not None else load_service(settings)
        app.state.service = svc
        try:
            yield
        finally:
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
    app.add_middleware(BodyLimit, max_bytes=settings.max_body)
    app.state.metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: counts 413s too
    for module in (health, metrics, events, feedback, items, users, recommendations, whatif):
        app.include_router(module.router)
    return app
