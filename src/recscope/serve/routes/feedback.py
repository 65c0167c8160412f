"""Feedback on a served list: a click, purchase or dismissal of one of its items, or a verdict
on its explanation. A dismissed item is never recommended to that user again."""

from __future__ import annotations

from fastapi import APIRouter

from recscope.serve.deps import NotFound, StoreDep, WriteAccess
from recscope.serve.schemas import FeedbackIn, FeedbackOut, errors

router = APIRouter(prefix="/feedback", tags=["feedback"])


@router.post("", status_code=201, dependencies=WriteAccess, responses=errors(404))
def post_feedback(body: FeedbackIn, store: StoreDep) -> FeedbackOut:
    """Record the action; 404 when ``request_id`` names no served list, 422 when the user or
    item is not the one it was served to."""
    if store.served(body.request_id) is None:
        raise NotFound(
            f"unknown request_id {body.request_id!r}: no list was served with it",
            fix="send the request_id of the recommendations the feedback is about",
        )
    store.add_feedback(body.request_id, body.user_id, body.item_id, body.action)
    return FeedbackOut(**body.model_dump())
