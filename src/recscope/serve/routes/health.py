"""Liveness (the process answers) and readiness (the model and store are loaded)."""

from __future__ import annotations

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
    state = Readiness(
        status="ready" if svc is not None else "loading",
        model=svc is not None and svc.recommender is not None,
        store=svc is not None and svc.store is not None,
        model_version=None if svc is None else svc.model_version,
    )
    if svc is None:
        return JSONResponse(state.model_dump(), status_code=503)
    return state
