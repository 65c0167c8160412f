"""Where a user's history comes from: a history source.

The Recommender reads histories from one source. Offline it is the run's frozen training
data (:class:`RunHistories`); the live service puts the event store behind it (the run's
history followed by the events stored since: ``recscope.serve.live.StoreHistories``), so a
posted event is in the very next answer with no retraining. A source returns events by item
id; :func:`resolve` turns them into the dense indices the model reads, against the catalog
as it is now (an item added after training is known from the moment it is added).

A live history also holds the user's dismissals ("not interested": the store's feedback
"dismiss"), as events of kind :data:`DISMISS` at the time they were given. Only a model that
reads the label "dismiss" (a version a fine-tune taught it to: ``Snapshot.reads_dismissals``)
reads them as input; for any other, :func:`resolve` leaves them out of the history, so its
input is exactly the events it was trained on. Either way ``History.dismissed`` names the items
dismissed: they are never recommended to the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recscope.data import Dataset

TRAINING_EVENT = "interaction"  # the data does not say which kind of event a row was
DISMISS = "dismiss"  # the kind of a stored dismissal in a live history (an input only to a model that reads it)


@dataclass(frozen=True)
class Event:
    item_id: str
    event: str  # the event's kind (the data's event type, the stored event's); "interaction" when not known
    timestamp: float  # epoch seconds (the training data's own clock for source "run")
    source: str  # "run" (trained on), "store" (posted since) or "request" (given in a request)
    value: float | None = None  # the event's value (a rating, ...), when it has one


@dataclass(frozen=True)
class History:
    user_id: str | None  # None: an anonymous history given in a request
    items: Sequence[Event]  # every event, its item known to the catalog or not, oldest first
    indices: np.ndarray  # dense indices of the items the catalog knows, as the model reads them
    unknown: list[str]  # item ids the catalog does not know, in history order (skipped)
    in_run: bool  # the run was trained on this user
    dismissed: tuple[str, ...] = ()  # the items the user dismissed (read as input or not), first dismissal first
    # (len(indices),) bool: the positions of ``indices`` that are dismissals; None: there are none
    dismissals: np.ndarray | None = None

    @property
    def owned(self) -> np.ndarray:
        """Dense indices of the items the user did something with other than dismiss them: what
        a list leaves out as owned (a dismissed item is left out as dismissed)."""
        return self.indices if self.dismissals is None else self.indices[~self.dismissals]


class HistorySource(Protocol):
    def history(self, user_id: str) -> History:
        """The user's history; a DataError (or a subclass) names a user the source does not know."""
        ...


def resolve(
    data: Dataset, user_id: str | None, events: Sequence[Event], in_run: bool, dismissals: bool = False
) -> History:
    """The History of ``events`` against the catalog ``data`` holds now; ``dismissals``: the
    reader's model reads dismissals (events of kind DISMISS), else they are left out of it
    (``dismissed`` names their items either way)."""
    dismissed = tuple(dict.fromkeys(e.item_id for e in events if e.event == DISMISS))
    if not dismissals and dismissed:
        events = [e for e in events if e.event != DISMISS]
    indices, unknown, kinds = [], [], []
    for e in events:
        index = data.find(e.item_id)
        if index is None:
            unknown.append(e.item_id)
        else:
            indices.append(index)
            kinds.append(e.event == DISMISS)
    marks = np.array(kinds, dtype=bool) if dismissals and any(kinds) else None
    return History(user_id, events, np.array(indices, dtype=np.int64), unknown, in_run, dismissed, marks)


def adhoc(data: Dataset, item_ids: Sequence[str]) -> History:
    """An anonymous history given by item ids (oldest first)."""
    events = [Event(str(i), TRAINING_EVENT, 0.0, "request") for i in item_ids]
    return resolve(data, None, events, in_run=False)


class RunHistories:
    """The run's frozen training data: the histories the model was trained on."""

    def __init__(self, data: Dataset):
        self.data = data

    def events(self, user_id: str) -> list[Event] | None:
        """The user's training events, oldest first; None when the run does not know the user."""
        user = self.data.find_user(user_id)
        return None if user is None else self._events(user)

    def history(self, user_id: str) -> History:
        user = self.data.user_index(user_id)  # a DataError naming an unknown user and what to use
        # The run's items are always in the catalog: no lookup needed.
        return History(str(user_id), self._events(user), self.data.sequence(user).copy(), [], True)

    def _events(self, user: int) -> list[Event]:
        start, end = int(self.data.offsets[user]), int(self.data.offsets[user + 1])
        d = self.data
        rows = zip(*(a[start:end].tolist() for a in (d.items, d.timestamps, d.events, d.values)), strict=True)
        return [
            Event(d.item_ids[i], d.event_types[e] or TRAINING_EVENT, float(t), "run", None if v != v else v)
            for i, t, e, v in rows
        ]
