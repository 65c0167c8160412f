"""Events posted by clients (purchases, clicks): stored once per ``event_id``."""

from __future__ import annotations

from fastapi import APIRouter

from recscope.serve.deps import StoreDep, WriteAccess
from recscope.serve.schemas import EventsIn, EventsOut

router = APIRouter(prefix="/events", tags=["events"])


@router.post("", dependencies=WriteAccess)
def post_events(body: EventsIn, store: StoreDep) -> EventsOut:
    """Store a batch in one transaction; a re-sent event (same id and content) counts as a duplicate."""
    accepted, duplicates = store.add_events([e.model_dump(exclude_none=True) for e in body.events])
    return EventsOut(accepted=accepted, duplicates=duplicates)
