"""A user: their live history, their recommendations and why, and forgetting them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from recscope.serve.deps import ServiceDep, StoreDep, WriteAccess
from recscope.serve.live import explain_item, serve_list, user_history
from recscope.serve.schemas import ForgetOut, HistoryItem, HistoryOut, RecommendationsOut, errors

router = APIRouter(prefix="/users", tags=["users"])

K = Annotated[int, Query(ge=1, le=1000, description="how many items")]
Method = Annotated[str | None, Query(description="explanation method (default: the run's measured best)")]
Exclude = Annotated[list[str], Query(description="an item id never to recommend in this answer (repeatable)")]
ExcludeAttribute = Annotated[
    list[str], Query(description='a filter "field=value" (e.g. brand=Voltra): items with it are not recommended')
]
Words = Annotated[
    bool, Query(description="also which words of the titles drive the item, when text drives it (slower: re-encodes)")
]
Counterfactual = Annotated[
    bool, Query(description="with explain: also each item's counterfactual (the smallest history edit that drops it)")
]


@router.get("/{user_id:path}/history", responses=errors(404))
def history(user_id: str, svc: ServiceDep) -> HistoryOut:
    """Oldest first: the run's training history, then the events stored since."""
    items = [HistoryItem(**asdict(e)) for e in user_history(svc, user_id).items]
    return HistoryOut(user_id=user_id, items=items)


@router.delete("/{user_id:path}", dependencies=WriteAccess)
def forget(user_id: str, store: StoreDep) -> ForgetOut:
    """Delete the user's stored events, served lists and feedback (the trained run is unchanged)."""
    return ForgetOut(user_id=user_id, deleted=store.forget(user_id))


@router.get("/{user_id:path}/recommendations", responses=errors(404, 503))
def recommendations(
    user_id: str,
    svc: ServiceDep,
    k: K = 10,
    explain: bool = False,
    method: Method = None,
    counterfactual: Counterfactual = False,
    exclude: Exclude = (),
    exclude_attribute: ExcludeAttribute = (),
) -> RecommendationsOut:
    """The user's top-``k`` from their live history: owned and dismissed items hidden, and those
    the exclusion filters name."""
    return serve_list(
        svc,
        user_id=user_id,
        k=k,
        explain=explain,
        method=method,
        counterfactual=counterfactual,
        exclude=list(exclude),
        exclude_attributes=list(exclude_attribute),
    )


@router.get("/{user_id:path}/recommendations/{item_id:path}/explanation", responses=errors(404, 503))
def explanation(
    user_id: str, item_id: str, svc: ServiceDep, k: K = 10, method: Method = None, words: Words = False
) -> Response:
    """The item's ``Explanation.to_json()`` for the user's live history (any item of the catalog);
    ``words=true`` adds its word attributions (``words``, null when text does not drive it)."""
    explained = explain_item(svc, user_id, item_id, k=k, method=method, words=words)
    return Response(explained.to_json(), media_type="application/json")
