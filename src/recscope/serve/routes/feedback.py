"""Feedback on a served list: a click, purchase or dismissal of one of its items, or a verdict
on its explanation. A dismissed item is never recommended to that user again. Feedback is not
an event: a "purchase" here does not enter the user's history (POST /events does).

Idempotent by the client's ``feedback_id`` (optional): the first answer is 201, a re-sent copy
(same id, same request_id, user_id, item_id and action) 200 with ``duplicate: true`` and nothing
stored, the same id with anything else 409 naming what differs. The database enforces it (a
unique index), so two workers taking the same feedback at once store it once.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from recscope.serve.deps import Conflict, NotFound, StoreDep, WriteAccess
from recscope.serve.schemas import FeedbackIn, FeedbackOut, errors
from recscope.serve.store import StoredFeedback

router = APIRouter(prefix="/feedback", tags=["feedback"])

COMPARED = ("request_id", "user_id", "item_id", "action")  # what a re-sent copy repeats


@router.post("", status_code=201, dependencies=WriteAccess, responses={200: {"model": FeedbackOut}, **errors(404, 409)})
def post_feedback(body: FeedbackIn, store: StoreDep, response: Response) -> FeedbackOut:
    """Record the action (201); 404 when ``request_id`` names no served list, 422 when the user
    or item is not the one it was served to. With a ``feedback_id`` stored before: 200 and
    ``duplicate: true`` (nothing stored) for the same feedback, 409 for other feedback."""
    if body.feedback_id is not None and (earlier := store.feedback(body.feedback_id)) is not None:
        return _again(body, earlier, response)
    if store.served(body.request_id) is None:
        raise NotFound(
            f"unknown request_id {body.request_id!r}: no list was served with it",
            fix="send the request_id of the recommendations the feedback is about",
        )
    earlier = store.add_feedback(body.request_id, body.user_id, body.item_id, body.action, body.feedback_id)
    if earlier is not None:  # another worker stored this feedback_id since the read above
        return _again(body, earlier, response)
    return FeedbackOut(**body.model_dump(), duplicate=False)


def _again(body: FeedbackIn, earlier: StoredFeedback, response: Response) -> FeedbackOut:
    """A feedback_id stored before: a duplicate (200) when the rest is the same, else 409 naming it."""
    differs = [
        f"{name} {getattr(earlier, name)!r} (now {getattr(body, name)!r})"
        for name in COMPARED
        if getattr(earlier, name) != getattr(body, name)
    ]
    if differs:
        raise Conflict(
            f"feedback_id {body.feedback_id!r} was stored before with other content: {', '.join(differs)}"[:1000],
            fix="re-send feedback exactly as first sent; new feedback needs a new feedback_id",
        )
    response.status_code = 200
    return FeedbackOut(**body.model_dump(), duplicate=True)
