"""What a route needs, as typed dependencies: the app's Service (one Recommender over one frozen
snapshot, and the Store), opened by the lifespan in ``app.py`` (``app.state.service``) and
swapped whole when the store's changes are applied (``serve.follow``)."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from recscope.cpu import in_this_thread
from recscope.errors import RecscopeError
from recscope.recommend import Recommender
from recscope.serve.follow import Follower
from recscope.serve.store import Store


class NotFound(RecscopeError):
    """A user or item the run and the store do not know: answered with 404."""


class Conflict(RecscopeError):
    """A write the current state refuses (e.g. PUT of an item the run was trained on): 409."""


class Unauthorized(RecscopeError):
    """A write or admin request without the configured API key: answered with 401."""


class Unavailable(RecscopeError):
    """Answered with 503, Retry-After and a ``reason`` a client can act on (``REASONS``)."""

    reason = ""
    retry_after = 1  # seconds


class NotReady(Unavailable):
    """The model or store is not loaded (yet): the worker is starting or switching."""

    reason = "loading"
    retry_after = 5


class Busy(Unavailable):
    """The request waited ``Settings.busy_after`` seconds for the model (``recscope serve
    --busy-after``): refused at once rather than queueing without end behind a burst beyond what
    the machine can compute."""

    reason = "busy"


REASONS = {
    NotReady.reason: "the model or the store is not loaded yet (the worker is starting): retry after Retry-After",
    Busy.reason: "every model computation of this worker was taken for busy_after seconds: retry after Retry-After",
}


@dataclass(frozen=True)
class Service:
    recommender: Recommender  # reads its histories from the store (serve.live.StoreHistories)
    store: Store
    model_version: str
    busy_after: float = 10.0  # seconds a request may wait for the model before it is refused (503)
    seen: int = 0  # the seq of the store's last change this service reflects (serve.follow)
    # Held around every model call: one model computation at a time per worker process (torch
    # already uses the worker's threads for one); more at once only queue inside torch.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def model(self) -> Iterator[None]:
        """The model's turn: hold the lock; Busy (503) when ``busy_after`` seconds pass first."""
        if not self.lock.acquire(timeout=self.busy_after):
            raise Busy(
                f"the model is busy: this request waited {self.busy_after:g} s for its turn",
                fix="retry after the Retry-After seconds, or send fewer requests at once",
            )
        try:
            in_this_thread()  # a request thread computes with the worker's torch threads, not OpenMP's default
            yield
        finally:
            self.lock.release()


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


_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="the write key (recscope serve --api-key-env) for write and admin routes; for reads of personal "
    "data, the read key (--read-key-env) or the write key, when the service has one",
)


def _matches(given: str | None, key: SecretStr | None) -> bool:
    if key is None or given is None:
        return False
    return hmac.compare_digest(given.encode(), key.get_secret_value().encode())


def require_key(request: Request, given: Annotated[str | None, Depends(_api_key_header)]) -> None:
    """Write and admin routes: when the settings hold an API key, X-API-Key must match it."""
    key = request.app.state.settings.api_key
    if key is not None and not _matches(given, key):
        raise Unauthorized(
            "missing or wrong X-API-Key: this route changes the store",
            fix="send the service's API key in the X-API-Key header",
        )


def require_read_key(request: Request, given: Annotated[str | None, Depends(_api_key_header)]) -> None:
    """Reads of personal data (a user's history, lists and explanations, who the users are): when
    the settings hold a read key, X-API-Key must be it or the write key (which may do anything)."""
    settings = request.app.state.settings
    if settings.read_key is not None and not (_matches(given, settings.read_key) or _matches(given, settings.api_key)):
        raise Unauthorized(
            "missing or wrong X-API-Key: this route reads a user's personal data",
            fix="send the service's read key (or its write key) in the X-API-Key header",
        )


WriteAccess = [Depends(require_key)]
ReadAccess = [Depends(require_read_key)]  # personal data: a user's history, lists, explanations


def follower(request: Request) -> Follower:
    found = getattr(request.app.state, "follower", None)
    if found is None:
        raise NotReady("the service is not loaded", fix="wait for GET /health/ready to answer 200")
    return found


FollowerDep = Annotated[Follower, Depends(follower)]
