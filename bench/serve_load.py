"""The live service under load: the real server on loopback, driven by a bounded async httpx client.

    python bench/serve_load.py RUN [--seconds 60] [--name beauty]

Starts ``recscope serve RUN`` as a subprocess on a free 127.0.0.1 port with a fresh SQLite
store in a temporary directory (the run's own store is never written), waits for
``/health/ready``, warms up, then runs four phases of ``--seconds`` each:

- ``recommend``: GET /users/{id}/recommendations?k=10, open loop at ``--recommend-rps``.
- ``explain``: the same with explain=true (the run's default method) and
  counterfactual=false, open loop at ``--explain-rps``.
- ``ingest``: POST /events, batches of ``--batch`` purchases, ``--ingest-clients`` clients
  each sending the next batch as soon as the last one is answered; events/s over the phase.
- ``mixed``: ``--concurrency`` clients in a closed loop, each picking recommend, explain or a
  small event batch per request; every non-2xx answer, timeout or connection error is an error.

Open loop: request i is due at start + i / rate whatever happened before, and its latency is
counted from that due time, so time spent queued (in the client's bound, in the server) is in
it. Users are a seeded sample of the run's users; ingestion posts to users drawn from all of
them. The load generator shares the machine with the server: the result records the load
average, both processes' CPU and what every other process used, per phase (``--wait-quiet
PERCENT`` waits before each phase until other processes use less than that share of one core).
Writes bench/results/serve_load_<name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
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


async def server_idle(pid: int, longest: float = 600.0) -> float:
    """Wait until the server uses under 5% of a core over 1 s (it may still be working on requests
    the client gave up on); returns the seconds waited."""
    tic = time.perf_counter()
    while time.perf_counter() - tic < longest:
        used = cpu_seconds(pid)
        await asyncio.sleep(1.0)
        if cpu_seconds(pid) - used < 0.05:
            break
    return round(time.perf_counter() - tic, 1)


def peak_rss_mib_of(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


class Server:
    """``recscope serve RUN`` on a free loopback port with a store in a temporary directory."""

    def __init__(self, run: str, ready_timeout: float = 300.0):
        self.run, self.ready_timeout = run, ready_timeout
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
        tic = time.perf_counter()
        self.log = open(self.log_path, "w")  # a file, not a pipe: access logs must never block the server
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        while time.perf_counter() - tic < self.ready_timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1.0).status_code == 200:
                    self.startup_seconds = time.perf_counter() - tic
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the server was not ready after {self.ready_timeout:.0f} s; log: {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self.tmp.cleanup()

    def problems(self, limit: int = 20) -> list[str]:
        """The server log's errors, warnings and non-2xx access lines (the first ``limit``)."""
        self.log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        bad = re.compile(r'ERROR|WARNING|Traceback|Exception|" [345]\d\d\b')
        return [line for line in lines if bad.search(line)][:limit]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


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
        return out


async def call(client: httpx.AsyncClient, tally: Tally, method: str, path: str, due: float, **kw) -> dict | None:
    """One request; latency from ``due`` (perf_counter) to the answer; errors counted by kind."""
    try:
        response = await client.request(method, path, **kw)
    except httpx.HTTPError as error:
        tally.errors[type(error).__name__] += 1
        return None
    elapsed = (time.perf_counter() - due) * 1000
    if not response.is_success:
        tally.errors[f"status {response.status_code}"] += 1
        return None
    tally.latencies_ms.append(elapsed)
    body = response.json()
    for item in body.get("items", []) if isinstance(body, dict) else []:
        if item.get("explanation") is not None:
            tally.explained += 1
            tally.counterfactuals += item["explanation"].get("counterfactual") is not None
    if isinstance(body, dict) and "accepted" in body:
        tally.events += body["accepted"]
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

    def events(self, n: int) -> tuple[str, str, dict]:
        batch = []
        for _ in range(n):
            self.next_event += 1
            batch.append(
                {
                    "event_id": f"load-{self.next_event}",
                    "user_id": self.rng.choice(self.all_users),
                    "item_id": self.rng.choice(self.items),
                    "event": "purchase",
                }
            )
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


async def closed_loop(client, make, clients: int, seconds: float) -> tuple[dict[str, Tally], float]:
    """``clients`` loops, each sending its next request when the last one is answered;
    ``make()`` gives (kind, request) and each kind is tallied apart."""
    tallies: dict[str, Tally] = {}
    start = time.perf_counter()

    async def loop() -> None:
        while time.perf_counter() - start < seconds:
            kind, (method, path, kw) = make()
            await call(client, tallies.setdefault(kind, Tally()), method, path, time.perf_counter(), **kw)

    await asyncio.gather(*(loop() for _ in range(clients)))
    return tallies, time.perf_counter() - start


def mixed(work: Workload, batch: int, weights: dict[str, float]):
    """(kind, request) drawn by ``weights`` over recommend, explain and events."""
    kinds, w = list(weights), list(weights.values())

    def make():
        kind = work.rng.choices(kinds, w)[0]
        return kind, (work.events(batch) if kind == "events" else work.recommend(explain=kind == "explain"))

    return make


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
async def measure(server: Server, work: Workload, args) -> dict:
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout would close them
    # under a request (a client-side race, not a server error).
    limits = httpx.Limits(max_connections=BOUND, max_keepalive_connections=BOUND, keepalive_expiry=2.0)
    phases: dict = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, limits=limits) as client:
        warm = Tally()
        for explain in [False] * 20 + [True] * 5:
            method, path, kw = work.recommend(explain)
            await call(client, warm, method, path, time.perf_counter(), **kw)
        if warm.errors:
            raise RuntimeError(f"warm-up requests failed: {dict(warm.errors)}; server log: {server.log_path}")

        async def phase(name: str, run) -> None:
            if args.phases and name not in args.phases:
                return
            extra = {"server_busy_before_s": await server_idle(server.pid)}
            if args.wait_quiet is not None:
                extra["others_cpu_percent_before"] = await wait_quiet(args.wait_quiet, args.wait_max)
            load, busy = os.getloadavg()[0], machine_busy_seconds()
            server_cpu, own_cpu = cpu_seconds(server.pid), time.process_time()
            result, seconds = await run()
            server_cpu = 100 * (cpu_seconds(server.pid) - server_cpu) / seconds
            own_cpu = 100 * (time.process_time() - own_cpu) / seconds
            machine_cpu = 100 * (machine_busy_seconds() - busy) / seconds
            extra |= {  # percent of one core; the machine has os.cpu_count() of them
                "load_average_1min_before": round(load, 2),
                "server_cpu_percent": round(server_cpu, 1),
                "client_cpu_percent": round(own_cpu, 1),
                "others_cpu_percent": round(max(machine_cpu - server_cpu - own_cpu, 0.0), 1),
            }
            if name == "ingest":
                phases[name] = result["events"].summary(seconds) | extra
            elif isinstance(result, dict):
                phases[name] = {kind: t.summary(seconds) for kind, t in result.items()} | extra
            else:
                phases[name] = result.summary(seconds, getattr(args, f"{name}_rps", None)) | extra
            print(f"{name}: done ({seconds:.1f} s)", flush=True)

        await phase(
            "recommend", lambda: open_loop(client, lambda: work.recommend(False), args.recommend_rps, args.seconds)
        )
        await phase("explain", lambda: open_loop(client, lambda: work.recommend(True), args.explain_rps, args.seconds))
        batches = lambda: ("events", work.events(args.batch))  # noqa: E731
        await phase("ingest", lambda: closed_loop(client, batches, args.ingest_clients, args.seconds))
        mix = mixed(work, args.mixed_batch, MIX)
        await phase("mixed", lambda: closed_loop(client, mix, args.concurrency, args.seconds))
    return phases


def bars(phases: dict) -> dict:
    """Issue 9's bars, each met or not (None when the phase was not run)."""

    def check(phase, ok):
        return None if phase not in phases else bool(ok(phases[phase]))

    mixed_errors = sum(v["errors"] for v in phases.get("mixed", {}).values() if isinstance(v, dict))
    return {
        "recommend_p99_le_25ms_at_50rps": check(
            "recommend", lambda p: p.get("p99_ms", 1e9) <= 25 and p["errors"] == 0 and p["target_rps"] >= 50
        ),
        "explain_p99_le_100ms_at_20rps": check(
            "explain", lambda p: p.get("p99_ms", 1e9) <= 100 and p["errors"] == 0 and p["target_rps"] >= 20
        ),
        "ingest_ge_2000_events_per_s": check("ingest", lambda p: p.get("events_per_s", 0) >= 2000),
        "mixed_32_concurrent_0_errors": check("mixed", lambda p: mixed_errors == 0),
    }


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
        f"{'phase':<18}{'rate':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'errors':>8}{'events/s':>10}{'others%':>9}"
    )
    print(head + "\n" + "-" * len(head))
    rows = []
    for name, p in phases.items():
        if "requests" in p:
            rows.append((name, p, p))
        else:
            rows += [(f"{name}:{kind}", v, p) for kind, v in p.items() if isinstance(v, dict)]
    for name, p, phase in rows:
        cells = [f"{p['achieved_rps']:.1f}/s"]
        cells += [f"{p.get(q, float('nan')):.1f}" for q in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
        line = f"{name:<18}" + "".join(f"{c:>9}" for c in cells) + f"{p['errors']:>8}{p.get('events_per_s', ''):>10}"
        print(line + f"{phase['others_cpu_percent']:>9}")
    print("(ms; open-loop phases count latency from each request's due time;")
    print(" others%: CPU other processes used during the phase, percent of one core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--name", default=None, help="result name (default: the run's data set)")
    parser.add_argument("--users", type=int, default=1000, help="sampled users for recommend/explain")
    parser.add_argument("--recommend-rps", type=float, default=50.0)
    parser.add_argument("--explain-rps", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=500, help="events per POST in the ingest phase")
    parser.add_argument("--ingest-clients", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the mixed phase")
    parser.add_argument("--mixed-batch", type=int, default=20, help="events per POST in the mixed phase")
    parser.add_argument("--method", default=None, help="explanation method (default: the run's)")
    parser.add_argument("--phases", nargs="*", default=None, help="run only these (recommend explain ingest mixed)")
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

    data = Recommender.load(args.run).data  # ids only: read before the server takes the CPU
    rng = random.Random(args.seed)
    all_users = list(data.user_ids)
    work = Workload(
        users=rng.sample(all_users, min(args.users, len(all_users))),
        all_users=all_users,
        items=list(data.item_ids[1:]),  # 0 is padding
        rng=rng,
        method=args.method,
    )
    name = args.name or data.name
    del data
    with Server(args.run) as server:
        phases = asyncio.run(measure(server, work, args))
        server_rss = peak_rss_mib_of(server.pid)
        problems = server.problems()
        startup = server.startup_seconds
    table(phases)
    result = {
        "run": args.run,
        "data": name,
        "command": " ".join(["python", *sys.argv]),
        "seconds_per_phase": args.seconds,
        "users_sampled": len(work.users),
        "method": args.method or "run default",
        "batch": args.batch,
        "ingest_clients": args.ingest_clients,
        "concurrency": args.concurrency,
        "server_startup_s": round(startup, 2),
        "server_peak_rss_mib": server_rss,
        "code": code_under_test(),
        "phases": phases,
        "bars": bars(phases),
        "server_log_problems": problems,
    }
    write(f"serve_load_{name}", result)


if __name__ == "__main__":
    main()
