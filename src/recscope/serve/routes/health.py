"""Liveness (the process answers) and readiness, per worker: the model is loaded, the store
answers, and the worker has applied the store's changes (items added and version switches made
through other workers) up to ``Settings.ready_lag`` seconds ago."""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from recscope.serve.schemas import Liveness, Readiness

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
def live() -> Liveness:
    return Liveness(status="ok")


@router.get("/ready", responses={503: {"model": Readiness}})
def ready(request: Request) -> Readiness:
    svc = getattr(request.app.state, "service", None)
    follower = getattr(request.app.state, "follower", None)
    if svc is None or follower is None:
        state = Readiness(status="loading", model=False, store=False, worker=os.getpid())
        return JSONResponse(state.model_dump(), status_code=503)
    seen, store_seq, lag, reachable = follower.seen, None, None, svc.store.ping()
    if reachable:
        pending = svc.store.changes_since(seen, limit=1)
        store_seq = svc.store.last_change()
        lag = round(time.time() - pending[0].created_at, 3) if pending else 0.0
    status = (
        "store_unreachable"
        if not reachable
        else "catching_up"
        if lag > request.app.state.settings.ready_lag
        else "ready"
    )
    state = Readiness(
        status=status,
        model=True,
        store=reachable,
        model_version=svc.model_version,
        worker=os.getpid(),
        catalog_seq=seen,
        store_seq=store_seq,
        lag_seconds=lag,
        error=follower.error,
    )
    if status != "ready":
        return JSONResponse(state.model_dump(), status_code=503)
    return state
