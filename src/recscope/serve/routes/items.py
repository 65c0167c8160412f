"""The catalog: the run's items (read only) and items added since training, which the model
recommends at once, scored from their attribute fields (``Snapshot.with_items``). An item is
stored first; the worker that took it applies it before answering, every other worker within
``Settings.follow_every`` seconds (``serve.follow``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from recscope.recommend import Recommender
from recscope.serve.deps import Conflict, FollowerDep, NotFound, ServiceDep, WriteAccess
from recscope.serve.schemas import ItemIn, ItemOut, errors
from recscope.serve.store import StoredItem

router = APIRouter(prefix="/items", tags=["items"])


def run_item(rec: Recommender, item_id: str, index: int) -> ItemOut:
    attributes = {}
    for f in rec.data.fields:
        labels = f.labels(index)
        if labels:
            attributes[f.name] = labels if f.kind == "multi" else labels[0]
    return ItemOut(
        item_id=item_id, title=rec.data.title(index), attributes=attributes, source="run", recommendable=True
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


@router.put("/{item_id:path}", responses={201: {"model": ItemOut}, **errors(409, 503)}, dependencies=WriteAccess)
def put_item(
    item_id: str, body: ItemIn, svc: ServiceDep, follower: FollowerDep, request: Request, response: Response
) -> ItemOut:
    """Add an item (201) or replace an added one's title and attributes (200): stored, then in
    the catalog at once (the next recommendation may hold it). Items of the run are 409: their
    catalog entry is the trained data."""
    rec = svc.recommender
    if rec.trained(item_id):  # refused before anything is stored
        raise Conflict(
            f"item {item_id!r} is in the run's catalog: its title and attributes come from the trained data",
            fix="PUT items the run does not know (items added after training)",
        )
    new = svc.store.put_item(item_id, body.title, body.attributes)  # the store is the source of truth ...
    follower.catch_up()  # ... this worker applies it now, the others within Settings.follow_every
    response.status_code = 201 if new else 200
    stored = svc.store.get_item(item_id)
    assert stored is not None
    return stored_item(request.app.state.service.recommender, stored)


@router.get("/{item_id:path}", responses=errors(404))
def get_item(item_id: str, svc: ServiceDep) -> ItemOut:
    """An item of the run (``source: "run"``) or one added since (``"store"``)."""
    stored = svc.store.get_item(item_id)
    if stored is not None:
        return stored_item(svc.recommender, stored)
    index = svc.recommender.data.find(item_id)
    if index is None:
        raise NotFound(f"unknown item {item_id!r}", fix="PUT /items/{id} to add it, or use an item id of the run")
    return run_item(svc.recommender, item_id, index)
