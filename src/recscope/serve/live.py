"""A user's live history and the lists served from it: the run's model over what the store
has seen since training.

A user's history is the run's training history (if the run knows the user) followed by the
events stored since, oldest first; a user only the store knows is a new user whose history
is their stored events. Stored item ids the run does not know (items added after training)
are skipped and named (``unknown``). Items the user dismissed are never recommended.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recscope.errors import DataError
from recscope.recommend import Recommender
from recscope.serve.deps import NotFound, Service
from recscope.serve.schemas import HistoryItem, RecommendationsOut, RecommendedItem

TRAINING_EVENT = "interaction"  # the run's data does not say which kind of event a row was


def model_version(run: Path) -> str:
    """A stable id of the served weights: the first 16 hex digits of sha256(model.safetensors)."""
    digest = hashlib.sha256()
    with open(run / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class LiveHistory:
    user_id: str | None
    items: list[HistoryItem]  # everything, known or not, oldest first
    indices: np.ndarray  # dense indices of the known items, as the model reads them
    unknown: list[str]  # stored item ids the run does not know, in history order
    in_run: bool  # the run was trained on this user


def item_index_or_none(rec: Recommender, item_id: str) -> int | None:
    """The dense index of ``item_id``, or None when the run does not know it."""
    try:
        return rec.data.item_index(item_id)
    except DataError:
        return None


def user_history(svc: Service, user_id: str) -> LiveHistory:
    """The training history then the stored events; NotFound when neither knows the user."""
    rec, data = svc.recommender, svc.recommender.data
    items: list[HistoryItem] = []
    try:
        user = data.user_index(user_id)
    except DataError:
        user = None
    if user is not None:
        start, end = int(data.offsets[user]), int(data.offsets[user + 1])
        items += [
            HistoryItem(item_id=data.item_ids[i], event=TRAINING_EVENT, timestamp=float(t), source="run")
            for i, t in zip(data.items[start:end].tolist(), data.timestamps[start:end].tolist(), strict=True)
        ]
    stored = svc.store.history(user_id)
    if user is None and not stored:
        raise NotFound(
            f"unknown user {user_id!r}: not in the run's training data and no events stored",
            fix="post an event for this user to POST /events, or use a user id the run was trained on",
        )
    items += [HistoryItem(item_id=e.item_id, event=e.event, timestamp=e.timestamp, source="store") for e in stored]
    indices, unknown = [], []
    for item in items:
        index = item_index_or_none(rec, item.item_id)
        if index is None:
            unknown.append(item.item_id)
        else:
            indices.append(index)
    return LiveHistory(user_id, items, np.array(indices, dtype=np.int64), unknown, user is not None)


def adhoc_history(rec: Recommender, item_ids: list[str]) -> LiveHistory:
    """A history given by id in a request (anonymous): unknown ids are skipped and named."""
    indices, unknown = [], []
    for item_id in item_ids:
        index = item_index_or_none(rec, item_id)
        if index is None:
            unknown.append(item_id)
        else:
            indices.append(index)
    items = [HistoryItem(item_id=i, event=TRAINING_EVENT, timestamp=0.0, source="request") for i in item_ids]
    return LiveHistory(None, items, np.array(indices, dtype=np.int64), unknown, False)


def require_known(rec: Recommender, history: LiveHistory) -> None:
    """Refuse a history none of whose items the run knows (a DataError naming them)."""
    if len(history.indices) == 0:
        shown = ", ".join(repr(i) for i in history.unknown[:5]) + (" ..." if len(history.unknown) > 5 else "")
        raise DataError(
            f"none of the {len(history.unknown)} history items is known to this run ({shown})",
            fix=f"use item ids from the catalog the run was trained on (e.g. {', '.join(rec.data.item_ids[1:4])})",
        )


def known_ids(rec: Recommender, history: LiveHistory) -> list[str]:
    return [rec.data.item_ids[i] for i in history.indices.tolist()]


def explain_item(svc: Service, history: LiveHistory, item_id: str, k: int = 10, method: str | None = None):
    """The Explanation of one item for this history (any item: outside the top-K says so)."""
    rec = svc.recommender
    require_known(rec, history)
    if item_index_or_none(rec, item_id) is None:
        raise NotFound(f"unknown item {item_id!r}", fix=f"use an item id of the run (e.g. {rec.data.item_ids[1]})")
    explanation = rec.explain(history=known_ids(rec, history), item=item_id, k=k, method=method)[0]
    explanation.user = history.user_id
    return explanation


def serve_list(svc: Service, history: LiveHistory, k: int, explain: bool, method: str | None) -> RecommendationsOut:
    """The top-``k`` for a history: owned and dismissed items hidden, logged as served."""
    rec = svc.recommender
    require_known(rec, history)
    dismissed = svc.store.dismissed(history.user_id) if history.user_id is not None else set()
    top = rec.recommend(history=known_ids(rec, history), k=k, exclude=sorted(dismissed))
    items = [RecommendedItem(**r.to_dict()) for r in top]
    if explain:
        for item in items:
            explanation = explain_item(svc, history, item.item_id, k=k, method=method)
            item.sentence, item.explanation = explanation.sentence, explanation.to_dict()
    request_id = uuid.uuid4().hex
    svc.store.log_served(request_id, history.user_id, svc.model_version, [(r.item_id, r.score) for r in items])
    return RecommendationsOut(
        request_id=request_id, model_version=svc.model_version, items=items, unknown_items=history.unknown
    )
