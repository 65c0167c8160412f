"""``recscope serve --workers N``: N worker processes over one store, managed by uvicorn.

uvicorn's process manager binds the socket once, starts N processes that share it, and starts
a new one when one dies (SIGKILL included); we add no process manager of our own. What a worker
needs it reads from the ``RECSCOPE_*`` environment (``Settings``) and from the store: the
model version every worker serves and the items added since training (``serve.follow``).

Before any worker starts, the parent checks what can be checked once: the run loads its record,
the store opens and is migrated (once, not N times at once), a ``--version`` exists and is
written to the store as the version to serve. A worker that starts later (a replacement) reads
the version from the store, so it serves what the others serve, not what the command line said.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from recscope import versions
from recscope.run import load_info
from recscope.serve.metrics import MULTIPROCESS
from recscope.serve.settings import Settings
from recscope.serve.store import Store

ENV_PREFIX = "RECSCOPE_"


def prepare(settings: Settings) -> str:
    """Check the run and the store once, migrate the store, record ``settings.version`` in it as
    the version to serve; returns the version the workers will serve."""
    assert settings.run is not None
    run = Path(settings.run)
    load_info(run)
    store = Store.open(settings.db) if settings.db else Store.for_run(run)
    try:
        if settings.version is not None:
            versions.read(run, settings.version)  # refuses an unknown version, naming the known ones
            if store.serving() != settings.version:
                store.set_serving(settings.version)
        return store.serving() or versions.weights(run)[1]
    finally:
        store.close()


def environment(settings: Settings) -> dict[str, str]:
    """The ``RECSCOPE_*`` variables a worker's ``Settings()`` reads back as ``settings`` (but the
    version, which the store holds)."""
    env = {}
    for name, value in settings.model_dump(exclude={"version"}).items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[ENV_PREFIX + name.upper()] = str(value)
    return env


def run_workers(settings: Settings, started: Callable[[str], None]) -> None:
    """Serve with ``settings.workers`` processes until interrupted; ``started(version)`` is
    called once the run and store are checked, before the workers load."""
    import uvicorn

    served = prepare(settings)
    metrics_dir = tempfile.mkdtemp(prefix="recscope-metrics-")
    os.environ.update(environment(settings))
    os.environ[MULTIPROCESS] = metrics_dir  # read by prometheus-client when a worker imports it
    started(served)
    try:
        uvicorn.run(
            "recscope.serve.workers:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> FastAPI:
    """The app of one worker process: settings from the environment ``run_workers`` set."""
    from recscope.cpu import use_threads
    from recscope.serve.app import create_app

    settings = Settings()
    use_threads(settings.threads)  # and each request thread takes it (Service.model)
    _exit_with(os.getppid())
    return create_app(settings)


def _exit_with(parent: int) -> None:
    """End this worker (SIGTERM: a clean shutdown) when its manager is gone (killed with SIGKILL,
    say): an orphan would go on answering on the shared socket with nobody to replace or stop it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
