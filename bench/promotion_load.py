"""A promotion under load (issue 23): mixed traffic through the real service while a fine-tune
started in its middle is promoted; every answer checked for the one version that computed it.

    python bench/promotion_load.py [--data synthetic:users=1000,items=240,seed=0] [--seconds 60]
        [--clients 16] [--at 20] [--budget 15] [--name promotion_load]
    python bench/promotion_load.py --smoke                 # seconds: the tiny shop, for tests/test_promotion_load.py
    python bench/promotion_load.py --run RUN --data SPEC   # a run trained on that synthetic shop (copied)

**The run.** ``recscope train --data SPEC --config configs/tiny.yaml`` with ``SETTINGS`` into a
temporary directory, or a copy of ``--run``: the fine-tune writes a version into it, so the
run given is never written.

**The service.** ``recscope serve RUN --workers 2 --threads 1`` (``serve_load.Server``:
loopback, a fresh SQLite store in a temporary directory, a write key every request carries),
every worker warmed up (``serve_load.warm_up``) before the clock starts.

**The traffic.** ``--clients`` clients in a closed loop (each sends its next request when the
last is answered), each request drawn by ``MIX``: a top-10 for a known user, the same explained
(the run's default method, no counterfactuals), one item's explanation (with its
counterfactual, as the route gives it), a what-if (the user's last item removed, another
added), a batch of ``EVENT_BATCH`` purchases (POST /events), a click or "explanation helpful"
on a list served before (POST /feedback), a page of the catalog (GET /items). Reads are about
the *probe users*: a seeded sample of ``--probe-users`` of the run's users, whose histories and
dismissals nothing ever changes (events go to the other users; feedback is never a dismissal),
so what the service answers them depends on the version alone. Any answer that is not 2xx, and
any timeout or connection error, is an error, 503 "busy" included: the bar is 0.

**The lesson.** Each event is a purchase, by a non-probe user, of an item of the *fashion*: a
seeded set of ``--fashion`` items, one the user does not own yet. The base model has no reason
to rank them first; the events teach it to, and the fine-tune's gate (each store user's newest
event held out, NDCG@10 not worse than the parent's by more than ``finetune.tolerance``, the
run's default) measures exactly that: the fine-tune is promoted by what it learned, with no
override.

**The promotion.** At ``--at`` s, once ``--min-events`` events are stored, POST /model/finetune
(``--budget`` s of training) and GET /model/jobs/{id} until it ends (``finetune_replay.finetune_job``),
then /health/ready on new connections until every worker names the new version
(``finetune_replay.Api.served_everywhere``). The clients go on until ``--seconds`` have passed
and at least ``--tail`` s after that.

**The check.** After the traffic the bench loads both versions itself (one thread, as the
workers) and recomputes every probe answer under each: a list's items and scores, an explained
list's explanations (score and every history weight), one item's score, rank and history
weights, a what-if's lists before and after. An answer matches a version when every part does;
it is ``mixed`` when each part matches a version but no version matches them all, ``neither``
when a part matches none. Lists are also labelled (``model_version``): the label must be the
version that computed them. Per worker (``X-Recscope-Worker``): when it answered with the new
version first, when with the old one last, and how many answers sent after its first new one
came from the old one (a correct service: none, since a request reads the worker's service once,
after the swap). Latency percentiles before, during (job and switch) and after.
Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import load_average, write  # noqa: E402
from finetune_replay import Api, finetune_job  # noqa: E402
from recscope.ranking import Ranking  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from serve_load import RECSCOPE, TIMEOUT, WORKER, Server, Tally, Workload, warm_up  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("model.d_model=64", "model.max_len=30", "train.epochs=10")  # on configs/tiny.yaml
# The share of each request kind: reads of the model first, then the writes and the catalog.
MIX = {
    "recommend": 0.30,
    "explained": 0.15,
    "explanation": 0.15,
    "what_if": 0.10,
    "events": 0.15,
    "feedback": 0.10,
    "items": 0.05,
}
MODEL_KINDS = ("recommend", "explained", "explanation", "what_if")  # answers a version computes
EVENT_BATCH = 10  # purchases per POST /events, each by another user
K = 10
SERVED_KEPT = 200  # the newest probe lists feedback is drawn from
# A probe answer matches a version when its numbers are that version's within these: two
# versions differ far more (a fine-tune moves every weight), the same one by float noise only.
RTOL, ATOL = 1e-3, 1e-4
SMOKE = {
    "data": "synthetic:users=200,items=120,seed=5",
    "seconds": 8.0,
    "clients": 4,
    "at": 1.5,
    "budget": 3.0,
    "tail": 1.5,
    "probe_users": 6,
    "fashion": 16,
    "min_events": 60,  # finetune.min_cases (20) buyers at the least
    "method": "occlusion",  # the check recomputes every explanation: Shapley's would cost the test seconds
}


# ---------------------------------------------------------------------------------------
# the run and the plan
# ---------------------------------------------------------------------------------------
def base_run(args: argparse.Namespace, work: Path) -> tuple[Path, float]:
    """The run the fine-tune writes its version into: trained here, or a copy of ``--run``."""
    out = work / "run"
    if args.run:
        shutil.copytree(args.run, out)
        return out, 0.0
    tic = time.perf_counter()
    command = [str(RECSCOPE), "train", "--data", args.data, "--config", str(ROOT / "configs" / "tiny.yaml")]
    command += [a for s in (*SETTINGS, *args.set) for a in ("--set", s)] + ["--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"training the base run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return out, time.perf_counter() - tic


@dataclass
class Plan:
    """Who is asked about, what is bought, and each probe user's what-if and explained items."""

    probe: list[str]  # the users every read is about; never written to
    fashion: list[str]  # the items the events buy
    items: list[str]  # the catalog (GET /items pages)
    what_if: dict[str, tuple[str, str]]  # probe user -> (item removed: their last, item added)
    explained_items: dict[str, list[str]]  # probe user -> items whose explanation is asked (base top-10)
    unowned: dict[str, list[str]]  # buyer -> the fashion items they do not own yet (none: not a key)
    rng: random.Random
    next_id: int = 0

    def events(self) -> dict[str, Any] | None:
        """A POST /events body: ``EVENT_BATCH`` buyers, each buying a fashion item they do not own;
        None once every buyer owns every fashion item."""
        batch = []
        for user in self.rng.sample(sorted(self.unowned), min(EVENT_BATCH, len(self.unowned))):
            item = self.unowned[user].pop(self.rng.randrange(len(self.unowned[user])))
            if not self.unowned[user]:
                del self.unowned[user]
            self.next_id += 1
            batch.append({"event_id": f"pl-{self.next_id}", "user_id": user, "item_id": item, "event": "purchase"})
        return {"events": batch} if batch else None


def make_plan(base: Recommender, args: argparse.Namespace) -> Plan:
    rng = random.Random(args.seed)
    users = list(base.data.user_ids)
    probe = sorted(rng.sample(users, args.probe_users))
    probing = set(probe)
    items = list(base.data.item_ids[1:])  # 0 is padding
    fashion = rng.sample(items, args.fashion)
    what_if, explained, unowned = {}, {}, {}
    for user in users:
        history = [base.data.item_ids[i] for i in base.history(user)]
        if user not in probing:
            unowned[user] = [i for i in fashion if i not in history]
            continue
        what_if[user] = (history[-1], rng.choice([i for i in items if i not in history]))
        explained[user] = [r.item_id for r in base.recommend(user=user, k=K)]
    return Plan(
        probe=probe,
        fashion=fashion,
        items=items,
        what_if=what_if,
        explained_items=explained,
        unowned={u: left for u, left in unowned.items() if left},
        rng=rng,
    )


# ---------------------------------------------------------------------------------------
# the traffic
# ---------------------------------------------------------------------------------------
@dataclass
class Reply:
    """One request as the client saw it (times: perf_counter)."""

    kind: str
    sent: float
    done: float
    worker: int | None  # X-Recscope-Worker; None: no answer
    error: str | None  # "status 503", "ReadTimeout", ...; None: 2xx
    label: str | None = None  # the list's model_version
    user: str | None = None  # the probe user it is about
    content: Any = None  # what the check recomputes (see ``content``)
    version: str | None = None  # the version that computed it (the check)
    check: str | None = None  # "one", "mixed", "neither" or "ambiguous" (see ``verdict``)


def content(kind: str, body: dict) -> Any:
    """The numbers of an answer a version computed: (item, score[, explanation score, weights])
    per listed item; one explanation's (item, score, rank, weights); what-if's two lists."""

    def weights(e: dict) -> list[float | None]:
        return [h["weight"] for h in e["history"]]

    if kind == "recommend":
        return [(i["item_id"], i["score"]) for i in body["items"]]
    if kind == "explained":
        return [(i["item_id"], i["score"], i["explanation"]["score"], weights(i["explanation"])) for i in body["items"]]
    if kind == "explanation":
        return (body["item_id"], body["score"], body["rank"], weights(body))
    if kind == "what_if":
        return (
            [(i["item_id"], i["score"]) for i in body["before"]],
            [(i["item_id"], i["score"]) for i in body["after"]],
        )
    return None


class Traffic:
    """The clients' requests, drawn by ``MIX`` from the plan, and every answer kept."""

    def __init__(self, client: httpx.AsyncClient, plan: Plan, method: str | None):
        self.client, self.plan = client, plan
        self.replies: list[Reply] = []
        self.served: deque[tuple[str, str, list[str]]] = deque(maxlen=SERVED_KEPT)  # (request_id, user, items)
        self.events = 0  # accepted
        self.exhausted = 0  # event batches not sent: no buyer had a fashion item left to buy
        self.kinds, self.weights = list(MIX), list(MIX.values())
        self.lists = Workload(users=plan.probe, all_users=plan.probe, items=plan.items, rng=plan.rng, method=method)
        self.method = {"method": method} if method else {}

    def request(self, kind: str) -> tuple[str | None, str, str, dict]:
        """(probe user or None, method, path, httpx keywords) of one request of ``kind``."""
        plan, rng = self.plan, self.plan.rng
        if kind in ("recommend", "explained"):
            method, path, kw = self.lists.recommend(explain=kind == "explained")
            return path.split("/")[2], method, path, kw
        if kind == "explanation":
            user = rng.choice(plan.probe)
            item = rng.choice(plan.explained_items[user])
            params = {"k": K} | self.method
            return user, "GET", f"/users/{user}/recommendations/{item}/explanation", {"params": params}
        if kind == "what_if":
            user = rng.choice(plan.probe)
            remove, add = plan.what_if[user]
            return user, "POST", "/what-if", {"json": {"user_id": user, "remove": [remove], "add": [add], "k": K}}
        if kind == "events":
            return None, "POST", "/events", {"json": plan.events()}
        if kind == "feedback":
            request_id, user, items = rng.choice(self.served)
            action = rng.choice(("click", "explanation_helpful"))
            body = {"request_id": request_id, "user_id": user, "item_id": rng.choice(items), "action": action}
            return None, "POST", "/feedback", {"json": body}
        return None, "GET", "/items", {"params": {"limit": 50, "offset": rng.randrange(len(plan.items))}}

    async def one(self) -> None:
        kind = self.plan.rng.choices(self.kinds, self.weights)[0]
        if kind == "feedback" and not self.served:
            kind = "recommend"  # nothing served yet to give feedback on
        if kind == "events" and not self.plan.unowned:
            kind, self.exhausted = "items", self.exhausted + 1  # every buyer owns the whole fashion
        user, method, path, kw = self.request(kind)
        sent = time.perf_counter()
        try:
            response = await self.client.request(method, path, **kw)
        except httpx.HTTPError as error:
            self.replies.append(Reply(kind, sent, time.perf_counter(), None, type(error).__name__))
            return
        done = time.perf_counter()
        worker = int(response.headers[WORKER]) if WORKER in response.headers else None
        if not response.is_success:
            self.replies.append(Reply(kind, sent, done, worker, f"status {response.status_code}"))
            return
        body = response.json()
        label = body.get("model_version")
        if kind in ("recommend", "explained"):
            self.served.append((body["request_id"], user, [i["item_id"] for i in body["items"]]))
        if kind == "events":
            self.events += body["accepted"]
        self.replies.append(Reply(kind, sent, done, worker, None, label, user, content(kind, body)))

    async def run(self, clients: int, going) -> None:
        async def loop() -> None:
            while going():
                await self.one()

        await asyncio.gather(*(loop() for _ in range(clients)))


async def promote(api: Api, traffic: Traffic, args: argparse.Namespace, start: float) -> dict[str, Any]:
    """At ``args.at`` s (and ``args.min_events`` events stored): the fine-tune job, polled until it
    ends, then every worker's /health/ready until each names the promoted version. Times are
    perf_counter, but ``created`` (the version's, epoch seconds)."""
    await asyncio.sleep(max(0.0, start + args.at - time.perf_counter()))
    while traffic.events < args.min_events:
        await asyncio.sleep(0.05)
    out: dict[str, Any] = {"events_before": traffic.events, "posted": time.perf_counter()}
    out["job"] = job = await asyncio.to_thread(finetune_job, api, args.budget)
    out["ended_seen"] = time.perf_counter()
    version = job["result"]["version"]
    if job["result"]["promoted"]:
        await asyncio.to_thread(api.served_everywhere, version)
    out["health_confirmed"] = time.perf_counter()
    listed = (await asyncio.to_thread(api.call, "GET", "/model")).json()["versions"]
    out["created"] = next((v["created"] for v in listed if v["id"] == version), None)
    return out


# ---------------------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------------------
class Truth:
    """What one version answers a probe user, computed here (cached per user)."""

    def __init__(self, run: Path, version: str, plan: Plan, method: str | None):
        self.rec, self.plan, self.method = Recommender.load(run, version), plan, method
        self._top: dict[str, list] = {}
        self._ranking: dict[str, Ranking] = {}
        self._explained: dict[str, dict] = {}
        self._what_if: dict[str, tuple] = {}
        self.weights_checked = 0  # single explanations whose weights were compared (see ``parts``)

    def top(self, user: str) -> list[tuple[str, float]]:
        if user not in self._top:
            self._top[user] = [(r.item_id, r.score) for r in self.rec.recommend(user=user, k=K)]
        return self._top[user]

    def ranking(self, user: str) -> Ranking:
        """The user's whole catalog ranked, as ``Recommender.explain`` ranks it for one item."""
        if user not in self._ranking:
            rec, resolved = self.rec, self.rec.resolve(user)
            scores = rec.scores(resolved.indices, False, rec.event_codes(resolved))
            self._ranking[user] = Ranking.of(scores, owned=resolved.indices)
        return self._ranking[user]

    def explained(self, user: str) -> dict[str, tuple[float, list]]:
        """Item -> (score, history weights) of the explained top-10, as the list route explains it."""
        if user not in self._explained:
            done = self.rec.explain(user=user, top=K, k=K, method=self.method, counterfactual=False)
            self._explained[user] = {e.item_id: (e.score, [h["weight"] for h in e.to_dict()["history"]]) for e in done}
        return self._explained[user]

    def what_if(self, user: str) -> tuple:
        if user not in self._what_if:
            remove, add = self.plan.what_if[user]
            got = self.rec.what_if(user=user, remove=[remove], add=[add], k=K)
            self._what_if[user] = tuple([(r["item_id"], r["score"]) for r in got[side]] for side in ("before", "after"))
        return self._what_if[user]

    def parts(self, reply: Reply) -> list[bool | None]:
        """Which parts of the answer this version computed (None: not checked): a list, then each
        explanation's score and its history weights; one explanation's score and rank, then its
        weights (checked when the item is in this version's explained top-10: explaining every
        item alone again would cost the check more than the traffic); what-if's lists before and
        after."""
        got, user = reply.content, reply.user
        if reply.kind == "recommend":
            return [ranked(got, self.top(user))]
        if reply.kind == "explained":
            truth = self.explained(user)
            listed = ranked([(i, s) for i, s, _, _ in got], self.top(user))
            scores = [item in truth and close([s, e], [truth[item][0]] * 2) for item, s, e, _ in got]
            weights = [item in truth and close(w, truth[item][1]) for item, _, _, w in got]
            return [listed, *scores, *weights]
        if reply.kind == "explanation":
            item, score, rank, weights = got
            ranking, index = self.ranking(user), self.rec.data.item_index(item)
            scored = rank == ranking.rank_of(index) and close([score], [float(ranking.scores[index])])
            if item not in self.explained(user):
                return [scored, None]
            self.weights_checked += 1
            return [scored, close(weights, self.explained(user)[item][1])]
        return [ranked(side, truth) for side, truth in zip(got, self.what_if(user), strict=True)]


def close(got: list[float | None], want: list[float | None]) -> bool:
    if len(got) != len(want) or [g is None for g in got] != [w is None for w in want]:
        return False
    pairs = [(g, w) for g, w in zip(got, want, strict=True) if g is not None]
    return not pairs or bool(np.allclose(*zip(*pairs, strict=True), rtol=RTOL, atol=ATOL))


def ranked(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> bool:
    return [i for i, _ in got] == [i for i, _ in want] and close([s for _, s in got], [s for _, s in want])


def verdict(reply: Reply, truths: dict[str, Truth]) -> tuple[str, str | None]:
    """("one", version) when one version computed every part checked; else ("mixed", None) when
    each part is some version's, ("neither", None) when a part is none's, ("ambiguous", None)
    when the versions agree on the whole answer."""
    parts = {v: t.parts(reply) for v, t in truths.items()}
    whole = [v for v, p in parts.items() if False not in p]
    if len(whole) == 1:
        return "one", whole[0]
    if len(whole) > 1:
        return "ambiguous", None
    columns = zip(*parts.values(), strict=True)
    return ("mixed" if all(True in c or set(c) == {None} for c in columns) else "neither"), None


# ---------------------------------------------------------------------------------------
# the summary
# ---------------------------------------------------------------------------------------
def percentiles(replies: list[Reply], seconds: float) -> dict[str, Any]:
    """serve_load's Tally summary of these answers (latency from send to answer)."""
    tally = Tally()
    for r in replies:
        if r.error is None:
            tally.latencies_ms.append((r.done - r.sent) * 1000)
            tally.by_worker[r.worker] += 1
        else:
            tally.errors[r.error] += 1
    out = tally.summary(max(seconds, 1e-9))
    return {k: v for k, v in out.items() if k not in ("by_worker",)}


def switches(model: list[Reply], old: str, new: str) -> dict[int, dict[str, Any]]:
    """Per worker: its answers by version, its first answer of the new version, its last of the
    old, and the old ones sent after that first new one was answered (``back``)."""
    workers: dict[int, dict[str, Any]] = {}
    for r in sorted(model, key=lambda r: r.done):
        w = workers.setdefault(r.worker, {"answers": 0, "old": 0, "new": 0, "first_new": None, "last_old": None})
        w["answers"] += 1
        if r.version == new:
            w["new"] += 1
            w["first_new"] = w["first_new"] or r
        elif r.version == old:
            w["old"] += 1
            w["last_old"] = r if w["last_old"] is None or r.sent > w["last_old"].sent else w["last_old"]
    for w in workers.values():
        first = w["first_new"]
        w["back"] = [r for r in model if r.worker is not None and first is not None]
        w["back"] = [r for r in w["back"] if r.worker == first.worker and r.version == old and r.sent > first.done]
    return workers


def summarise(
    replies: list[Reply], versions: dict[str, str], step: dict[str, Any], start: float, end: float
) -> dict[str, Any]:
    """Errors, versions (by label and by content), each worker's switch, latency by phase: before
    the job was posted, during (the job, until every worker had answered with the new version),
    after."""
    old, new = versions["old"], versions["new"]
    rel = lambda t: None if t is None else round(t - start, 3)  # noqa: E731
    model = [r for r in replies if r.kind in MODEL_KINDS and r.error is None]
    workers = switches(model, old, new)
    firsts = [w["first_new"] for w in workers.values()]
    posted = step["posted"]
    switched = max(r.done for r in firsts) if all(firsts) else end
    phases = {
        "before": [r for r in replies if r.sent < posted],
        "during": [r for r in replies if posted <= r.sent < switched],
        "after": [r for r in replies if r.sent >= switched],
    }
    spans = {"before": posted - start, "during": switched - posted, "after": end - switched}
    latency = {
        phase: {"all": percentiles(rs, spans[phase])}
        | {kind: percentiles([r for r in rs if r.kind == kind], spans[phase]) for kind in MIX}
        for phase, rs in phases.items()
    }
    failed = [r for r in replies if r.error is not None]
    name = {old: "old", new: "new"}
    labelled = [r for r in model if r.label is not None]
    back = [r for w in workers.values() for r in w["back"]]
    return {
        "requests": len(replies),
        "errors": len(failed),
        "errors_by_status": dict(Counter(r.error for r in failed)),
        "errors_by_kind": dict(Counter(r.kind for r in failed)),
        "requests_by_kind": dict(Counter(r.kind for r in replies)),
        "model_answers": {
            "checked": len(model),
            "one_version": sum(r.check == "one" for r in model),
            "mixed": sum(r.check == "mixed" for r in model),
            "neither": sum(r.check == "neither" for r in model),
            "ambiguous": sum(r.check == "ambiguous" for r in model),
            "labelled": len(labelled),
            "label_is_the_computing_version": sum(r.label == r.version for r in labelled),
            "labels": dict(Counter(name.get(r.label, r.label) for r in labelled)),
            "unlabelled_by_kind": dict(Counter(r.kind for r in model if r.label is None)),
        },
        "answers_by_phase_and_version": {
            phase: dict(Counter(name.get(r.version, r.check) for r in rs if r in model)) for phase, rs in phases.items()
        },
        "workers": {
            str(pid): {
                "answers": w["answers"],
                "old": w["old"],
                "new": w["new"],
                "first_new_answered_s": rel(w["first_new"] and w["first_new"].done),
                "last_old_sent_s": rel(w["last_old"] and w["last_old"].sent),
                "old_after_new": len(w["back"]),
            }
            for pid, w in sorted(workers.items())
        },
        "every_worker_answered_new_s": rel(switched) if all(firsts) else None,
        "old_after_new": len(back),
        "old_after_new_first": [
            {"worker": r.worker, "kind": r.kind, "sent_s": rel(r.sent), "done_s": rel(r.done)} for r in back[:10]
        ],
        "latency_ms": latency,
        "phase_seconds": {k: round(v, 2) for k, v in spans.items()},
    }


# ---------------------------------------------------------------------------------------
# the whole bench
# ---------------------------------------------------------------------------------------
async def drive(server: Server, plan: Plan, args: argparse.Namespace) -> tuple:
    """Warm up, then the traffic with the promotion in its middle; (traffic, step, start, end)."""
    headers = {"X-API-Key": server.api_key}
    # As serve_load: idle connections dropped before uvicorn's keep-alive timeout could close them under a request.
    limits = httpx.Limits(max_connections=4 * args.clients, keepalive_expiry=2.0)
    new_connections = httpx.Limits(max_keepalive_connections=0)
    api = Api(server)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, limits=limits, headers=headers) as client,
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, limits=new_connections, headers=headers) as probe,
    ):
        tic = time.perf_counter()
        await warm_up(probe, server, Workload(users=plan.probe, all_users=plan.probe, items=plan.items, rng=plan.rng))
        traffic = Traffic(client, plan, args.method)
        finished = asyncio.Event()
        start = time.perf_counter()

        def going() -> bool:
            return time.perf_counter() - start < args.seconds or not finished.is_set()

        loop = asyncio.create_task(traffic.run(args.clients, going))
        try:
            step = await promote(api, traffic, args, start)
            step["warm_up_seconds"] = start - tic
            await asyncio.sleep(args.tail)
        finally:
            finished.set()
            await loop
            api.close()
        return traffic, step, start, time.perf_counter()


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    tic = time.perf_counter()
    torch.set_num_threads(1)  # the check recomputes answers as a worker does (recscope serve --threads 1)
    with tempfile.TemporaryDirectory(prefix="recscope-promotion-load-") as tmp:
        run, train_seconds = base_run(args, Path(tmp))
        base = Recommender.load(run)
        plan = make_plan(base, args)
        load_before = load_average()
        with Server(str(run), workers=args.workers, threads=1, api_key=secrets.token_hex(16)) as server:
            started, workers_before = server.startup_seconds, server.workers()
            traffic, step, start, end = asyncio.run(drive(server, plan, args))
            problems = server.problems()
            workers_after = server.workers()
        stopped = time.perf_counter() - end
        job = step["job"]
        result = job["result"]
        versions = {"old": result["parent"], "new": result["version"]}
        lap = time.perf_counter()
        truths = {v: Truth(run, v, plan, args.method) for v in versions.values() if v is not None}
        replies = traffic.replies
        for r in replies:
            if r.kind in MODEL_KINDS and r.error is None:
                r.check, r.version = verdict(r, truths)
        check_seconds = time.perf_counter() - lap
    summary = summarise(replies, versions, step, start, end)
    epoch = time.time() - (time.perf_counter() - start)  # the traffic's start in epoch seconds
    return {
        "command": " ".join(["python", "bench/promotion_load.py", *sys.argv[1:]]),
        "data": args.data,
        "base_settings": ["configs/tiny.yaml", *SETTINGS, *args.set] if not args.run else ["--run (copied)"],
        "workers": args.workers,
        "worker_pids": {"before": workers_before, "after": workers_after},
        "clients": args.clients,
        "mix": MIX,
        "method": args.method or "the run's default",
        "event_batch": EVENT_BATCH,
        "probe_users": len(plan.probe),
        "fashion_items": plan.fashion,
        "traffic_seconds": round(end - start, 2),
        "events_accepted": traffic.events,
        "event_batches_not_sent": traffic.exhausted,
        "promotion": {
            "events_stored_when_posted": step["events_before"],
            # seconds from the traffic's start: the job posted, its version published (and
            # promoted: the store names it to every worker), its process ended, the poll saw it,
            # /health/ready of every worker named it (probed after the poll saw the end)
            "posted_s": round(step["posted"] - start, 3),
            "version_created_s": None if step["created"] is None else round(step["created"] - epoch, 3),
            "job_finished_s": round(job["finished"] - epoch, 3),
            "job_end_seen_s": round(step["ended_seen"] - start, 3),
            "health_confirmed_s": round(step["health_confirmed"] - start, 3),
            "job_seconds": round(job["seconds"], 2),
            "command_seconds": result["seconds"],
            "stages": job["stages"],
            "verdict": result["verdict"],
            "promoted": result["promoted"],
            "reason": result["reason"],
            "metrics": result["metrics"],
            "lineage": result["lineage"],
            "versions": versions,
        },
        **summary,
        "explanation_weights_checked": {name: truths[v].weights_checked for name, v in versions.items() if v in truths},
        "bench_seconds": {
            "train": round(train_seconds, 1),
            "server_start": round(started, 1),
            "warm_up": round(step["warm_up_seconds"], 1),
            "traffic": round(end - start, 1),
            "server_stop": round(stopped, 1),
            "check": round(check_seconds, 1),
        },
        "bars": {
            "promoted": bool(result["promoted"]),
            "zero_errors": summary["errors"] == 0,
            "every_answer_one_version": summary["model_answers"]["one_version"] == summary["model_answers"]["checked"],
            "every_label_its_version": summary["model_answers"]["label_is_the_computing_version"]
            == summary["model_answers"]["labelled"],
            "no_old_answer_after_a_new_one_per_worker": summary["old_after_new"] == 0,
        },
        "server_problems": problems,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "seconds": round(time.perf_counter() - tic, 1),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="synthetic:users=1000,items=240,seed=0", help="the synthetic shop")
    parser.add_argument("--run", help="a run trained on --data (copied; default: train one)")
    parser.add_argument("--set", action="append", default=[], help="another config override of the base run")
    parser.add_argument("--seconds", type=float, default=60.0, help="traffic, at the least")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--at", type=float, default=20.0, help="seconds into the traffic the fine-tune starts")
    parser.add_argument("--min-events", type=int, default=1000, help="events stored before it starts")
    parser.add_argument("--budget", type=float, default=15.0, help="seconds the fine-tune job may train")
    parser.add_argument("--tail", type=float, default=10.0, help="traffic after every worker serves the new version")
    parser.add_argument("--probe-users", type=int, default=60, help="the users every read is about")
    parser.add_argument("--fashion", type=int, default=24, help="the items the events buy")
    parser.add_argument("--method", help="the explanation method asked for (default: the run's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="promotion_load", help="bench/results/<name>.json")
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.set = [*args.set, "train.epochs=2"]
        args.name = args.name if args.name != "promotion_load" else "promotion_load_smoke"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    payload = run_bench(args)
    write(args.name, payload)
    print(json.dumps({k: payload[k] for k in ("promotion", "bars", "errors_by_status", "workers")}, indent=1)[:4000])


if __name__ == "__main__":
    main()
