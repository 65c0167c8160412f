"""What a route needs, as typed dependencies: the app's one Recommender and Store, opened by
the lifespan in ``app.py`` (``app.state.service``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from recscope.errors import RecscopeError
from recscope.recommend import Recommender
from recscope.serve.store import Store


class NotFound(RecscopeError):
    """A user or item the run and the store do not know: answered with 404."""


class Conflict(RecscopeError):
    """A write the current state refuses (e.g. PUT of an item the run was trained on): 409."""


class NotReady(RecscopeError):
    """The model or store is not loaded (yet): answered with 503."""


@dataclass(frozen=True)
class Service:
    recommender: Recommender
    store: Store
    model_version: str


def service(request: Request) -> Service:
    loaded = getattr(request.app.state, "service", None)
    if loaded is None:
        raise NotReady("the model and store are not loaded", fix="wait for GET /health/ready to answer 200")
    return loaded


def recommender(svc: Annotated[Service, Depends(service)]) -> Recommender:
    return svc.recommender


def store(svc: Annotated[Service, Depends(service)]) -> Store:
    return svc.store


ServiceDep = Annotated[Service, Depends(service)]
RecommenderDep = Annotated[Recommender, Depends(recommender)]
StoreDep = Annotated[Store, Depends(store)]
