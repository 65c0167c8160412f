"""The catalog: the run's items (read only, but they can be hidden) and items added since
training, which the model recommends at once, scored from their attribute fields
(``Snapshot.with_items``). An item is stored first; the worker that took it applies it before
answering, every other worker within ``Settings.follow_every`` seconds (``serve.follow``).

Hiding (``PUT /items/{id} {"hidden": true}``, out of stock): the item is in no list, for
anyone (recommendations, anonymous ones, similar items, the fallback, what-if) until a PUT sets
``hidden`` false; histories holding it still read it (the model's input is the user's past).
The hidden set is in the store and every worker's snapshot, never in one worker's memory.

Deleting (``DELETE /items/{id}``, recalled, withdrawn):
- an item added since training is removed: from the store (GET is 404 after, a later PUT adds
  it anew) and from every worker's catalog (each loads its catalog afresh from the store, as a
  worker starting now does); stored events naming it are then skipped like any unknown id;
- an item of the run cannot leave the model (its embedding is trained, histories hold it), so
  it is hidden for good: in no list, GET shows ``deleted: true``, and a PUT that would show it
  again is 409.
A DELETE of an item the catalog does not hold (or no longer holds) is 404.

The path ``/items/{id}/similar`` is the item's similar list: an item whose own id ends in
"/similar" is read, written and deleted at ``/items/{id}`` as any other, but its GET is that
of the shorter id's similar list (its own similar list is at ``/items/{id}/similar``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from recscope.recommend import Recommender
from recscope.serve.deps import Conflict, FollowerDep, NotFound, Service, ServiceDep, WriteAccess
from recscope.serve.live import serve_similar
from recscope.serve.schemas import ItemDeletedOut, ItemIn, ItemOut, ItemsPage, SimilarOut, errors
from recscope.serve.store import DELETED, StoredItem

router = APIRouter(prefix="/items", tags=["items"])

Limit = Annotated[int, Query(ge=1, le=1000, description="items in this page")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="items before this page")]
K = Annotated[int, Query(ge=1, le=1000, description="how many items")]
Method = Annotated[str | None, Query(description="with explain: the attribution method (default: the run's best)")]


def run_item(rec: Recommender, item_id: str, index: int) -> ItemOut:
    """An item as the catalog holds it (the trained data for the run's items)."""
    attributes = {}
    for f in rec.data.fields:
        labels = f.labels(index)
        if labels:
            attributes[f.name] = labels if f.kind == "multi" else labels[0]
    return ItemOut(
        item_id=item_id,
        title=rec.data.title(index),
        attributes=attributes,
        source="run" if index <= rec.trained_items else "store",
        recommendable=True,
    )


def stored_item(rec: Recommender, stored: StoredItem) -> ItemOut:
    """An added item as the store keeps it (every attribute as given), and what the model cannot use."""
    return ItemOut(
        item_id=stored.item_id,
        title=stored.title,
        attributes=stored.attributes,
        source="store",
        recommendable=rec.data.find(stored.item_id) is not None,
        unused=rec.data.unusable(stored.attributes),
    )


def item_out(rec: Recommender, item_id: str, stored: StoredItem | None, state: str | None) -> ItemOut | None:
    """The item as GET /items/{id} shows it (None: neither the store nor the catalog holds it);
    ``state``: its hidden state in the store (``HIDDEN``, ``DELETED`` or None)."""
    if stored is not None:
        out = stored_item(rec, stored)
    else:
        index = rec.data.find(item_id)
        if index is None:
            return None
        out = run_item(rec, item_id, index)
    return out.model_copy(update={"hidden": state is not None, "deleted": state == DELETED})


def _title_required(body: ItemIn) -> RequestValidationError:
    """pydantic's 422 for a missing field, for the rule the schema alone cannot say."""
    return RequestValidationError(
        [
            {
                "type": "missing",
                "loc": ("body", "title"),
                "msg": "Field required: a title adds an item or replaces an added one's title and attributes; "
                'send {"hidden": true|false} alone to hide or show an item',
                "input": body.model_dump(exclude_unset=True),
            }
        ]
    )


def _trained_entry(rec: Recommender, item_id: str) -> dict[str, Any]:
    entry = run_item(rec, item_id, rec.data.item_index(item_id))
    return {"title": entry.title, "attributes": entry.attributes}


@router.get("")
def list_items(svc: ServiceDep, limit: Limit = 100, offset: Offset = 0) -> ItemsPage:
    """The catalog in pages, each item as GET /items/{id} shows it (hidden and deleted ones
    included, flagged): the run's items in their trained order, then the items added since in
    the order they were added; ``total`` counts them all. The order is stable while the catalog
    stands (an added item removed leaves a gap that later pages close up)."""
    rec = svc.recommender
    ids = rec.data.item_ids[1 + offset : 1 + offset + limit]  # [0] is padding
    stored = {i.item_id: i for i in svc.store.items(ids)}
    states = svc.store.hidden(ids)
    items = [item_out(rec, i, stored.get(i), states.get(i)) for i in ids]
    return ItemsPage(items=[i for i in items if i is not None], total=rec.data.n_items)


@router.get("/{item_id:path}/similar", responses=errors(404, 503))
def similar(item_id: str, svc: ServiceDep, k: K = 10, explain: bool = False, method: Method = None) -> SimilarOut:
    """Item to item (a product page's "bought after this"): the ``k`` items the model scores
    highest for a history of this item alone, in the model's score units. Never the item itself
    or a hidden item (the item itself may be hidden: its alternatives are what a page of an
    out-of-stock item shows). ``explain=true``: each item's ``reason``, computed for the pair
    (shared attribute values, and how much each part of this item's token pushed its score)."""
    return serve_similar(svc, item_id, k=k, explain=explain, method=method)


@router.put("/{item_id:path}", responses={201: {"model": ItemOut}, **errors(404, 409, 503)}, dependencies=WriteAccess)
def put_item(
    item_id: str, body: ItemIn, svc: ServiceDep, follower: FollowerDep, request: Request, response: Response
) -> ItemOut:
    """Add an item (201) or replace an added one's title and attributes (200): stored, then in
    the catalog at once (the next recommendation may hold it). ``hidden`` hides it or shows it
    again, with the rest or alone: ``{"hidden": true}`` is the one change an item of the run
    takes (another title or attributes for it are 409: its entry is the trained data; sending
    its own back changes nothing). Showing an item deleted for good is 409; hiding an item the
    catalog does not hold is 404 (add it with a title)."""
    rec = svc.recommender
    given = body.model_fields_set - ({"hidden"} if body.hidden is None else set())
    hidden_alone = given == {"hidden"}
    if body.title is None and not hidden_alone:
        raise _title_required(body)
    if rec.trained(item_id):  # refused before anything is stored
        if not hidden_alone and {"title": body.title, "attributes": body.attributes} != _trained_entry(rec, item_id):
            raise Conflict(
                f"item {item_id!r} is in the run's catalog: its title and attributes come from the trained data",
                fix='send {"hidden": true} or {"hidden": false} alone to hide or show it; '
                "PUT titles and attributes of items the run does not know (items added after training)",
            )
        new = False
        _set_hidden(svc, item_id, body.hidden)
    elif hidden_alone:
        if svc.store.get_item(item_id) is None:
            raise NotFound(
                f"unknown item {item_id!r}: neither the run nor the store holds it, so there is nothing to hide",
                fix="PUT it with a title (and hidden) to add it",
            )
        new = False
        _set_hidden(svc, item_id, body.hidden)
    else:  # the store is the source of truth ...
        # encoded first: every worker that applies the change reads the title's vector from the
        # shared text cache instead of running the encoder itself (an item is applied sooner)
        rec.encode_items([(item_id, body.title, body.attributes)])
        new = svc.store.put_item(item_id, body.title, body.attributes, hidden=body.hidden)
    follower.catch_up()  # ... this worker applies it now, the others within Settings.follow_every
    response.status_code = 201 if new else 200
    current = request.app.state.service.recommender  # the service the catch-up swapped in
    shown = item_out(current, item_id, svc.store.get_item(item_id), svc.store.hidden([item_id]).get(item_id))
    assert shown is not None
    return shown


def _set_hidden(svc: Service, item_id: str, hidden: bool | None) -> None:
    """Hide the item or show it again (None: leave it); 409 for showing an item deleted for good."""
    if hidden is None:
        return
    if svc.store.hide(item_id, hidden) == DELETED and not hidden:
        raise Conflict(
            f"item {item_id!r} was deleted (DELETE /items/{{id}}): it is hidden for good",
            fix="a deleted item of the run cannot be shown again; add a new item (PUT with a new id and a title)",
        )


@router.delete("/{item_id:path}", responses=errors(404), dependencies=WriteAccess)
def delete_item(item_id: str, svc: ServiceDep, follower: FollowerDep) -> ItemDeletedOut:
    """Delete an item from every list for good: an added item is removed (from the store and
    every worker's catalog: ``removed`` true), an item of the run hidden for good (``removed``
    false: the model keeps reading it in histories). 404 for an item the catalog does not hold."""
    if svc.recommender.trained(item_id):
        svc.store.hide(item_id, True, for_good=True)
        source, removed = "run", False
    elif svc.store.remove_item(item_id):
        source, removed = "store", True
    else:
        raise NotFound(
            f"unknown item {item_id!r}: neither the run nor the store holds it (deleted already?)",
            fix="GET /items lists the catalog",
        )
    follower.catch_up()  # this worker drops it now, the others within Settings.follow_every
    return ItemDeletedOut(item_id=item_id, source=source, removed=removed)


@router.get("/{item_id:path}", responses=errors(404))
def get_item(item_id: str, svc: ServiceDep) -> ItemOut:
    """An item of the run (``source: "run"``) or one added since (``"store"``), and whether it
    is hidden (``hidden``) or deleted for good (``deleted``)."""
    shown = item_out(svc.recommender, item_id, svc.store.get_item(item_id), svc.store.hidden([item_id]).get(item_id))
    if shown is None:
        raise NotFound(f"unknown item {item_id!r}", fix="PUT /items/{id} to add it, or use an item id of the run")
    return shown
