"""Recommendations for a history given in the request (anyone; nothing about them is stored
but the served list)."""

from __future__ import annotations

from fastapi import APIRouter

from recscope.serve.deps import ServiceDep
from recscope.serve.live import serve_list
from recscope.serve.schemas import RecommendationsOut, RecommendIn, errors

router = APIRouter(prefix="/recommendations", tags=["recommendations"])


@router.post("", responses=errors(503))
def recommend(body: RecommendIn, svc: ServiceDep) -> RecommendationsOut:
    """The top-``k`` for a history given by item ids (an anonymous session; ``source: "model"``);
    ids the catalog does not know are skipped and named in ``unknown_items``. Hidden items are
    never in it, nor those ``exclude`` or the attribute filters leave out (an unknown field or
    value is 422 naming it). An empty history (a first visit), or one with no id the catalog
    knows, gets the fallback list under the same filters (``source: "fallback"``) unless
    ``fallback`` is false (then 422, as before)."""
    return serve_list(
        svc,
        history=body.history,
        k=body.k,
        explain=body.explain,
        method=body.method,
        counterfactual=body.counterfactual,
        exclude=body.exclude,
        exclude_attributes=body.exclude_attributes,
        include_attributes=body.include_attributes,
        filter_names=("include_attributes", "exclude_attributes"),
        fallback=body.fallback,
    )
