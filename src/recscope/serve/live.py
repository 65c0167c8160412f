"""The live history source and the lists served from it.

A user's live history is the run's training history (if the run knows the user) followed by
the events stored since, oldest first; a user only the store knows is a new user whose history
is their stored events. Stored item ids the catalog does not know are skipped and named
(``unknown``). Items the user dismissed are never recommended to them.
"""

from __future__ import annotations

import uuid

from recscope.errors import DataError
from recscope.histories import Event, History, RunHistories, adhoc, resolve
from recscope.recommend import Recommender
from recscope.serve.deps import NotFound, Service
from recscope.serve.schemas import RecommendationsOut, RecommendedItem
from recscope.serve.store import Store


class StoreHistories:
    """The history source of the service: the run's training data, then the store's events."""

    def __init__(self, run: RunHistories, store: Store):
        self.run, self.store = run, store

    def history(self, user_id: str) -> History:
        """NotFound when neither the run nor the store knows the user."""
        trained = self.run.events(user_id)
        stored = self.store.history(user_id)
        if trained is None and not stored:
            raise NotFound(
                f"unknown user {user_id!r}: not in the run's training data and no events stored",
                fix="post an event for this user to POST /events, or use a user id the run was trained on",
            )
        events = (trained or []) + [Event(e.item_id, e.event, e.timestamp, "store", e.value) for e in stored]
        return resolve(self.run.data, user_id, events, in_run=trained is not None)


def add_stored_items(rec: Recommender, store: Store) -> None:
    """Put the items added since training (the store keeps them) into the catalog, in the order
    they were added; an item the run has since been trained on keeps its trained entry."""
    rec.set_items([(i.item_id, i.title, i.attributes) for i in store.items_added() if not rec.trained(i.item_id)])


def user_history(svc: Service, user_id: str) -> History:
    """The user's live history (NotFound when neither the run nor the store knows them)."""
    return svc.recommender.histories.history(user_id)


def adhoc_history(rec: Recommender, item_ids: list[str]) -> History:
    """A history given by item ids in a request (anonymous): unknown ids are skipped and named."""
    return adhoc(rec.data, item_ids)


def require_item(rec: Recommender, item_id: str) -> int:
    """The item's dense index; NotFound when the catalog does not hold it."""
    index = rec.data.find(item_id)
    if index is None:
        raise NotFound(
            f"unknown item {item_id!r}",
            fix=f"PUT /items/{{id}} to add it, or use an item id of the catalog (e.g. {rec.data.item_ids[1]})",
        )
    return index


def dismissed(svc: Service, user_id: str | None) -> list[str]:
    return sorted(svc.store.dismissed(user_id)) if user_id is not None else []


def attribute_filters(rec: Recommender, filters: list[str]) -> list[str]:
    """The ids of the items an exclusion filter ``field=value`` (e.g. ``brand=Voltra``) names; a
    filter without ``=``, or naming a field or value the catalog lacks, is 422 naming it."""
    ids: list[str] = []
    for text in filters:
        field_name, sep, label = text.partition("=")
        if not sep:
            raise DataError(f"exclude_attribute {text!r} is not field=value", fix="write it as e.g. brand=Voltra")
        ids += [rec.data.item_ids[i] for i in rec.data.items_with(field_name, label)]
    return ids


def explain_item(svc: Service, user_id: str, item_id: str, k: int = 10, method: str | None = None, words: bool = False):
    """The Explanation of one item for the user's live history (any item of the catalog: one
    outside the top-K, owned or dismissed says so); ``words``: with word attributions."""
    rec = svc.recommender
    require_item(rec, item_id)
    exclude = dismissed(svc, user_id)
    with svc.model():
        return rec.explain(user=user_id, item=item_id, k=k, method=method, exclude=exclude, words=words)[0]


def serve_list(
    svc: Service,
    *,
    user_id: str | None = None,
    history: list[str] | None = None,
    k: int = 10,
    explain: bool = False,
    method: str | None = None,
    counterfactual: bool = False,
    exclude: list[str] = (),
    exclude_attributes: list[str] = (),
) -> RecommendationsOut:
    """The top-``k`` for a user's live history or an anonymous one: owned and dismissed items
    hidden, and those ``exclude`` names or an ``exclude_attributes`` filter (``field=value``)
    matches; with ``explain`` every item's explanation (one batched call); logged as served."""
    rec = svc.recommender
    exclude = [*dismissed(svc, user_id), *exclude, *attribute_filters(rec, list(exclude_attributes))]
    with svc.model():
        if explain:
            explained = rec.explain(
                user=user_id, history=history, top=k, k=k, method=method, exclude=exclude, counterfactual=counterfactual
            )
            unknown = explained.unknown
            items = [
                RecommendedItem(
                    rank=e.rank,
                    item_id=e.item_id,
                    title=e.title,
                    score=e.score,
                    sentence=e.sentence,
                    explanation=e.to_dict(),
                )
                for e in explained
            ]
        else:
            top = rec.recommend(user=user_id, history=history, k=k, exclude=exclude)
            unknown = top.unknown
            items = [RecommendedItem(**r.to_dict()) for r in top]
    request_id = uuid.uuid4().hex
    svc.store.log_served(request_id, user_id, svc.model_version, [(r.item_id, r.score) for r in items])
    return RecommendationsOut(
        request_id=request_id, model_version=svc.model_version, items=items, unknown_items=unknown
    )
