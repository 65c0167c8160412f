"""The catalog: the run's items (read only) and items added to the store since training."""

from __future__ import annotations

from fastapi import APIRouter, Response

from recscope.recommend import Recommender
from recscope.serve.deps import Conflict, NotFound, ServiceDep, WriteAccess
from recscope.serve.live import item_index_or_none
from recscope.serve.schemas import ItemIn, ItemOut

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


@router.put("/{item_id:path}", responses={201: {"model": ItemOut}}, dependencies=WriteAccess)
def put_item(item_id: str, body: ItemIn, svc: ServiceDep, response: Response) -> ItemOut:
    """Add an item (201) or replace a stored one's title and attributes (200). Items of the run
    are 409: their catalog entry is the trained data."""
    if item_index_or_none(svc.recommender, item_id) is not None:
        raise Conflict(
            f"item {item_id!r} is in the run's catalog: its title and attributes come from the trained data",
            fix="PUT items the run does not know (items added after training)",
        )
    new = svc.store.put_item(item_id, body.title, body.attributes)
    response.status_code = 201 if new else 200
    stored = svc.store.get_item(item_id)
    assert stored is not None
    return ItemOut(
        item_id=stored.item_id, title=stored.title, attributes=stored.attributes, source="store", recommendable=False
    )


@router.get("/{item_id:path}")
def get_item(item_id: str, svc: ServiceDep) -> ItemOut:
    """An item of the run (``source: "run"``, recommendable) or of the store (``"store"``: not
    recommendable until the catalog can grow)."""
    index = item_index_or_none(svc.recommender, item_id)
    if index is not None:
        return run_item(svc.recommender, item_id, index)
    stored = svc.store.get_item(item_id)
    if stored is None:
        raise NotFound(f"unknown item {item_id!r}", fix="PUT /items/{id} to add it, or use an item id of the run")
    return ItemOut(
        item_id=stored.item_id, title=stored.title, attributes=stored.attributes, source="store", recommendable=False
    )
