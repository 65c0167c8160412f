"""The live service under load: the real server on loopback, driven by a bounded async httpx client.

    python bench/serve_load.py RUN [--seconds 60] [--name beauty] [--workers N] [--threads T]
    python bench/serve_load.py RUN --compare-workers 1 2 --phases recommend explain explain-saturation
    python bench/serve_load.py RUN --workers 2 --phases chaos

Starts ``recscope serve RUN --workers N --threads T`` as a subprocess on a free 127.0.0.1 port
with a fresh SQLite store in a temporary directory (the run's own store is never written) and
an API key (``--api-key-env``; every request carries it), waits until every worker answers
``/health/ready``, warms every worker up, then runs the chosen phases, ``--seconds`` each:

- ``recommend``: GET /users/{id}/recommendations?k=10, open loop at ``--recommend-rps``.
- ``explain``: the same with explain=true (the run's default method) and
  counterfactual=false, open loop at ``--explain-rps``.
- ``explain-saturation``: the explained lists of ``explain`` in a closed loop of
  ``--saturation-clients`` clients (enough to keep every worker busy): explained lists/s.
- ``ingest``: POST /events, batches of ``--batch`` purchases, ``--ingest-clients`` clients
  each sending the next batch as soon as the last one is answered; events/s over the phase.
- ``mixed``: ``--concurrency`` clients in a closed loop, each picking recommend, explain or a
  small event batch per request; every non-2xx answer, timeout or connection error is an error.
- ``chaos`` (2 or more workers): the mixed loop, and in its middle 50 ``PUT /items`` (at 1/3;
  how long until each is recommendable from every worker), a ``PUT /model`` to another version
  of the run (at 1/2; how long until every worker serves it) and one worker killed with SIGKILL
  (at 2/3; how long until a replacement answers); the clients go on while a step runs late, and
  ``CHAOS_TAIL`` s after the last (and the workers' own count of how long each item took from
  its commit to being served there, read from /metrics). Counts failed requests (apart: those that ended within
  ``KILL_WINDOW`` of the kill, in flight on the killed worker), lists labelled with a version
  that is neither, and reads every acknowledged event back from the store.
  A run with one version is copied to a temporary directory and a second version published
  there (the weights with one bias nudged); the run itself is never written.

Without ``--phases``: recommend, explain, ingest and mixed. ``--compare-workers 1 2`` runs the
phases once per worker count, a fresh server each, the same users and seed, into one JSON with
the ratio of explained lists/s at saturation.

Open loop: request i is due at start + i / rate whatever happened before, and its latency is
counted from that due time, so time spent queued (in the client's bound, in the server) is in
it. Users are a seeded sample of the run's users; ingestion posts to users drawn from all of
them. The load generator shares the machine with the server: the result records the load
average, the CPU of every server process (the manager and each worker), the client's and what
every other process used, per phase (``--wait-quiet PERCENT`` waits before each phase until
other processes use less than that share of one core). Which worker answered is counted per
phase (``by_worker``, from ``X-Recscope-Worker``): the kernel hands each connection to a worker.
Writes bench/results/serve_load_<name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402

RECSCOPE = Path(sys.executable).parent / "recscope"
TIMEOUT = 30.0  # s: a request that takes longer is an error
MIX = {"recommend": 0.7, "explain": 0.2, "events": 0.1}  # the mixed phase's share of each request kind
BOUND = 256  # open loop: at most this many requests in flight; later ones wait (and their wait counts)
PHASES = ("recommend", "explain", "explain-saturation", "ingest", "mixed", "chaos")  # in the order they run
DEFAULT_PHASES = ("recommend", "explain", "ingest", "mixed")
KEY_ENV = "SERVE_LOAD_API_KEY"  # the variable `recscope serve --api-key-env` reads the key from
WORKER = "x-recscope-worker"  # the response header naming the worker process that answered
NEW_ITEMS = 50  # chaos: items PUT in the middle of the phase
NEW_ITEM_PREFIX = "serve-load-"  # their ids: the prefix, the bench's pid and start time, a number
KILL_WINDOW = 0.5  # s after the SIGKILL: a request failing then was in flight on the killed worker
PROBE_EVERY = 0.02  # s between two probes of one thing (each on a new connection)
PROBE_LONGEST = 60.0  # s: a probe gives up (and says so) after this
CHAOS_TAIL = 2.0  # s the chaos phase's clients go on after its last step, at the least


# ---------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


async def wait_quiet(percent: float, longest: float) -> float:
    """Wait (up to ``longest`` s) until the machine is busy less than ``percent`` of one core over
    5 s while the benchmark is idle; returns that last busy percentage."""
    deadline = time.perf_counter() + longest
    while True:
        busy = machine_busy_seconds()
        await asyncio.sleep(5)
        used = 100 * (machine_busy_seconds() - busy) / 5
        if used < percent or time.perf_counter() > deadline:
            return round(used, 1)


def peak_rss_mib_of(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


class Server:
    """``recscope serve RUN`` on a free loopback port with a store in a temporary directory.

    ``workers``/``threads``: passed as ``--workers``/``--threads`` (None: the command's defaults);
    ``api_key``: the server requires it on writes (``--api-key-env``), the caller sends it."""

    def __init__(
        self,
        run: str,
        ready_timeout: float = 300.0,
        workers: int | None = None,
        threads: int | None = None,
        api_key: str | None = None,
    ):
        self.run, self.ready_timeout = run, ready_timeout
        self.workers_wanted = workers or len(os.sched_getaffinity(0))  # recscope serve's default
        self.threads, self.api_key = threads, api_key
        self.tmp = tempfile.TemporaryDirectory(prefix="recscope-bench-")
        self.db = f"sqlite:///{self.tmp.name}/store.sqlite"
        self.log_path = Path(self.tmp.name) / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    def __enter__(self) -> Server:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` still stops the server and cleans up
        command = [str(RECSCOPE), "serve", self.run, "--port", str(self.port), "--db", self.db]
        command += ["--workers", str(self.workers_wanted)]
        command += ["--threads", str(self.threads)] if self.threads else []
        env = dict(os.environ)
        if self.api_key is not None:
            command += ["--api-key-env", KEY_ENV]
            env[KEY_ENV] = self.api_key
        tic = time.perf_counter()
        self.log = open(self.log_path, "w")  # a file, not a pipe: access logs must never block the server
        # A session of its own: if the manager does not stop its workers, the cleanup ends the group.
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            self._wait_until_every_worker_is_ready(tic)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.startup_seconds = time.perf_counter() - tic
        return self

    def _wait_until_every_worker_is_ready(self, tic: float) -> None:
        """/health/ready answers 200 from each of the ``workers_wanted`` processes (a new
        connection per probe, so the kernel may hand it to any of them)."""
        ready: set[int] = set()
        while time.perf_counter() - tic < self.ready_timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                response = httpx.get(f"{self.url}/health/ready", timeout=1.0)
                if response.status_code == 200:
                    ready.add(int(response.headers[WORKER]))
            except httpx.TransportError:
                pass
            workers = set(self.workers())
            if len(workers) == self.workers_wanted and workers <= ready:
                return
            time.sleep(0.05 if ready else 0.2)
        raise RuntimeError(
            f"{len(ready)} of {self.workers_wanted} workers were ready after {self.ready_timeout:.0f} s;"
            f" log: {self.log_path}"
        )

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        self.tmp.cleanup()

    def problems(self, limit: int = 20) -> list[str]:
        """The server log's errors, warnings and non-2xx access lines (the first ``limit``)."""
        self.log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        bad = re.compile(r'ERROR|WARNING|Traceback|Exception|" [345]\d\d\b')
        probed = re.compile(rf'/{NEW_ITEM_PREFIX}[^ ]* HTTP/1.1" 404')  # chaos: asked before a worker had the item
        return [line for line in lines if bad.search(line) and not probed.search(line)][:limit]

    @property
    def pid(self) -> int:
        """The process ``recscope serve`` runs in: with one worker, the worker; else uvicorn's manager."""
        assert self.process is not None
        return self.process.pid

    def children(self) -> list[int]:
        pids = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:  # the thread ended
                pass
        return sorted(set(pids))

    def workers(self) -> list[int]:
        """The pids of the processes that answer requests (a worker just killed may still be listed
        until its manager reaps it)."""
        if self.workers_wanted == 1:
            return [self.pid]
        pids = []
        for pid in self.children():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_text()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:  # ended
                continue
            # uvicorn's manager also starts multiprocessing's resource tracker: workers run the app
            if "resource_tracker" not in cmdline and state != "Z":
                pids.append(pid)
        return pids

    def processes(self) -> dict[int, str]:
        """Every process of the server and its role: "manager", "worker" or "helper"."""
        workers = set(self.workers())
        roles = {pid: "worker" if pid in workers else "helper" for pid in self.children()}
        roles[self.pid] = "worker" if self.workers_wanted == 1 else "manager"
        return roles


class CpuMeter:
    """CPU seconds of the server's processes, the last reading of each kept, so a process that
    ends (a killed worker) keeps what it used until then."""

    def __init__(self, server: Server):
        self.server = server
        self.last: dict[int, float] = {}
        self.roles: dict[int, str] = {}

    def read(self) -> dict[int, float]:
        """The CPU seconds of the processes alive now (and kept for when they are gone)."""
        now = {}
        for pid, role in self.server.processes().items():
            try:
                now[pid] = self.last[pid] = cpu_seconds(pid)
                self.roles[pid] = role
            except OSError:  # ended between listing and reading
                pass
        return now

    def total(self) -> float:
        self.read()
        return sum(self.last.values())

    def phase(self, before: dict[int, float], seconds: float) -> dict:
        """Per process alive at the phase's start (``before = read()``) or at its end: CPU seconds
        over the phase and percent of one core."""
        after = self.read()
        rows = []
        for pid in sorted(before.keys() | after.keys()):
            cpu = self.last[pid] - before.get(pid, 0.0)
            row = {"pid": pid, "role": self.roles[pid], "cpu_s": round(cpu, 2)}
            row["cpu_percent"] = round(100 * cpu / seconds, 1)
            if pid not in before:
                row["started_in_phase"] = True  # its CPU counts from its start (loading the model too)
            if pid not in after:
                row["ended_in_phase"] = True  # its CPU until the last reading before it ended
            rows.append(row)
        return {"total_percent": round(sum(r["cpu_percent"] for r in rows), 1), "processes": rows}


async def server_idle(meter: CpuMeter, longest: float = 600.0) -> float:
    """Wait until the server's processes use under 5% of a core each over 1 s (they may still be
    working on requests the client gave up on); returns the seconds waited."""
    tic = time.perf_counter()
    while time.perf_counter() - tic < longest:
        used = meter.total()
        await asyncio.sleep(1.0)
        if meter.total() - used < 0.05 * len(meter.server.processes()):
            break
    return round(time.perf_counter() - tic, 1)


# ---------------------------------------------------------------------------------------
# what one phase measured
# ---------------------------------------------------------------------------------------
@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)  # answered 2xx
    errors: Counter = field(default_factory=Counter)  # "status 500", "ReadTimeout", ...
    events: int = 0  # accepted by POST /events
    counterfactuals: int = 0  # explained items that came back with a counterfactual
    explained: int = 0
    send_lag_ms: list[float] = field(default_factory=list)  # open loop: due time to the request leaving
    by_worker: Counter = field(default_factory=Counter)  # X-Recscope-Worker of the 2xx answers
    versions: Counter = field(default_factory=Counter)  # model_version of the lists answered

    def summary(self, seconds: float, target_rps: float | None = None) -> dict:
        lat = np.asarray(self.latencies_ms)
        done = len(lat) + sum(self.errors.values())
        out = {
            "requests": done,
            "ok": len(lat),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "seconds": round(seconds, 2),
            "achieved_rps": round(done / seconds, 2),
        }
        if target_rps is not None:
            out["target_rps"] = target_rps
        if len(lat):
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
                out[f"{name}_ms"] = round(float(np.percentile(lat, q)), 2)
            out["max_ms"] = round(float(lat.max()), 2)
            out["mean_ms"] = round(float(lat.mean()), 2)
        if self.send_lag_ms:  # large: the client (sharing the CPU) fell behind, not the server
            out["send_lag_p99_ms"] = round(float(np.percentile(self.send_lag_ms, 99)), 2)
            out["send_lag_max_ms"] = round(max(self.send_lag_ms), 2)
        if self.events:
            out["events_accepted"] = self.events
            out["events_per_s"] = round(self.events / seconds, 1)
        if self.explained:
            out["items_explained"] = self.explained
            out["items_with_counterfactual"] = self.counterfactuals
        out["by_worker"] = {str(pid): n for pid, n in sorted(self.by_worker.items())}
        if self.versions:
            out["model_versions"] = dict(self.versions)
        return out


@dataclass
class Answer:
    """One request of the chaos phase as the client saw it (times: perf_counter)."""

    kind: str  # recommend, explain, events
    sent: float
    done: float
    worker: int | None  # X-Recscope-Worker; None: no answer (a transport error)
    error: str | None  # "status 503", "RemoteProtocolError", ...; None: 2xx
    version: str | None = None  # a list's model_version
    acknowledged: list[tuple[str, float]] = field(default_factory=list)  # events: (user, value) stored


async def call(
    client: httpx.AsyncClient,
    tally: Tally,
    method: str,
    path: str,
    due: float,
    answers: list[Answer] | None = None,
    kind: str = "",
    **kw,
) -> dict | None:
    """One request; latency from ``due`` (perf_counter) to the answer; errors counted by kind;
    with ``answers``, each request is also kept as an Answer."""
    sent = time.perf_counter()
    try:
        response = await client.request(method, path, **kw)
    except httpx.HTTPError as error:
        tally.errors[type(error).__name__] += 1
        if answers is not None:
            answers.append(Answer(kind, sent, time.perf_counter(), None, type(error).__name__))
        return None
    done = time.perf_counter()
    worker = int(response.headers[WORKER]) if WORKER in response.headers else None
    if not response.is_success:
        tally.errors[f"status {response.status_code}"] += 1
        if answers is not None:
            answers.append(Answer(kind, sent, done, worker, f"status {response.status_code}"))
        return None
    tally.latencies_ms.append((done - due) * 1000)
    tally.by_worker[worker] += 1
    body = response.json()
    if not isinstance(body, dict):
        return body
    for item in body.get("items", []):
        if item.get("explanation") is not None:
            tally.explained += 1
            tally.counterfactuals += item["explanation"].get("counterfactual") is not None
    if "model_version" in body:
        tally.versions[body["model_version"]] += 1
    if "accepted" in body:
        tally.events += body["accepted"]
    if answers is not None:
        stored = [(e["user_id"], e["value"]) for e in kw["json"]["events"]] if "accepted" in body else []
        answers.append(Answer(kind, sent, done, worker, None, body.get("model_version"), stored))
    return body


# ---------------------------------------------------------------------------------------
# the requests
# ---------------------------------------------------------------------------------------
@dataclass
class Workload:
    users: list[str]  # sampled users of the run: recommend and explain
    all_users: list[str]  # ingestion spreads over every user
    items: list[str]
    rng: random.Random
    method: str | None = None
    next_event: int = 0

    def recommend(self, explain: bool) -> tuple[str, str, dict]:
        params: dict = {"k": 10}
        if explain:
            # The route takes counterfactual= since 70c7e86 (earlier servers ignore it and compute
            # them: the result counts items_with_counterfactual).
            params |= {"explain": "true", "counterfactual": "false"}
            if self.method:
                params["method"] = self.method
        return "GET", f"/users/{self.rng.choice(self.users)}/recommendations", {"params": params}

    def events(self, n: int, tagged: bool = False) -> tuple[str, str, dict]:
        """A batch of ``n`` purchases; ``tagged``: each carries its number as its ``value``, which
        the user's history shows, so every acknowledged event can be found again."""
        batch = []
        for _ in range(n):
            self.next_event += 1
            event = {
                "event_id": f"load-{self.next_event}",
                "user_id": self.rng.choice(self.all_users),
                "item_id": self.rng.choice(self.items),
                "event": "purchase",
            }
            if tagged:
                event["value"] = self.next_event
            batch.append(event)
        return "POST", "/events", {"json": {"events": batch}}


async def open_loop(client, make, rate: float, seconds: float) -> tuple[Tally, float]:
    """Requests due at a constant rate for ``seconds``, each counted from its due time."""
    tally, bound = Tally(), asyncio.Semaphore(BOUND)
    start = time.perf_counter()
    n = int(rate * seconds)

    async def one(due: float, request) -> None:
        async with bound:
            tally.send_lag_ms.append((time.perf_counter() - due) * 1000)
            method, path, kw = request
            await call(client, tally, method, path, due, **kw)

    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, make())))
    await asyncio.gather(*tasks)
    return tally, time.perf_counter() - start


async def closed_loop(
    client, make, clients: int, seconds: float, answers: list[Answer] | None = None, until: asyncio.Event | None = None
) -> tuple[dict[str, Tally], float]:
    """``clients`` loops, each sending its next request when the last one is answered, for
    ``seconds`` (and on until ``until`` is set, if given); ``make()`` gives (kind, request) and
    each kind is tallied apart."""
    tallies: dict[str, Tally] = {}
    start = time.perf_counter()

    def going() -> bool:
        return time.perf_counter() - start < seconds or (until is not None and not until.is_set())

    async def loop() -> None:
        while going():
            kind, (method, path, kw) = make()
            tally = tallies.setdefault(kind, Tally())
            await call(client, tally, method, path, time.perf_counter(), answers, kind, **kw)

    await asyncio.gather(*(loop() for _ in range(clients)))
    return tallies, time.perf_counter() - start


def mixed(work: Workload, batch: int, weights: dict[str, float], tagged: bool = False):
    """(kind, request) drawn by ``weights`` over recommend, explain and events."""
    kinds, w = list(weights), list(weights.values())

    def make():
        kind = work.rng.choices(kinds, w)[0]
        if kind == "events":
            return kind, work.events(batch, tagged)
        return kind, work.recommend(explain=kind == "explain")

    return make


async def warm_up(probe: httpx.AsyncClient, server: Server, work: Workload) -> None:
    """Every worker answers 20 lists and 5 explained ones before any phase (``probe`` opens a
    new connection per request, so the kernel spreads them)."""
    want = {False: 20, True: 5}
    tallies = {False: Tally(), True: Tally()}
    for _ in range(100 * server.workers_wanted):
        workers = server.workers()
        short = [e for e, n in want.items() if any(tallies[e].by_worker[w] < n for w in workers)]
        if not short:
            return
        method, path, kw = work.recommend(short[0])
        await call(probe, tallies[short[0]], method, path, time.perf_counter(), **kw)
        errors = tallies[False].errors + tallies[True].errors
        if errors:
            raise RuntimeError(f"warm-up requests failed: {dict(errors)}; server log: {server.log_path}")
    answered = {e: dict(t.by_worker) for e, t in tallies.items()}
    raise RuntimeError(f"not every worker of {server.workers()} answered the warm-up: {answered}")


# ---------------------------------------------------------------------------------------
# chaos: items added, a version switch and a SIGKILL under the mixed loop
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What the chaos phase changes."""

    served: str  # the version the server starts with
    other: str  # the version PUT /model switches to
    published: bool  # the bench published ``other`` in a copy of the run
    new_items: list[dict]  # {"title", "attributes", "copied_from"}: each a trained item's


def new_items_like(rec: Recommender, n: int, rng: random.Random) -> list[dict]:
    """``n`` items to PUT, each with the title and attributes of a trained item (so the model
    scores it from fields it knows)."""
    from recscope.serve.routes.items import run_item

    trained = range(1, len(rec.data.item_ids))  # 0 is padding
    indices = rng.sample(trained, n) if n <= len(trained) else rng.choices(trained, k=n)
    items = [run_item(rec, rec.data.item_ids[i], i) for i in indices]
    return [{"title": it.title, "attributes": it.attributes, "copied_from": it.item_id} for it in items]


def two_versions(run: str, into: Path) -> tuple[str, str, str, bool]:
    """(the run to serve, its current version, another version, published here?): the run's
    newest other version, or, when it has no other, a second one published in a copy of the run
    made in ``into`` (the weights with one bias nudged, as tests/test_workers.py's fixture): the
    run itself is never written."""
    import torch

    from recscope import versions
    from recscope.run import save_weights

    served = versions.weights(Path(run))[1]
    others = [v for v in versions.listing(Path(run)) if v.id != served]
    if others:
        return run, served, others[-1].id, False
    copy = into / Path(run).name
    # Not copied: what serving never reads (training state, the run's own store, a lock).
    skip = shutil.ignore_patterns("optimizer.safetensors", "last.safetensors", "store.sqlite*", ".lock")
    shutil.copytree(run, copy, ignore=skip)
    if versions.current(copy) is None:  # a run from before versions: its weights become one
        versions.publish(copy, copy / versions.WEIGHTS, source="train")
    rec = Recommender.load(copy)
    params = dict(rec.model.named_parameters())
    nudged = "ln_f.bias" if "ln_f.bias" in params else [n for n in params if n.endswith("bias")][-1]
    with torch.no_grad():
        params[nudged].add_(0.5)
    save_weights(into / "nudged.safetensors", rec.model)
    source = f"bench/serve_load.py chaos: {nudged} + 0.5"
    other = versions.publish(copy, into / "nudged.safetensors", source=source, parent=served).id
    versions.promote(copy, served)  # served unless the store says otherwise
    return str(copy), served, other, True


@dataclass(frozen=True)
class Agreed:
    """Seconds from a change until the last worker gave the wanted answer: when that answer came
    (``done``: an upper bound, a queue in front of the model in it) and when the request that got
    it was sent (``sent``)."""

    sent: float
    done: float


class Probe:
    """Asks one thing again and again, each time on a new connection (the kernel may hand it to
    any worker), until every worker has given the wanted answer; keeps its transport errors."""

    def __init__(self, client: httpx.AsyncClient, server: Server):
        self.client, self.server = client, server  # client: no keep-alive
        self.errors: list[tuple[float, str]] = []  # (perf_counter, kind): a worker killed under a probe

    async def until(
        self, path: str, ok, since: float, required: set[int] | None = None, every: float = PROBE_EVERY
    ) -> Agreed | None:
        """From ``since`` until ``ok(response)`` held on an answer from each of ``required``
        (default: the workers now) that is still alive; None after ``PROBE_LONGEST`` s. One
        request in flight per required worker, so a slow answer does not hold up the others'."""
        required = set(self.server.workers() if required is None else required)
        agreed: dict[int, tuple[float, float]] = {}  # worker: (sent, done) of its first wanted answer

        def settled() -> bool:
            required.intersection_update(set(self.server.workers()) | agreed.keys())  # the dead drop out
            return required <= agreed.keys()

        async def ask() -> None:
            while not settled() and time.perf_counter() - since < PROBE_LONGEST:
                sent = time.perf_counter()
                try:
                    response = await self.client.get(path)
                    if ok(response):
                        agreed.setdefault(int(response.headers[WORKER]), (sent, time.perf_counter()))
                except httpx.HTTPError as error:
                    self.errors.append((time.perf_counter(), type(error).__name__))
                await asyncio.sleep(every)

        await asyncio.gather(*(ask() for _ in range(max(len(required), 1))))
        if not settled():
            return None
        last = [agreed[w] for w in required] or [(since, since)]
        return Agreed(max(s for s, _ in last) - since, max(d for _, d in last) - since)


async def put_items(probe: Probe, work: Workload, plan: Plan, start: float) -> list[dict]:
    """PUT the plan's items one after another (each through whichever worker the kernel picks);
    for each, probes (tasks) of how long after its PUT was answered it is recommendable from every
    worker: explained for a user (the bar), and in the worker's catalog (no model turn to wait for)."""
    stamp = f"{os.getpid()}-{int(time.time())}"
    in_catalog = lambda r: r.status_code == 200 and r.json()["recommendable"]  # noqa: E731
    rows = []
    for i, item in enumerate(plan.new_items):
        item_id = f"{NEW_ITEM_PREFIX}{stamp}-{i}"
        body = {"title": item["title"], "attributes": item["attributes"]}
        row: dict = {"item_id": item_id, "copied_from": item["copied_from"], "at_s": time.perf_counter() - start}
        tic = time.perf_counter()
        try:
            response = await probe.client.put(f"/items/{item_id}", json=body)
        except httpx.HTTPError as error:
            rows.append(row | {"error": type(error).__name__})
            continue
        answered = time.perf_counter()
        row |= {"put_ms": (answered - tic) * 1000, "status": response.status_code, "worker": response.headers[WORKER]}
        if response.status_code in (200, 201):
            explained = f"/users/{work.rng.choice(work.users)}/recommendations/{item_id}/explanation"
            row["explained"] = asyncio.create_task(probe.until(explained, lambda r: r.status_code == 200, answered))
            row["catalog"] = asyncio.create_task(probe.until(f"/items/{item_id}", in_catalog, answered))
        rows.append(row)
    return rows


async def switch_model(client: httpx.AsyncClient, probe: Probe, plan: Plan, start: float) -> dict:
    """PUT /model to the plan's other version; seconds from its answer until every worker's
    /health/ready names it."""
    out: dict = {"from": plan.served, "to": plan.other, "published_by_bench": plan.published, "every_worker_s": None}
    tic = time.perf_counter()
    out["at_s"] = round(tic - start, 2)
    try:
        response = await client.put("/model", json={"version": plan.other}, timeout=300.0)
    except httpx.HTTPError as error:
        return out | {"error": type(error).__name__, "answered": float("inf")}
    answered = time.perf_counter()
    out |= {"put_ms": round((answered - tic) * 1000, 1), "status": response.status_code, "answered": answered}
    out["worker"] = response.headers[WORKER]
    serves = lambda r: r.status_code == 200 and r.json()["model_version"] == plan.other  # noqa: E731
    agreed = await probe.until("/health/ready", serves, answered)
    out["every_worker_s"] = None if agreed is None else round(agreed.done, 3)
    return out


async def kill_worker(probe: Probe, meter: CpuMeter, start: float) -> dict:
    """SIGKILL one worker; seconds until its manager has started a replacement and until that
    one answers /health/ready."""
    server = probe.server
    before = set(server.workers())
    victim = min(before)
    meter.read()  # the victim's CPU until now
    killed = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    out: dict = {"at_s": round(killed - start, 2), "victim": victim, "killed": killed, "replacement": None}
    while time.perf_counter() - killed < PROBE_LONGEST:
        new = set(server.workers()) - before
        if new:
            out |= {"replacement": min(new), "replacement_started_s": round(time.perf_counter() - killed, 3)}
            break
        await asyncio.sleep(0.05)
    out["replacement_ready_s"] = None
    if out["replacement"] is not None:
        ready = lambda r: r.status_code == 200  # noqa: E731
        agreed = await probe.until("/health/ready", ready, killed, {out["replacement"]}, every=0.1)
        out["replacement_ready_s"] = None if agreed is None else round(agreed.done, 3)
    return out


@dataclass
class Chaos:
    """What the chaos phase saw, summarised (after the server's CPU is read) by ``summary``."""

    tallies: dict[str, Tally]
    answers: list[Answer]
    seconds: float
    clients: int
    plan: Plan
    items: list[dict]
    switch: dict
    kill: dict
    probe: Probe

    async def summary(self, client: httpx.AsyncClient) -> dict:
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "by_kind": {kind: t.summary(self.seconds) for kind, t in self.tallies.items()},
            "items": await self._items(),
            "items_applied_by_workers": await applied_lag(client, "item"),
            "model_switch": self._switch(),
            "kill": {k: v for k, v in self.kill.items() if k != "killed"},
            "failures": self._failures(),
            "versions": self._versions(),
            "events": await self._events(client),
        }

    async def _items(self) -> dict:
        def spread(values: list[float | None]) -> dict:
            done = [v for v in values if v is not None]
            out = {"unfinished": len(values) - len(done)}
            if done:
                out |= {"max_s": round(max(done), 3), "p50_s": round(float(np.median(done)), 3)}
            return out

        def when(agreed: list[Agreed | None], at: str) -> list[float | None]:
            return [None if a is None else getattr(a, at) for a in agreed]

        ok = [r for r in self.items if "explained" in r]
        explained = [await r["explained"] for r in ok]
        catalog = [await r["catalog"] for r in ok]
        put_ms = [r["put_ms"] for r in self.items if "put_ms" in r]
        return {
            "count": len(self.items),
            "put_ok": len(ok),
            "put_errors": [r.get("error") or r.get("status") for r in self.items if "explained" not in r],
            "first_put_at_s": round(self.items[0]["at_s"], 2) if self.items else None,
            "last_put_at_s": round(self.items[-1]["at_s"], 2) if self.items else None,
            "put_p50_ms": round(float(np.median(put_ms)), 1) if put_ms else None,
            "put_max_ms": round(max(put_ms), 1) if put_ms else None,
            "put_by_worker": dict(Counter(r["worker"] for r in ok)),
            # From each PUT's answer to a 200 from every worker: when it came (the bar; an upper
            # bound with the wait for the model's turn under the mixed load in it) and when the
            # request that got it was sent (the route finds the item before it waits for the model).
            "explained_by_every_worker_s": spread(when(explained, "done")),
            "explained_by_every_worker_sent_s": spread(when(explained, "sent")),
            # From each PUT's answer until GET /items says recommendable from every worker (no model
            # turn, but the probe's own wait for a thread and the CPU in it), and until the probe
            # that found it was sent (the worker applied the item between the probe before and this).
            "in_every_worker_catalog_s": spread(when(catalog, "done")),
            "in_every_worker_catalog_sent_s": spread(when(catalog, "sent")),
        }

    def _lists(self) -> list[Answer]:
        return sorted((a for a in self.answers if a.kind != "events" and a.error is None), key=lambda a: a.done)

    def _switch(self) -> dict:
        """Adds, from the clients' own lists: per worker that served the old version, seconds from
        the PUT's answer to its first list with the new one."""
        out = {k: v for k, v in self.switch.items() if k != "answered"}
        if "error" in out:  # PUT /model had no answer
            return out
        old_workers = {a.worker for a in self._lists() if a.version == self.plan.served}
        first_new: dict[int, float] = {}
        for a in self._lists():
            if a.version == self.plan.other and a.worker in old_workers:
                first_new.setdefault(a.worker, a.done - self.switch["answered"])
        out["first_new_list_per_worker_s"] = {str(w): round(s, 3) for w, s in sorted(first_new.items())}
        return out

    def _failures(self) -> dict:
        failed = [a for a in self.answers if a.error is not None]
        killed = self.kill["killed"]
        at_kill = [a for a in failed if killed <= a.done <= killed + KILL_WINDOW]
        outside = [a for a in failed if not killed <= a.done <= killed + KILL_WINDOW]
        return {
            "failed": len(failed),
            "at_kill": len(at_kill),  # ended within KILL_WINDOW s after the SIGKILL: in flight on the killed worker
            "outside_kill_window": len(outside),
            "kill_window_s": KILL_WINDOW,
            "kinds_at_kill": dict(Counter(a.error for a in at_kill)),
            "kinds_outside": dict(Counter(a.error for a in outside)),
            "at_kill_sent_ms_before_kill": sorted(round((killed - a.sent) * 1000, 1) for a in at_kill),
            "outside_at_s": [round(a.done - killed, 3) for a in outside[:20]],  # relative to the kill
            # The probes' (new connection per request; 404s and 503s are answers to them, not failures)
            "probe_transport_errors": {
                "at_kill": sum(killed <= t <= killed + KILL_WINDOW for t, _ in self.probe.errors),
                "outside_kill_window": sum(not killed <= t <= killed + KILL_WINDOW for t, _ in self.probe.errors),
                "kinds": dict(Counter(kind for _, kind in self.probe.errors)),
            },
        }

    def _versions(self) -> dict:
        """Every list names one version, the old or the new; none from a worker that had already
        answered with the new one (sent after that answer) names the old one."""
        lists = self._lists()
        first_new: dict[int, float] = {}
        for a in lists:
            if a.version == self.plan.other:
                first_new.setdefault(a.worker, a.done)
        back = [a for a in lists if a.version == self.plan.served and a.sent > first_new.get(a.worker, float("inf"))]
        return {
            "lists": len(lists),
            "old": sum(a.version == self.plan.served for a in lists),
            "new": sum(a.version == self.plan.other for a in lists),
            "neither": sum(a.version not in (self.plan.served, self.plan.other) for a in lists),
            "old_after_new_on_same_worker": len(back),
        }

    async def _events(self, client: httpx.AsyncClient) -> dict:
        """Every acknowledged event read back: GET /users/{id}/history of each user that got
        events, the stored items' values (each event's number) against the acknowledged ones."""
        acknowledged: dict[str, set[float]] = defaultdict(set)
        for a in self.answers:
            for user, value in a.acknowledged:
                acknowledged[user].add(float(value))
        bound, lost, unread = asyncio.Semaphore(8), [], []

        async def check(user: str) -> None:
            async with bound:
                try:
                    response = await client.get(f"/users/{user}/history")
                    response.raise_for_status()
                except httpx.HTTPError as error:
                    unread.append(f"{user}: {type(error).__name__}")
                    return
            stored = {e["value"] for e in response.json()["items"] if e["source"] == "store"}
            lost.extend((user, v) for v in acknowledged[user] - stored)

        await asyncio.gather(*(check(u) for u in acknowledged))
        return {
            "acknowledged": sum(len(v) for v in acknowledged.values()),
            "users": len(acknowledged),
            "lost": len(lost),
            "lost_first": lost[:20],
            "users_unread": unread[:20],
        }


async def applied_lag(client: httpx.AsyncClient, kind: str) -> dict:
    """The server's own count of how long its workers took from a ``kind`` change's commit to
    serving it (``recscope_store_change_apply_seconds``, every worker's, the killed one's too):
    no probe's wait in it, to a bucket's resolution."""
    text = (await client.get("/metrics")).text
    pattern = rf'recscope_store_change_apply_seconds_bucket\{{kind="{kind}",le="([^"]+)"\}} (\S+)'
    buckets = [(float(le), float(n)) for le, n in re.findall(pattern, text)]
    if not buckets:
        return {"count": 0}
    total = max(n for _, n in buckets)
    within = dict(buckets).get(1.0, 0.0)
    return {
        "count": int(total),  # each change once per worker that applied it
        "within_1s": int(within),
        "max_at_most_s": min(le for le, n in buckets if n >= total),  # the smallest bucket holding all
    }


async def chaos(client, new_connections, server: Server, work: Workload, plan: Plan, args, meter: CpuMeter):
    """The mixed closed loop for ``--seconds`` with 50 items PUT at 1/3, PUT /model at 1/2 and
    a worker SIGKILLed at 2/3 (each step after the last if it ran late)."""
    probe = Probe(new_connections, server)
    if server.workers_wanted < 2:
        raise RuntimeError("the chaos phase kills a worker: it needs --workers 2 or more")
    answers: list[Answer] = []
    seconds, steps_done = args.seconds, asyncio.Event()
    start = time.perf_counter()
    make = mixed(work, args.mixed_batch, MIX, tagged=True)
    # The clients go on past ``seconds`` while the steps last (PUTs slowed by the load, a
    # replacement still loading), and CHAOS_TAIL s after the last: every step is under load.
    loop = asyncio.create_task(closed_loop(client, make, args.concurrency, seconds, answers, steps_done))

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, start + fraction * seconds - time.perf_counter()))

    await at(1 / 3)
    items = await put_items(probe, work, plan, start)
    await at(1 / 2)
    switch = await switch_model(client, probe, plan, start)
    await at(2 / 3)
    kill = await kill_worker(probe, meter, start)
    await asyncio.sleep(CHAOS_TAIL)
    steps_done.set()
    tallies, elapsed = await loop
    return Chaos(tallies, answers, elapsed, args.concurrency, plan, items, switch, kill, probe), elapsed


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
async def measure(server: Server, work: Workload, args, plan: Plan | None) -> dict:
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout would close them
    # under a request (a client-side race, not a server error).
    limits = httpx.Limits(max_connections=BOUND, max_keepalive_connections=BOUND, keepalive_expiry=2.0)
    headers = {"X-API-Key": server.api_key} if server.api_key else {}
    new_connections = httpx.Limits(max_connections=BOUND, max_keepalive_connections=0)  # one per request
    meter = CpuMeter(server)
    phases: dict = {}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, limits=limits, headers=headers) as client,
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, limits=new_connections, headers=headers) as probe,
    ):
        await warm_up(probe, server, work)

        async def phase(name: str, run) -> None:
            if name not in args.phases:
                return
            extra = {"server_busy_before_s": await server_idle(meter)}
            if args.wait_quiet is not None:
                extra["others_cpu_percent_before"] = await wait_quiet(args.wait_quiet, args.wait_max)
            load, busy = os.getloadavg()[0], machine_busy_seconds()
            server_before, own_cpu = meter.read(), time.process_time()
            result, seconds = await run()
            server_cpu = meter.phase(server_before, seconds)
            own_cpu = 100 * (time.process_time() - own_cpu) / seconds
            machine_cpu = 100 * (machine_busy_seconds() - busy) / seconds
            extra |= {  # percent of one core; the machine has os.cpu_count() of them
                "load_average_1min_before": round(load, 2),
                "server_cpu_percent": server_cpu["total_percent"],
                "client_cpu_percent": round(own_cpu, 1),
                "others_cpu_percent": round(max(machine_cpu - server_cpu["total_percent"] - own_cpu, 0.0), 1),
                "server_cpu": server_cpu["processes"],  # the manager's and each worker's
            }
            if name == "chaos":
                phases[name] = await result.summary(client) | extra
            elif name == "ingest":
                phases[name] = result["events"].summary(seconds) | extra
            elif name == "explain-saturation":
                summary = result["explain"].summary(seconds)
                summary["explained_lists_per_s"] = round(summary["ok"] / seconds, 2)
                phases[name] = summary | {"clients": args.saturation_clients} | extra
            elif isinstance(result, dict):
                phases[name] = {kind: t.summary(seconds) for kind, t in result.items()} | extra
            else:
                phases[name] = result.summary(seconds, getattr(args, f"{name}_rps", None)) | extra
            print(f"{name}: done ({seconds:.1f} s)", flush=True)

        await phase(
            "recommend", lambda: open_loop(client, lambda: work.recommend(False), args.recommend_rps, args.seconds)
        )
        await phase("explain", lambda: open_loop(client, lambda: work.recommend(True), args.explain_rps, args.seconds))
        explained = lambda: ("explain", work.recommend(True))  # noqa: E731
        await phase("explain-saturation", lambda: closed_loop(client, explained, args.saturation_clients, args.seconds))
        batches = lambda: ("events", work.events(args.batch))  # noqa: E731
        await phase("ingest", lambda: closed_loop(client, batches, args.ingest_clients, args.seconds))
        mix = mixed(work, args.mixed_batch, MIX)
        await phase("mixed", lambda: closed_loop(client, mix, args.concurrency, args.seconds))
        await phase("chaos", lambda: chaos(client, probe, server, work, plan, args, meter))
    return phases


def bars(phases: dict) -> dict:
    """Issue 9's and issue 21's bars of one server, each met or not (None when the phase was not run)."""

    def check(phase, ok):
        return None if phase not in phases else bool(ok(phases[phase]))

    mixed_errors = sum(v["errors"] for v in phases.get("mixed", {}).values() if isinstance(v, dict) and "errors" in v)
    return {
        "recommend_p99_le_25ms_at_50rps": check(
            "recommend", lambda p: p.get("p99_ms", 1e9) <= 25 and p["errors"] == 0 and p["target_rps"] >= 50
        ),
        "recommend_p99_le_25ms_at_100rps": check(
            "recommend", lambda p: p.get("p99_ms", 1e9) <= 25 and p["errors"] == 0 and p["target_rps"] >= 100
        ),
        "explain_p99_le_100ms_at_20rps": check(
            "explain", lambda p: p.get("p99_ms", 1e9) <= 100 and p["errors"] == 0 and p["target_rps"] >= 20
        ),
        "ingest_ge_2000_events_per_s": check("ingest", lambda p: p.get("events_per_s", 0) >= 2000),
        "mixed_32_concurrent_0_errors": check("mixed", lambda p: mixed_errors == 0),
        "chaos_0_failures_but_in_flight_on_the_killed_worker": check(
            "chaos",
            lambda p: (
                p["failures"]["outside_kill_window"] == 0
                and p["failures"]["probe_transport_errors"]["outside_kill_window"] == 0
                and p["kill"]["replacement_ready_s"] is not None
            ),
        ),
        "chaos_every_list_one_known_version": check(
            "chaos", lambda p: p["versions"]["neither"] == 0 and p["versions"]["old_after_new_on_same_worker"] == 0
        ),
        "chaos_items_explained_by_every_worker_within_1s": check(
            "chaos",
            lambda p: (
                p["items"]["put_ok"] == NEW_ITEMS
                and p["items"]["explained_by_every_worker_s"]["unfinished"] == 0
                and p["items"]["explained_by_every_worker_s"]["max_s"] <= 1.0
            ),
        ),
        "chaos_0_acknowledged_events_lost": check(
            "chaos", lambda p: p["events"]["lost"] == 0 and not p["events"]["users_unread"]
        ),
    }


def comparison(runs: dict[str, dict]) -> dict:
    """The worker counts side by side: explained lists/s at saturation (and its ratio, most
    workers to fewest), and each open-loop phase's p99."""
    counts = sorted(runs, key=int)
    fewest, most = counts[0], counts[-1]

    def each(phase: str, key: str) -> dict:
        return {n: runs[n]["phases"].get(phase, {}).get(key) for n in counts}

    rates = each("explain-saturation", "explained_lists_per_s")
    out: dict = {"explained_lists_per_s": rates, "recommend_p99_ms": each("recommend", "p99_ms")}
    out["explain_p99_ms"] = each("explain", "p99_ms")
    out["saturation_p99_ms"] = each("explain-saturation", "p99_ms")
    if rates[fewest] and rates[most]:
        out[f"ratio_{most}_to_{fewest}_workers"] = round(rates[most] / rates[fewest], 3)
    if rates.get("1") and rates.get("2"):
        out["bar_saturation_2_workers_ge_1_7x_one"] = rates["2"] / rates["1"] >= 1.7
    return out


def code_under_test() -> dict:
    """Which recscope the client and the server imported: this checkout's src/ (then the files
    that differ from the recorded commit: others work in the same checkout), or another tree
    given by PYTHONPATH (e.g. a `git archive` of one commit)."""
    import recscope

    src = Path(recscope.__file__).resolve().parents[1]
    if src != Path(__file__).resolve().parents[1] / "src":
        return {"recscope_src": str(src), "pythonpath": os.environ.get("PYTHONPATH", "")}
    status = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True)
    return {"recscope_src": str(src), "uncommitted_src": [line[3:] for line in status.stdout.splitlines()]}


def table(phases: dict) -> None:
    head = (
        f"{'phase':<24}{'rate':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'errors':>8}{'events/s':>10}{'others%':>9}"
    )
    print(head + "\n" + "-" * len(head))
    rows = []
    for name, p in phases.items():
        if "achieved_rps" in p:
            rows.append((name, p, p))
        else:
            kinds = p.get("by_kind", p)
            rows += [(f"{name}:{k}", v, p) for k, v in kinds.items() if isinstance(v, dict) and "achieved_rps" in v]
    for name, p, phase in rows:
        cells = [f"{p['achieved_rps']:.1f}/s"]
        cells += [f"{p.get(q, float('nan')):.1f}" for q in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
        line = f"{name:<24}" + "".join(f"{c:>9}" for c in cells) + f"{p['errors']:>8}{p.get('events_per_s', ''):>10}"
        print(line + f"{phase['others_cpu_percent']:>9}")
    print("(ms; open-loop phases count latency from each request's due time;")
    print(" others%: CPU other processes used during the phase, percent of one core)")
    for name, p in phases.items():
        cpu = ", ".join(f"{r['role']} {r['pid']} {r['cpu_percent']}" for r in p["server_cpu"])
        print(f"server CPU %, {name}: {cpu}")
        if "explained_lists_per_s" in p:
            rate, clients, by_worker = p["explained_lists_per_s"], p["clients"], p["by_worker"]
            print(f"{name}: {rate} explained lists/s, {clients} clients, answered by worker {by_worker}")
    if "chaos" in phases:
        c = phases["chaos"]
        items, switch, kill = c["items"], c["model_switch"], c["kill"]
        print(
            f"chaos: items {items['put_ok']}/{items['count']} explained by every worker after"
            f" max {items['explained_by_every_worker_s'].get('max_s')} s"
            f" (in every catalog: max {items['in_every_worker_catalog_s'].get('max_s')} s;"
            f" applied by the workers within 1 s: {c['items_applied_by_workers'].get('within_1s')}"
            f" of {c['items_applied_by_workers']['count']}, all within"
            f" {c['items_applied_by_workers'].get('max_at_most_s')} s);"
            f" version switch on every worker {switch['every_worker_s']} s after PUT /model;"
            f" replacement ready {kill.get('replacement_ready_s')} s after the kill;"
            f" failed {c['failures']['failed']} ({c['failures']['at_kill']} at the kill);"
            f" versions {c['versions']}; events lost {c['events']['lost']} of {c['events']['acknowledged']}"
        )


def serve_and_measure(run: str, workers: int, args, work: Workload, plan: Plan | None) -> dict:
    """A fresh server with ``workers`` processes, the phases, and what the server showed."""
    with Server(run, workers=workers, threads=args.threads, api_key=secrets.token_urlsafe(24)) as server:
        print(f"{workers} worker(s) ready after {server.startup_seconds:.1f} s: {server.workers()}", flush=True)
        phases = asyncio.run(measure(server, work, args, plan))
        rss = {}
        for pid, role in server.processes().items():
            try:
                rss[f"{role} {pid}"] = peak_rss_mib_of(pid)
            except OSError:
                pass
        problems = server.problems()
        startup = server.startup_seconds
    table(phases)
    return {
        "workers": workers,
        "threads": args.threads,
        "server_startup_s": round(startup, 2),
        "server_peak_rss_mib": max((v for v in rss.values() if v is not None), default=None),
        "server_peak_rss_mib_by_process": rss,
        "phases": phases,
        "bars": bars(phases),
        "server_log_problems": problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--name", default=None, help="result name (default: the run's data set)")
    parser.add_argument(
        "--workers", type=int, default=1, help="recscope serve --workers (default 1: one process, as results before it)"
    )
    parser.add_argument("--threads", type=int, default=1, help="recscope serve --threads (torch threads per worker)")
    parser.add_argument(
        "--compare-workers",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="run the phases once per worker count (a fresh server each), e.g. 1 2; replaces --workers",
    )
    parser.add_argument("--users", type=int, default=1000, help="sampled users for recommend/explain")
    parser.add_argument("--recommend-rps", type=float, default=50.0)
    parser.add_argument("--explain-rps", type=float, default=20.0)
    parser.add_argument(
        "--saturation-clients",
        type=int,
        default=None,
        help="clients of explain-saturation (default: 4 per worker of the largest worker count)",
    )
    parser.add_argument("--batch", type=int, default=500, help="events per POST in the ingest phase")
    parser.add_argument("--ingest-clients", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the mixed and chaos phases")
    parser.add_argument("--mixed-batch", type=int, default=20, help="events per POST in the mixed and chaos phases")
    parser.add_argument("--method", default=None, help="explanation method (default: the run's)")
    parser.add_argument(
        "--phases",
        nargs="*",
        default=None,
        choices=PHASES,
        help=f"run only these (default: {' '.join(DEFAULT_PHASES)}); they run in the order {' '.join(PHASES)}",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        metavar="PERCENT",
        help="before each phase, wait until other processes use less than PERCENT of one core",
    )
    parser.add_argument("--wait-max", type=float, default=300.0, help="longest wait for quiet, seconds per phase")
    args = parser.parse_args()
    args.phases = args.phases or list(DEFAULT_PHASES)
    counts = args.compare_workers or [args.workers]
    if "chaos" in args.phases and max(counts) < 2:
        parser.error("the chaos phase kills a worker: it needs --workers 2 or more")
    args.saturation_clients = args.saturation_clients or 4 * max(counts)

    rec = Recommender.load(args.run)  # ids and items: read before the server takes the CPU
    data = rec.data
    rng = random.Random(args.seed)
    all_users = list(data.user_ids)
    users = rng.sample(all_users, min(args.users, len(all_users)))
    requests = rng.getstate()  # every worker count draws the same requests from here
    items = list(data.item_ids[1:])  # 0 is padding
    new_items = new_items_like(rec, NEW_ITEMS, random.Random(args.seed)) if "chaos" in args.phases else []
    name = args.name or data.name
    del rec, data

    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="serve-load-run-") as tmp:
        served_run, plan = args.run, None
        if "chaos" in args.phases:
            served_run, served, other, published = two_versions(args.run, Path(tmp))
            plan = Plan(served, other, published, new_items)
        for n in counts:
            draws = random.Random()
            draws.setstate(requests)
            work = Workload(users=users, all_users=all_users, items=items, rng=draws, method=args.method)
            if "chaos" in args.phases and n < 2:
                print(f"{n} worker(s): no chaos phase (it kills a worker)")
            n_args = argparse.Namespace(**vars(args))
            n_args.phases = [p for p in args.phases if p != "chaos" or n >= 2]
            runs[str(n)] = serve_and_measure(served_run, n, n_args, work, plan)
    result = {
        "run": args.run,
        "served_run": "a temporary copy of the run with a second version" if served_run != args.run else args.run,
        "data": name,
        "command": " ".join(["python", *sys.argv]),
        "seconds_per_phase": args.seconds,
        "users_sampled": len(users),
        "method": args.method or "run default",
        "batch": args.batch,
        "ingest_clients": args.ingest_clients,
        "concurrency": args.concurrency,
        "saturation_clients": args.saturation_clients,
        "threads": args.threads,
        "cores_usable": len(os.sched_getaffinity(0)),  # the CPU model and core count: "machine"
        "code": code_under_test(),
    }
    if len(runs) == 1:
        result |= next(iter(runs.values()))
    else:
        result["by_workers"] = runs
        result["comparison"] = comparison(runs)
        print(f"comparison: {result['comparison']}")
    write(f"serve_load_{name}", result)


if __name__ == "__main__":
    main()
