"""Recommendations for a history given in the request (anyone; nothing about them is stored
but the served list)."""

from __future__ import annotations

from fastapi import APIRouter

from recscope.serve.deps import ServiceDep
from recscope.serve.live import adhoc_history, serve_list
from recscope.serve.schemas import RecommendationsOut, RecommendIn

router = APIRouter(prefix="/recommendations", tags=["recommendations"])


@router.post("")
def recommend(body: RecommendIn, svc: ServiceDep) -> RecommendationsOut:
    return serve_list(svc, adhoc_history(svc.recommender, body.history), body.k, body.explain, body.method)
