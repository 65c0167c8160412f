"""A worker follows the store: items added, removed or hidden anywhere, and the model version
every worker serves.

The store is the source of truth that several worker processes (and hosts) share; a worker
holds nothing another needs. Each worker reads the store's change sequence (``changes``: an
item added, updated or removed, an item hidden or shown again, the version to serve) every
``Settings.follow_every`` seconds and applies what is new as a new Service, swapped into the
app in one assignment: a request reads the app's service once, so it computes on one model
version over one catalog, whole, and names that version in its answer.

How each change is applied: items added or updated grow the snapshot (``with_items``); a hide
replaces its hidden set with the store's (``with_hidden``: the whole set, so a worker can never
drift from the store); a removed item, or a new version, loads the snapshot afresh from the run
and the store (``load``), as a worker starting now would build it, since a snapshot only grows:
every worker then holds the same catalog, the removed item in none of them.

Applying is serialised (one lock): the follower thread, and a route that has just written a
change and wants its own answer to show it (``catch_up``), never build two services at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from recscope.cpu import in_this_thread

if TYPE_CHECKING:  # deps imports this module
    from recscope.recommend import Recommender
    from recscope.serve.deps import Service
    from recscope.serve.store import StoredChange

log = logging.getLogger("recscope.serve")

LoadVersion = Callable[[str], "Recommender"]  # a version id -> a Recommender of it over the stored catalog


Applied = Callable[[str, float], None]  # (change kind, seconds from its commit until served here)


class Follower:
    def __init__(
        self,
        get: Callable[[], Service],
        put: Callable[[Service], None],
        load: LoadVersion,
        seen: int,
        applied: Applied | None = None,
    ):
        """``get``/``put`` read and swap the app's service; ``load`` builds a Recommender of a
        version; ``seen``: the seq of the last change the service already reflects; ``applied``
        is told of each change once the service that reflects it is swapped in (the metrics)."""
        self._get, self._put, self._load = get, put, load
        self._applied = applied
        self.seen = seen
        self.error: str | None = None  # the last failure to apply a change (shown by /health/ready)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- applying --------------------------------------------------------------------------
    def catch_up(self) -> int:
        """Apply every change the store holds beyond ``seen``; returns the seq now reflected."""
        in_this_thread()  # a new snapshot's rows are computed with the worker's torch threads
        with self._lock:
            svc = self._get()
            changes = svc.store.changes_since(self.seen)
            while changes:
                svc = self._apply(svc, changes)
                self.seen = changes[-1].seq
                if self._applied is not None:
                    now = time.time()
                    for change in changes:
                        self._applied(change.kind, max(now - change.created_at, 0.0))
                changes = svc.store.changes_since(self.seen)
            self.error = None
            return self.seen

    def _apply(self, svc: Service, changes: list[StoredChange]) -> Service:
        models = [c.subject for c in changes if c.kind == "model"]
        items = list(dict.fromkeys(c.subject for c in changes if c.kind == "item"))
        hides = any(c.kind == "hidden" for c in changes)
        rec = svc.recommender
        stored = [i for i in svc.store.items(items) if not rec.trained(i.item_id)] if items else []
        held = {i.item_id for i in stored}
        removed = [i for i in items if i not in held and rec.data.find(i) is not None and not rec.trained(i)]
        version = models[-1] if models else svc.model_version
        if version != svc.model_version or removed:
            # A new version, or an added item removed: loaded over the whole stored catalog (the
            # items above and the hidden set included), as a worker starting now builds it.
            loaded = self._load(version)
            svc = dataclasses.replace(svc, recommender=loaded, model_version=loaded.version)
        elif stored or hides:
            snapshot = rec.snapshot
            if stored:
                snapshot, _ = rec.with_items([(i.item_id, i.title, i.attributes) for i in stored])
            if hides:
                snapshot = snapshot.with_hidden(svc.store.hidden())
            svc = dataclasses.replace(svc, recommender=rec.with_snapshot(snapshot))
        else:
            return svc
        self._put(svc)
        return svc

    def switch(self, version: str) -> Service:
        """Serve ``version`` here now and tell every other worker (through the store)."""
        with self._lock:
            svc = self._get()
            loaded = self._load(version)  # refuses a version that does not load, before anyone is told
            svc = dataclasses.replace(svc, recommender=loaded, model_version=loaded.version)
            self._put(svc)
            seq = svc.store.set_serving(version)
        self.catch_up()  # up to the switch: items (the load read them already) and the switch itself
        assert self.seen >= seq
        return self._get()

    # -- the thread ------------------------------------------------------------------------
    def start(self, every: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(every,), name="store-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.catch_up()
            except Exception as e:  # the store is down, a version will not load: say so, keep serving, retry
                message = f"{type(e).__name__}: {e}"
                if message != self.error:
                    log.warning("cannot follow the store's changes (will retry): %s", message)
                self.error = message
                time.sleep(every)
