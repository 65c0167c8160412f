"""Users: who they are (paged), a user's live history, their recommendations and why, and
forgetting them. A user neither the run nor the store knows (a first visit), or one whose
history holds no item the catalog knows, gets the fallback list (``source: "fallback"``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query

from recscope.serve.deps import ReadAccess, ServiceDep, StoreDep, WriteAccess
from recscope.serve.explanation import Explanation, SingleExplanation
from recscope.serve.live import explain_item, serve_list, user_history
from recscope.serve.schemas import (
    ForgetOut,
    HistoryItem,
    HistoryOut,
    RecommendationsOut,
    UserOut,
    UsersPage,
    errors,
)

router = APIRouter(prefix="/users", tags=["users"])

K = Annotated[int, Query(ge=1, le=1000, description="how many items")]
Method = Annotated[str | None, Query(description="explanation method (default: the run's measured best)")]
Exclude = Annotated[list[str], Query(description="an item id never to recommend in this answer (repeatable)")]
ExcludeAttribute = Annotated[
    list[str], Query(description='a filter "field=value" (e.g. brand=Voltra): items with it are not recommended')
]
IncludeAttribute = Annotated[
    list[str],
    Query(
        description='a filter "field=value" (e.g. category=Phones, repeatable): only items with it are recommended; '
        "filters on one field are ORed, on different fields ANDed"
    ),
]
Fallback = Annotated[
    bool,
    Query(
        description="false: an unknown user is 404 and a history without a known item 422, rather than the "
        "fallback list"
    ),
]
Limit = Annotated[int, Query(ge=1, le=1000, description="users in this page")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="users before this page")]
Words = Annotated[
    bool, Query(description="also which words of the titles drive the item, when text drives it (slower: re-encodes)")
]
Counterfactual = Annotated[
    bool, Query(description="with explain: also each item's counterfactual (the smallest history edit that drops it)")
]


@router.get("", dependencies=ReadAccess)
def list_users(svc: ServiceDep, limit: Limit = 100, offset: Offset = 0) -> UsersPage:
    """Every user the service knows, in pages: the run's users (the order of its training data),
    then the users only the store knows (posted events, none in the run), in the order of their
    first event; each with how many events the run and the store hold of theirs. ``total``
    counts both. A forgotten user (DELETE /users/{id}) is in neither part: the store's tombstone
    hides the run's events of theirs; one who posted events since is a new store user."""
    rec = svc.recommender
    forgotten = svc.store.forgotten()  # O(tombstones): read per page, as every worker must honour them at once
    gone = sorted(i for i in map(rec.data.find_user, forgotten) if i is not None)
    shown = np.delete(np.arange(rec.data.n_users), gone)  # the run's users not forgotten, training order
    # Every user the store holds events for, to leave out the run's: O(store users) per page.
    store_only = [(u, n) for u, n in svc.store.users() if rec.data.find_user(u) is None or u in forgotten]
    first = [rec.data.user_ids[i] for i in shown[offset : offset + limit]]
    counts = svc.store.event_counts(first)
    lengths = rec.data.lengths
    page = [
        UserOut(user_id=u, source="run", run_events=int(lengths[i]), stored_events=counts.get(u, 0))
        for u, i in zip(first, shown[offset : offset + limit], strict=True)
    ]
    start = max(offset - len(shown), 0)
    page += [
        UserOut(user_id=u, source="store", run_events=0, stored_events=n)
        for u, n in store_only[start : start + limit - len(page)]
    ]
    return UsersPage(users=page, total=len(shown) + len(store_only))


@router.get("/{user_id:path}/history", responses=errors(404), dependencies=ReadAccess)
def history(user_id: str, svc: ServiceDep) -> HistoryOut:
    """Oldest first: the run's training history, then the events stored since."""
    items = [HistoryItem(**asdict(e)) for e in user_history(svc, user_id).items]
    return HistoryOut(user_id=user_id, items=items)


@router.delete("/{user_id:path}", dependencies=WriteAccess)
def forget(user_id: str, store: StoreDep) -> ForgetOut:
    """Forget the user: delete their stored events, served lists and feedback and write their
    tombstone in one transaction, committed before this answers. From then on every route of
    every worker hides their training events (the run's files are unchanged; ``recscope retrain``
    writes a run without them), and GET /model counts them among each version's ``forgotten``."""
    tombstone = store.forget_user(user_id)
    return ForgetOut(user_id=user_id, deleted=tombstone.deleted, forgotten_at=tombstone.forgotten_at)


@router.get("/{user_id:path}/recommendations", responses=errors(404, 503), dependencies=ReadAccess)
def recommendations(
    user_id: str,
    svc: ServiceDep,
    k: K = 10,
    explain: bool = False,
    method: Method = None,
    counterfactual: Counterfactual = False,
    exclude: Exclude = (),
    exclude_attribute: ExcludeAttribute = (),
    include_attribute: IncludeAttribute = (),
    fallback: Fallback = True,
) -> RecommendationsOut:
    """The user's top-``k`` from their live history (``source: "model"``): owned, dismissed and
    hidden items left out, and those the filters leave out (an unknown field or value is 422
    naming it). A user neither the run nor the store knows, or whose history holds no item the
    catalog knows, gets the fallback list under the same filters (``source: "fallback"``,
    ``fallback``: which list and why) unless ``fallback=false``."""
    return serve_list(
        svc,
        user_id=user_id,
        k=k,
        explain=explain,
        method=method,
        counterfactual=counterfactual,
        exclude=list(exclude),
        exclude_attributes=list(exclude_attribute),
        include_attributes=list(include_attribute),
        fallback=fallback,
    )


@router.get(
    "/{user_id:path}/recommendations/{item_id:path}/explanation", responses=errors(404, 503), dependencies=ReadAccess
)
def explanation(
    user_id: str, item_id: str, svc: ServiceDep, k: K = 10, method: Method = None, words: Words = False
) -> SingleExplanation:
    """The item's explanation for the user's live history (any item of the catalog: its
    ``status`` says whether it is recommended); ``words=true`` adds its word attributions
    (``words``, null when text does not drive it)."""
    explained = Explanation.of(explain_item(svc, user_id, item_id, k=k, method=method, words=words))
    return SingleExplanation(**dict(explained), model_version=svc.model_version)
