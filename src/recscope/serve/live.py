"""The live history source and the lists served from it.

A user's live history is the run's training history (if the run knows the user and has not
forgotten them: a tombstone hides it) followed by the events stored since, oldest first; a user
only the store knows is a new user whose history is their stored events. Stored item ids the
catalog does not know are skipped and named (``unknown``). Items the user dismissed are never
recommended to them (their dismissals come with the history, in the same query: ``History.
dismissed``), and for a model version that learned the label "dismiss" the dismissals are events
of the history (``recscope.histories``); items hidden in the catalog (the store's hidden set, in
every worker's snapshot) to nobody, in no list.

A visitor the model cannot read (unknown, or no known item in the history) gets the fallback
list, labelled ``source: "fallback"`` (:func:`serve_list`). Item to item is
:func:`serve_similar`.
"""

from __future__ import annotations

import uuid

import numpy as np

from recscope.errors import DataError
from recscope.explain.base import Explanation
from recscope.histories import DISMISS, Event, History, RunHistories, adhoc, resolve
from recscope.recommend import EmptyHistory, Recommender
from recscope.serve.deps import NotFound, Service
from recscope.serve.schemas import (
    FallbackOut,
    RecommendationsOut,
    RecommendedItem,
    SimilarItem,
    SimilarOut,
    SimilarReason,
)
from recscope.serve.store import Store


class StoreHistories:
    """The history source of the service: the run's training data, then the store's events and
    the user's dismissals, merged in time order (``histories.DISMISS``; whoever reads the history
    for a model version keeps them only if that version reads them: ``Recommender.user_history``)."""

    def __init__(self, run: RunHistories, store: Store):
        self.run, self.store = run, store

    def history(self, user_id: str) -> History:
        """NotFound when neither the run nor the store knows the user (dismissals alone do not
        make a user known: they are the answer to a list, not a history).

        One store query (``Store.live_history``): the stored events, the dismissals and the
        tombstone. A forgotten user (``Store.forget_user``) has no training history: the
        store's tombstone, read on every call, hides it, so every worker on every host honours a
        forget from its commit on. The forget deleted their stored events, so the events stored
        since are a new history that starts after the tombstone (a new user under the same id,
        ``in_run`` False); with none, they are unknown (404, or the fallback list) as any first
        visitor is."""
        stored, forgotten_at = self.store.live_history(user_id)
        trained = None if forgotten_at is not None else self.run.events(user_id)
        if trained is None and all(e.event == DISMISS for e in stored):
            raise NotFound(
                f"unknown user {user_id!r}: no history to read "
                "(no training events the service may show, no stored events)",
                fix="post an event for this user to POST /events, or use a user id the run was trained on",
            )
        events = (trained or []) + [Event(e.item_id, e.event, e.timestamp, "store", e.value) for e in stored]
        return resolve(self.run.data, user_id, events, in_run=trained is not None, dismissals=True)


def add_stored_items(rec: Recommender, store: Store) -> None:
    """Put the items added since training (the store keeps them) into the catalog, in the order
    they were added (an item the run has since been trained on keeps its trained entry), then
    hide the items the store says are hidden: the catalog as every worker holds it."""
    rec.set_items([(i.item_id, i.title, i.attributes) for i in store.items_added() if not rec.trained(i.item_id)])
    rec.set_hidden(store.hidden())


def user_history(svc: Service, user_id: str) -> History:
    """The user's live history as the serving version reads it (its dismissals as events only
    when it reads them; NotFound when neither the run nor the store knows them)."""
    return svc.recommender.user_history(user_id)


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
    """The items the user dismissed, by a query of their own: for a reader without their live
    history (whose ``dismissed`` names them, read with it in one query)."""
    return sorted(svc.store.dismissed(user_id)) if user_id is not None else []


def _field_value(text: str, name: str) -> tuple[str, str]:
    field_name, sep, label = text.partition("=")
    if not sep:
        raise DataError(f"{name} {text!r} is not field=value", fix="write it as e.g. brand=Voltra or category=Phones")
    return field_name, label


def _items_with(rec: Recommender, text: str, name: str) -> list[int]:
    """Dense indices of the items the filter ``text`` (``field=value``) names; 422 naming the
    parameter and what it lacks (the field or the value) when the catalog has no such thing."""
    field_name, label = _field_value(text, name)
    try:
        return rec.data.items_with(field_name, label)
    except DataError as e:
        raise DataError(f"{name} {text!r}: {e.problem}", fix=e.fix) from None


def allowed_items(
    rec: Recommender,
    include: list[str] = (),
    exclude: list[str] = (),
    names: tuple[str, str] = ("include_attribute", "exclude_attribute"),
) -> np.ndarray | None:
    """(n_items + 1,) bool: the items the attribute filters (``field=value``) let into a list;
    None when there are none (every item may be in it).

    ``include``: filters on one field are ORed (``category=Phones`` and ``category=Cameras``: an
    item of either), filters on different fields ANDed (``category=Phones`` and ``brand=Voltra``:
    Voltra's phones); an item matches a multi-valued field (a category path) when any of its
    values is the one named. ``exclude``: an item matching any of them is out, whatever
    ``include`` says. An added item matches by the attributes it was PUT with that the catalog's
    fields hold (a value no trained item has matches no filter: ``unused`` in GET /items/{id}).
    ``names``: the parameters as the request names them, for the 422 that names a bad one."""
    if not include and not exclude:
        return None
    n = len(rec.data.item_ids)
    allowed = np.ones(n, dtype=bool)
    by_field: dict[str, np.ndarray] = {}
    for text in include:
        field_name, _ = _field_value(text, names[0])
        by_field.setdefault(field_name, np.zeros(n, dtype=bool))[_items_with(rec, text, names[0])] = True
    for matches in by_field.values():
        allowed &= matches
    for text in exclude:
        allowed[_items_with(rec, text, names[1])] = False
    allowed[0] = False  # padding
    return allowed


def explain_item(svc: Service, user_id: str, item_id: str, k: int = 10, method: str | None = None, words: bool = False):
    """The Explanation of one item for the user's live history (any item of the catalog: one
    outside the top-K, owned, dismissed or hidden says so); ``words``: with word attributions."""
    rec = svc.recommender
    require_item(rec, item_id)
    with svc.model():  # the history's dismissed items are left out (Recommender.explain)
        return rec.explain(user=user_id, item=item_id, k=k, method=method, words=words)[0]


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
    include_attributes: list[str] = (),
    filter_names: tuple[str, str] = ("include_attribute", "exclude_attribute"),
    fallback: bool = True,
) -> RecommendationsOut:
    """The top-``k`` for a user's live history or an anonymous one: owned, dismissed and hidden
    items left out, and those ``exclude`` names or the attribute filters leave out (see
    :func:`allowed_items`); with ``explain`` every item's explanation (one batched call); logged
    as served, ``source`` "model".

    A history the model cannot read (a user neither the run nor the store knows, an empty
    history, or one of items the catalog does not know) gets the fallback list instead
    (:func:`fallback_list`, ``source`` "fallback", ``fallback`` saying which list and why),
    under the same filters, logged as served too; ``fallback=False`` refuses it as before: 404
    for an unknown user, 422 for a history without a known item."""
    rec = svc.recommender
    allowed = allowed_items(rec, list(include_attributes), list(exclude_attributes), filter_names)
    exclude = list(exclude)  # and the user's dismissed items: their live history names them (Recommender)
    explained_by = None  # the explanation method of the list, logged with it (helpful shares)
    try:
        with svc.model():
            if explain:
                explained = rec.explain(
                    user=user_id,
                    history=history,
                    top=k,
                    k=k,
                    method=method,
                    exclude=exclude,
                    counterfactual=counterfactual,
                    allowed=allowed,
                )
                unknown = explained.unknown
                explained_by = explained[0].method if explained else method or rec.default_method()
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
                top = rec.recommend(user=user_id, history=history, k=k, exclude=exclude, allowed=allowed)
                unknown = top.unknown
                items = [RecommendedItem(**r.to_dict()) for r in top]
    except (NotFound, EmptyHistory) as e:
        if not fallback:
            raise
        if isinstance(e, NotFound):
            reason, unknown = "unknown_user", []
        else:
            reason, unknown = ("no_known_items" if e.unknown else "empty_history"), e.unknown
        exclude = [*dismissed(svc, user_id), *exclude]  # no history was read: ask the store
        items = fallback_list(rec, k, exclude, allowed, explain)  # no model explanation: no method
        return _served(svc, user_id, items, unknown, FallbackOut(kind=POPULAR, reason=reason))
    return _served(svc, user_id, items, unknown, None, method=explained_by)


POPULAR = "popular"  # the fallback list (FallbackOut.kind): the run's most frequent items


def fallback_list(
    rec: Recommender, k: int, exclude: list[str], allowed: np.ndarray | None, explain: bool
) -> list[RecommendedItem]:
    """The list for a visitor the model cannot read: the items with the most events in the run's
    data (``Recommender.popular``), scored by that count.

    Popular over the run rather than trending over the store's recent events: it is the same in
    every worker and costs nothing per request (counted once per snapshot), while a trend needs
    an aggregate over the events table per request or a cache each worker would age differently.
    With ``explain`` each item's ``sentence`` says what its place rests on (its count); there is
    no model explanation, as no history was read."""
    top = rec.popular(k, exclude=exclude, allowed=allowed)
    total = int(rec.snapshot.popularity.sum())
    return [
        RecommendedItem(
            rank=r.rank,
            item_id=r.item_id,
            title=r.title,
            score=r.score,
            sentence=f"Popular: {int(r.score):,} of the run's {total:,} events are of this item "
            "(no history to read, so no model explanation)."
            if explain
            else None,
        )
        for r in top
    ]


def _served(
    svc: Service,
    user_id: str | None,
    items: list[RecommendedItem],
    unknown: list[str],
    fallback: FallbackOut | None,
    method: str | None = None,
) -> RecommendationsOut:
    """Log the list as served (its request id; ``method``: its explanations' method, None when
    it has none) and answer it."""
    request_id = uuid.uuid4().hex
    svc.store.log_served(request_id, user_id, svc.model_version, [(r.item_id, r.score) for r in items], method)
    return RecommendationsOut(
        request_id=request_id,
        model_version=svc.model_version,
        items=items,
        unknown_items=unknown,
        source="model" if fallback is None else "fallback",
        fallback=fallback,
    )


# -- item to item -----------------------------------------------------------------------------


def serve_similar(
    svc: Service, item_id: str, *, k: int = 10, explain: bool = False, method: str | None = None
) -> SimilarOut:
    """The items the model scores highest after ``item_id`` alone (``Recommender.similar``): never
    the item itself or a hidden item. With ``explain`` each carries its reason (:func:`reason`),
    from one batched explanation of the one-item history. Logged as served (anonymous), so
    feedback on it joins to what was shown. NotFound for an item the catalog does not hold."""
    rec = svc.recommender
    index = _require_similar_item(rec, item_id)
    with svc.model():
        if explain:
            explained = rec.explain(history=[item_id], top=k, k=k, method=method, counterfactual=False)
            items = [
                SimilarItem(rank=e.rank, item_id=e.item_id, title=e.title, score=e.score, reason=reason(rec, index, e))
                for e in explained
            ]
        else:
            items = [SimilarItem(**r.to_dict()) for r in rec.similar(item_id, k=k)]
    request_id = uuid.uuid4().hex
    explained_by = (explained[0].method if explained else method or rec.default_method()) if explain else None
    svc.store.log_served(request_id, None, svc.model_version, [(r.item_id, r.score) for r in items], explained_by)
    return SimilarOut(request_id=request_id, model_version=svc.model_version, item_id=item_id, items=items)


def _require_similar_item(rec: Recommender, item_id: str) -> int:
    """:func:`require_item` for GET /items/{id}/similar, whose path also reads as GET /items/{id}
    of an item whose own id ends in "/similar": the 404 says where that item is."""
    index = rec.data.find(item_id)
    if index is None and rec.data.find(f"{item_id}/similar") is not None:
        raise NotFound(
            f"unknown item {item_id!r} (this path asks for its similar items; the catalog has an item"
            f" {item_id + '/similar'!r}, whose own page this path cannot be)",
            fix=f"for that item's similar items ask /items/{item_id}/similar/similar; it is listed in GET /items",
        )
    return require_item(rec, item_id)


def _part(rec: Recommender, index: int, part: str) -> str:
    """A part of an item's token in words: its id embedding, its text, or a field with its values."""
    if part == "id":
        return "its id embedding"
    if part == "text":
        return "its text"
    values = next((f.labels(index) for f in rec.data.fields if f.name == part), [])
    return f"its {part} ({', '.join(values)})" if values else f"its {part}"


def shared_attributes(rec: Recommender, a: int, b: int) -> dict[str, list[str]]:
    """Field -> the values items ``a`` and ``b`` (dense indices) both have, from the catalog."""
    shared = {}
    for f in rec.data.fields:
        common = sorted(set(f.labels(a)) & set(f.labels(b)))
        if common:
            shared[f.name] = common
    return shared


def reason(rec: Recommender, asked: int, explained: Explanation) -> SimilarReason:
    """Why the model scores ``explained``'s item after the ``asked`` item (dense index), from
    numbers computed for this pair: the attribute values both have (the catalog), how much each
    part of the asked item's token (id, text, each field) pushed this item's score (the
    explanation's ``attributes_history``, by its method) and this item's own fields' shares of
    its score (``attributes_candidate``). The sentence says those numbers in words."""
    item = rec.data.find(explained.item_id)
    shared = shared_attributes(rec, asked, item)
    reads = explained.attributes_history
    pushes = [(p, w) for p, w in reads.items() if w > 0][:2]  # largest first (by |weight|)
    asked_title = rec.data.title(asked)
    text = f"Scored {explained.score:.3f} after “{asked_title}” alone (rank {explained.rank})."
    if pushes:
        named = " and ".join(f"{_part(rec, asked, p)} ({w:+.2f})" for p, w in pushes)
        text += f" What of “{asked_title}” pushes it up most ({explained.attributes_method}): {named}."
    else:
        text += f" No part of “{asked_title}” pushes it up on its own ({explained.attributes_method})."
    if shared:
        text += " Both have " + "; ".join(f"{name} {', '.join(values)}" for name, values in shared.items()) + "."
    else:
        text += " They share no attribute value."
    return SimilarReason(
        shared=shared,
        reads=reads,
        own=explained.attributes_candidate,
        method=explained.attributes_method,
        sentence=text,
    )
