"""Background jobs of the service: ``recscope finetune`` as a process of its own.

``POST /model/finetune`` starts ``recscope finetune RUN --db URL --json --progress FILE`` (the
service's own store; ``--since``, ``--budget`` as the request asks) and answers at once. The
job runs outside the worker: a crash or a kill of the job never takes a worker down, and the
worker's model lock is never held while it trains. A promoted result reaches every worker
through the store: the command calls ``Store.set_serving`` and the followers switch
(``serve.follow``).

Every worker answers for every job: the job is a row of the store (``Store.start_job``: one
running finetune at a time, whichever worker is asked), and its files are in the run
directory every worker reads::

    RUN/jobs/<id>/progress.json   the command's progress, rewritten whole as it goes (--progress)
    RUN/jobs/<id>/output.json     its stdout: the one JSON object it prints at the end (--json)
    RUN/jobs/<id>/stderr.txt      its stderr: why it failed

Progress is read from ``progress.json`` by whichever worker answers ``GET /model/jobs/{id}``
while the job runs (the store is not written on every step); the last progress is kept in the
store when the job ends, with the result or the error. The job ends when its process exits:
the worker that started it waits for it and records the end at once; any other worker (or that
one after a restart) that finds the process gone with the job still "running" records the end
itself from the files: "succeeded" with the JSON the command printed, else "failed" with its
stderr. So a job whose process was killed (SIGKILL) ends "failed" with the reason, never stays
"running". A process is judged gone only on the host that started it (a pid means nothing
elsewhere); another host reports the job running, with its progress, until the starting host
ends it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recscope.serve.store import JOB_FAILED, JOB_RUNNING, JOB_SUCCEEDED, Store, StoredJob

log = logging.getLogger("recscope.serve")

FINETUNE = "finetune"
JOBS = "jobs"  # RUN/jobs/<id>/
PROGRESS, OUTPUT, STDERR = "progress.json", "output.json", "stderr.txt"
START_GRACE = 60.0  # seconds a job may be recorded without its process before it counts as never started
ERROR_TAIL = 4000  # characters of the command's stderr kept as a failed job's error
DB_ENV = "RECSCOPE_DB"  # the store URL `recscope finetune` opens when no --db is given (as `serve` reads it)
NICENESS = 10  # the job's CPU priority below the workers': serving stays responsive while it trains

# The jobs this process started, by id, until their end is recorded: their exit status is known
# here (a killed job is "killed by SIGKILL", not "ended without a result") whichever thread asks.
_children: dict[str, subprocess.Popen] = {}


@dataclass(frozen=True)
class JobState:
    """A job as a client sees it: the stored row, with the live progress while it runs."""

    job: StoredJob
    progress: dict[str, Any]


def finetune_argv(run: Path, progress: Path, since: str | None, budget: float | None) -> list[str]:
    """The command of a finetune job: this Python's ``recscope`` CLI. The store's URL goes in
    its environment (``DB_ENV``), not its arguments: a command line, password included, is
    visible to every local user in ``ps``."""
    argv = [sys.executable, "-m", "recscope.cli", "finetune", str(run), "--json"]
    argv += ["--progress", str(progress)]
    if since is not None:
        argv += ["--since", since]
    if budget is not None:
        argv += ["--budget", f"{budget:g}"]
    return argv


def store_url(store: Store) -> str:
    """The URL the job opens the service's store with (the password included: the job must log in)."""
    return store.engine.url.render_as_string(hide_password=False)


def start_finetune(store: Store, run: Path, since: str | None = None, budget: float | None = None) -> StoredJob:
    """Start ``recscope finetune`` on ``run`` and the service's store; returns the running job.

    ``JobRunning`` (the caller's 409) when a finetune job is running already; a job whose process
    is gone is ended first (``refresh``), so a killed job never blocks the next."""
    for running in store.jobs(kind=FINETUNE, status=JOB_RUNNING):
        refresh(store, running)
    job_id = uuid.uuid4().hex[:16]
    folder = (Path(run) / JOBS / job_id).resolve()
    request: dict[str, Any] = {"since": since, "budget": budget}
    job = store.start_job(job_id, FINETUNE, request, socket.gethostname(), str(folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        argv = finetune_argv(Path(run).resolve(), folder / PROGRESS, since, budget)
        env = {**os.environ, DB_ENV: store_url(store)}
        with open(folder / OUTPUT, "wb") as out, open(folder / STDERR, "wb") as err:
            # A session of its own: a signal to the server's process group (Ctrl-C) does not reach
            # it; it ends its work (and releases the run lock) on its own.
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, env=env
            )
    except OSError as e:
        store.finish_job(job_id, JOB_FAILED, error=f"could not start recscope finetune: {e}")
        raise
    try:
        os.setpriority(os.PRIO_PROCESS, process.pid, NICENESS)
    except (OSError, AttributeError):  # not permitted, or not a POSIX system: it runs at the workers' priority
        pass
    store.job_started(job_id, process.pid)
    _children[job_id] = process
    threading.Thread(target=_wait, args=(store, job_id, process), name=f"job-{job_id}", daemon=True).start()
    return store.job(job_id) or job


def _wait(store: Store, job_id: str, process: subprocess.Popen) -> None:
    """The starting worker's watch: record the job's end as soon as its process exits."""
    code = process.wait()
    try:
        job = store.job(job_id)
        if job is not None and job.status == JOB_RUNNING:
            _finish(store, job, code)
    except Exception as e:  # the store is down: the next GET (any worker) records the end instead
        log.warning("job %s ended (exit %s) but could not be recorded: %s", job_id, code, e)
    else:
        _children.pop(job_id, None)


def state(store: Store, job_id: str) -> JobState | None:
    """The job ``job_id`` now (None: the store has no such job), ended first when its process is gone."""
    job = store.job(job_id)
    if job is None:
        return None
    job = refresh(store, job)
    if job.status == JOB_RUNNING:
        return JobState(job, read_progress(job))
    return JobState(job, job.progress or read_progress(job))


def refresh(store: Store, job: StoredJob) -> StoredJob:
    """``job`` as stored after ending it if its process is gone (see the module's docstring)."""
    if job.status != JOB_RUNNING or job.host != socket.gethostname():
        return job
    if job.pid is None:
        if time.time() - job.started_at < START_GRACE:
            return job  # recorded a moment ago, being started
        store.finish_job(
            job.id,
            JOB_FAILED,
            error=f"its process never started (the worker starting it stopped within {START_GRACE:g} s)",
        )
    elif (child := _children.get(job.id)) is not None:
        if child.poll() is not None:  # ours and ended: recorded with its exit status (as _wait would)
            _finish(store, job, child.returncode)
    elif not _alive(job.pid, Path(job.folder)):
        _finish(store, job, None)
    return store.job(job.id) or job


def _finish(store: Store, job: StoredJob, code: int | None) -> None:
    """Record the end of ``job`` from its files; ``code``: its exit status, when known (the
    starting worker waited for it), None when another worker found the process gone."""
    folder = Path(job.folder)
    result = _result(folder / OUTPUT)
    progress = read_progress(job)
    if result is not None and code in (0, None):
        store.finish_job(job.id, JOB_SUCCEEDED, progress=progress, result=result)
        return
    if code is None:
        how = f"its process (pid {job.pid}) ended without a result"
    elif code < 0:
        how = f"its process was killed by {signal.Signals(-code).name}"
    else:
        how = f"recscope finetune exited with status {code}"
    stderr = _tail(folder / STDERR)
    store.finish_job(job.id, JOB_FAILED, progress=progress, error=f"{how}: {stderr}" if stderr else how)


def read_progress(job: StoredJob) -> dict[str, Any]:
    """The job's progress file ({"stage", "done", "message", "pid"}), or "starting" before the
    command has written one."""
    try:
        progress = json.loads((Path(job.folder) / PROGRESS).read_text())
        if isinstance(progress, dict):
            return progress
    except (OSError, ValueError):
        pass
    return {"stage": "starting", "done": 0.0, "message": "starting recscope finetune", "pid": job.pid}


def _result(path: Path) -> dict[str, Any] | None:
    """The JSON object the command printed last on stdout (None: none)."""
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return None
    for candidate in (text, *reversed(text.splitlines())):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return text if len(text) <= ERROR_TAIL else "…" + text[-ERROR_TAIL:]


def _alive(pid: int, folder: Path) -> bool:
    """Whether ``pid`` is still the job's process: running (not a zombie waiting to be reaped) and,
    where /proc shows it, with the job's folder in its command line (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's: not ours, but we cannot tell more
    except (OverflowError, ValueError):
        return False
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
    except (OSError, IndexError):
        return True  # no /proc (not Linux), or gone a moment ago: the next look tells
    return state not in ("Z", "X") and str(folder) in cmdline
