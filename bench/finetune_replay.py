"""Learning from a replayed stream (issue 23): the fine-tune loop end to end through the real service.

    python bench/finetune_replay.py [--data synthetic:users=3000,items=584,seed=0] [--stream-users 600]
        [--per-user 6] [--tail 2] [--rounds 3] [--budget 60] [--workers 2] [--name finetune_replay]
    python bench/finetune_replay.py --smoke            # seconds: a tiny shop, for tests/test_finetune_replay.py
    python bench/finetune_replay.py --run RUN --data SPEC   # a run trained on that synthetic shop (copied)

**The base run.** ``recscope train --data SPEC --config configs/tiny.yaml`` with ``BASE_SETTINGS``
(64-wide, 30 items read, 20 epochs with early stopping; ``finetune.ignore_window`` 2 s so the
bench's ignored impressions are old enough to count), into a temporary directory; or a copy of
``--run`` (its shop must be ``--data``: the catalog is checked). The run is never the user's.

**The stream: what happens after training that the base model cannot know.** Written by
:func:`make_stream` from ``--seed``, nothing hand-made:

- *A launch.* For every device subcategory of the shop (Phones, Laptops, Cameras, Coffee
  machines, Bikes) and every brand of its department, a new device "<brand> <noun> Nova" and its
  accessories "<brand> <accessory> for <noun> Nova" (20 devices, 60 accessories on the full
  shop): ``PUT /items`` with the attributes of an item of the same brand, subcategory and kind
  as the service shows them (so the model can read every field), and their own titles.
- *Shoppers.* ``--stream-users`` existing shoppers (seeded sample) buy ``--per-user`` more items
  each, their training history being their past. Each purchase is, with chance ``P_LAUNCH``
  while they own no launched device, a launched device of a department drawn by their taste
  and of the brand they bought most there (mechanism "launch"); else the shop's own next
  purchase (``recscope.data.synthetic._next_purchase``: accessory after device, brand loyalty,
  category interest, popularity) over the grown catalog, their taste estimated from their
  history (departments' counts + the shop's Dirichlet prior 0.4), popularity from the shop's
  purchase counts (launched items: the mean). So after buying a launched device, a shopper
  buys one of *its* accessories with the shop's chance (0.45): a pairing only an id embedding
  learned from the stream can hold; the frozen model has the new items' cold-start scores.
- *Dismissals.* ``DISMISSERS`` of the shoppers dislike one brand in one department (that of
  their last training purchase): they dismiss it when shown (``POST /feedback`` dismiss for every
  item of it in a top-``DISMISS_K`` list, once, before their first new purchase) and never buy
  it there again (a purchase of it is drawn again).
- *Ignored impressions.* Before each round of purchases every stream shopper is shown a top-10
  (``GET /users/{id}/recommendations``); what they do not buy within the window is a negative.

**The replay.** ``recscope serve RUN --workers 2`` (``serve_load.Server``: loopback, a fresh
SQLite store in a temporary directory, a write key). The stream's first part (each shopper's
purchases but the last ``--tail``) goes in ``--rounds`` rounds: impressions, then the round's
purchases (``POST /events`` in batches of ``BATCH``). Then ``POST /model/finetune`` (a real job
of the service, ``--budget`` seconds of training) is polled at ``GET /model/jobs/{id}`` until it
ends (``JOB_LONGEST``), and ``/health/ready`` is probed on new connections until both workers
name the version served.

**The measurement: the held-out tail.** The last ``--tail`` purchases of each stream shopper,
never posted before the fine-tune. For each tail position: the frozen (base) version is served
(``PUT /model``, both workers confirmed), every shopper's ``GET /users/{id}/recommendations?k=10``
is read, then the fine-tuned version the same way, then that position's purchases are posted
(so the next position's history holds them). A case is a hit when the held-out item is in the
list; HR@10 and NDCG@10 by ``recscope.metrics`` over every case, over the cases whose item is a
launched one, and over the others; also the share of lists holding a launched item, and each
list's ``model_version`` and worker (``X-Recscope-Worker``). The ranks of the disliked brand and
department: the whole catalog ranked for the shopper's live history as the service reads it
(``GET /users/{id}/recommendations?k=1000``: with their dismissals, as events of the history for a
version that reads them, and their dismissed items left out) under each version. (Ranking the
items of ``GET /users/{id}/history`` with ``POST /recommendations``, as this bench did before,
reads an item list: every dismissal would be read as a purchase, or dropped.)

**The dismiss bar** (issue 23: after the next fine-tune, items of the dismissed item's brand and
category drop in that user's ranking, over >= 200 users). Per shopper, the median rank (as
above) of the unowned, undismissed items of a (brand, department) pair under the frozen and the
fine-tuned version, and its change (positive: the items fell). The pair: a dismisser's disliked
one (those who dismissed something); for the shoppers who dislike nothing (the controls), that
of their last training purchase, the pair a dismisser would have disliked. The bar is met when
at least ``BAR_USERS`` dismissers are measured and their median change is positive and above the
controls' (a fine-tune moves every ranking; the controls say how far without a dismissal).
Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import load_average, write  # noqa: E402
from recscope.data.synthetic import ACCESSORIES, BRANDS, DEPARTMENTS, generate, parse_spec  # noqa: E402
from recscope.data.synthetic import _next_purchase as next_purchase  # noqa: E402
from recscope.metrics import hit_rate, ndcg  # noqa: E402
from serve_load import RECSCOPE, WORKER, Server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE_SETTINGS = (
    "model.d_model=64",
    "model.max_len=30",
    "train.epochs=20",
    "finetune.ignore_window=2",
)
SMOKE = {"data": "synthetic:users=200,items=120,seed=5", "stream_users": 50, "per_user": 4, "tail": 1, "rounds": 2}
P_LAUNCH = 0.35  # chance a purchase is a launched device, while the shopper owns none
DISMISSERS = 0.45  # share of the stream's shoppers who dislike a brand in a department (>= BAR_USERS of 600 dismiss)
BAR_USERS = 200  # the dismiss bar is measured over at least this many dismissers
DISMISS_K = 20  # the list a dismisser dismisses the disliked brand's items from
BATCH = 500  # events per POST /events
CLIENTS = 4  # requests in flight
JOB_LONGEST = 600.0  # s: the fine-tune job is given up after this
SWITCH_LONGEST = 30.0  # s: a version not served by every worker after this is an error
MISS = 10**9  # the 0-based rank of an item not in the top 10


# ---------------------------------------------------------------------------------------
# the stream
# ---------------------------------------------------------------------------------------
@dataclass
class Shopper:
    user: str
    purchases: list[tuple[str, str]]  # (item_id, mechanism), in order
    dislike: tuple[str, str] | None  # (brand, department) they dismiss and stop buying
    last: tuple[str, str] = ("", "")  # (brand, department) of their last training purchase (a dismisser's dislike)


@dataclass
class Stream:
    new_items: list[dict[str, Any]]  # item_id, title, brand, subcategory, kind, sibling (an item to copy fields from)
    shoppers: list[Shopper]
    brand: dict[str, str] = field(default_factory=dict)  # item_id -> brand, every item
    department: dict[str, str] = field(default_factory=dict)  # item_id -> department

    def new_ids(self) -> set[str]:
        return {i["item_id"] for i in self.new_items}


def _catalog_arrays(catalog) -> dict[str, Any]:
    """The shop's catalog as the generator's arrays: department, subcategory, brand, kind, the
    device of each accessory (an accessory follows its device in catalog order)."""
    devices = {sub for subs in DEPARTMENTS.values() for sub, is_device, _ in subs if is_device}
    dept, sub = zip(*(c.split("|") for c in catalog["category"]), strict=True)
    kind = ["device" if s in devices else "accessory" if s.endswith(" accessories") else "regular" for s in sub]
    device_of, last = [], -1
    for i, k in enumerate(kind):
        last = i if k == "device" else last
        device_of.append(last if k == "accessory" else -1)
    return {
        "item_id": list(catalog["item_id"]),
        "title": list(catalog["title"]),
        "brand": list(catalog["brand"]),
        "department": list(dept),
        "subcategory": list(sub),
        "kind": kind,
        "device_of": device_of,
        "price": [float(p) for p in catalog["price"]],
    }


def _launch(arrays: dict[str, Any]) -> list[dict[str, Any]]:
    """A new device of every brand in every device subcategory, and its accessories."""
    out, n = [], 0
    for dept, subs in DEPARTMENTS.items():
        for sub, is_device, nouns in subs:
            if not is_device:
                continue
            for brand in BRANDS[dept]:
                model = f"{nouns[0]} Nova"

                def like(kind: str, subcategory: str, brand=brand) -> dict[str, Any]:
                    """The first item of the brand, subcategory and kind: whose fields and price to copy."""
                    for i, item in enumerate(arrays["item_id"]):
                        if (arrays["brand"][i], arrays["subcategory"][i], arrays["kind"][i]) == (
                            brand,
                            subcategory,
                            kind,
                        ):
                            return {"sibling": item, "price": arrays["price"][i]}
                    return {"sibling": None, "price": None}

                n += 1
                device = {"item_id": f"N{n:04d}", "title": f"{brand} {model}", "brand": brand, "department": dept}
                out.append(device | {"subcategory": sub, "kind": "device", **like("device", sub)})
                for accessory in ACCESSORIES[sub]:
                    n += 1
                    out.append(
                        {
                            "item_id": f"N{n:04d}",
                            "title": f"{brand} {accessory} for {model}",
                            "brand": brand,
                            "department": dept,
                            "subcategory": f"{sub} accessories",
                            "kind": "accessory",
                            "device": device["item_id"],
                            **like("accessory", f"{sub} accessories"),
                        }
                    )
    return out


def make_stream(spec: str, stream_users: int, per_user: int, seed: int) -> Stream:
    """The purchases after training of ``stream_users`` shoppers of the shop ``spec`` (see the
    module's docstring), seeded by ``seed``."""
    if not spec.startswith("synthetic"):
        raise SystemExit(f"--data {spec!r}: the stream continues the built-in shop; give synthetic:users=...,items=...")
    shop = parse_spec(spec.partition(":")[2])
    interactions, catalog = generate(shop)
    arrays = _catalog_arrays(catalog)
    launched = _launch(arrays)
    old = len(arrays["item_id"])
    ids = arrays["item_id"] + [i["item_id"] for i in launched]
    index = {item: i for i, item in enumerate(ids)}
    brand = np.array(arrays["brand"] + [i["brand"] for i in launched])
    department = np.array(arrays["department"] + [i["department"] for i in launched])
    kind = np.array(arrays["kind"] + [i["kind"] for i in launched])
    device_of = np.array(arrays["device_of"] + [index[i["device"]] if "device" in i else -1 for i in launched])
    departments = list(DEPARTMENTS)
    dept_index = np.array([departments.index(d) for d in department])
    accessories = {int(d): np.flatnonzero(device_of == d) for d in np.flatnonzero(kind == "device")}
    counts = np.bincount([index[i] for i in interactions["item_id"]], minlength=len(ids)).astype(float) + 1.0
    counts[old:] = counts[:old].mean()  # launched items: as popular as the average item
    popularity = counts / counts.sum()
    new_devices = np.flatnonzero((kind == "device") & (np.arange(len(ids)) >= old))
    launch_departments = np.isin(np.arange(len(departments)), dept_index[new_devices])

    rng = np.random.default_rng([seed, 23])
    histories: dict[str, list[int]] = defaultdict(list)
    for user, item in zip(interactions["user_id"], interactions["item_id"], strict=True):
        histories[user].append(index[item])
    users = sorted(histories)
    chosen = sorted(rng.choice(len(users), size=min(stream_users, len(users)), replace=False).tolist())
    shoppers = []
    for u in chosen:
        user = users[u]
        history = list(histories[user])
        owned = np.zeros(len(ids), dtype=bool)
        owned[history] = True
        taste = np.bincount(dept_index[history], minlength=len(departments)) + 0.4
        taste = taste / taste.sum()
        last = history[-1]
        pair = (str(brand[last]), str(department[last]))
        dislike = pair if rng.random() < DISMISSERS else None
        purchases = []
        for _ in range(per_user):
            for _attempt in range(50):
                if not owned[new_devices].any() and rng.random() < P_LAUNCH:
                    weights = taste * launch_departments
                    d = rng.choice(len(departments), p=weights / weights.sum())
                    pool = new_devices[dept_index[new_devices] == d]
                    mine = Counter(brand[h] for h in history if dept_index[h] == d)
                    favourite = [p for p in pool if mine and brand[p] == mine.most_common(1)[0][0]]
                    item, mechanism = int(rng.choice(favourite or pool)), "launch"
                else:
                    item, mechanism, _ = next_purchase(
                        rng, shop, history, owned, taste, dept_index, brand, kind, accessories, popularity
                    )
                if item < 0 or (str(brand[item]), str(department[item])) != dislike:
                    break
            if item < 0 or owned[item]:
                break
            purchases.append((ids[item], mechanism))
            history.append(item)
            owned[item] = True
        shoppers.append(Shopper(user, purchases, dislike, pair))
    return Stream(
        launched,
        shoppers,
        brand=dict(zip(ids, brand.tolist(), strict=True)),
        department=dict(zip(ids, department.tolist(), strict=True)),
    )


# ---------------------------------------------------------------------------------------
# the base run
# ---------------------------------------------------------------------------------------
def base_run(args: argparse.Namespace, work: Path) -> tuple[Path, float]:
    """The run the bench fine-tunes (it writes versions into it): trained here, or a copy of ``--run``."""
    out = work / "run"
    tic = time.perf_counter()
    if args.run:
        shutil.copytree(args.run, out)
        raw = json.loads((out / "run.json").read_text())
        raw["config"]["finetune"]["ignore_window"] = 2.0  # as BASE_SETTINGS: the bench's impressions count
        (out / "run.json").write_text(json.dumps(raw))
        return out, 0.0
    command = [str(RECSCOPE), "train", "--data", args.data, "--config", str(ROOT / "configs" / "tiny.yaml")]
    command += [a for s in (*BASE_SETTINGS, *args.set) for a in ("--set", s)] + ["--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"training the base run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return out, time.perf_counter() - tic


# ---------------------------------------------------------------------------------------
# the service
# ---------------------------------------------------------------------------------------
class Api:
    """The running server, from several threads (one httpx client: it is thread-safe)."""

    def __init__(self, server: Server):
        self.server = server
        self.client = httpx.Client(
            base_url=server.url,
            timeout=60.0,
            headers={"X-API-Key": server.api_key},
            limits=httpx.Limits(max_connections=CLIENTS * 2),
        )
        self.pool = ThreadPoolExecutor(CLIENTS)
        self.dismissed: dict[str, list[str]] = {}  # user -> the items they dismissed

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw) -> httpx.Response:
        response = self.client.request(method, path, **kw)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response

    def each(self, fn, things):
        return list(self.pool.map(fn, things))

    def post_events(self, events: list[dict]) -> int:
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]  # in order: one batch at a time
        return sum(self.call("POST", "/events", json={"events": b}).json()["accepted"] for b in batches)

    def served_everywhere(self, version: str) -> float:
        """Seconds until every worker's /health/ready names ``version`` (a new connection per probe)."""
        tic = time.perf_counter()
        workers = set(self.server.workers())
        seen: dict[int, str] = {}
        while time.perf_counter() - tic < SWITCH_LONGEST:
            body = httpx.get(f"{self.server.url}/health/ready", timeout=5.0).json()
            seen[body["worker"]] = body["model_version"]
            if all(seen.get(w) == version for w in workers):
                return time.perf_counter() - tic
            time.sleep(0.01)
        raise RuntimeError(f"after {SWITCH_LONGEST} s the workers serve {seen}, not {version}")

    def serve(self, version: str) -> float:
        self.call("PUT", "/model", json={"version": version})
        return self.served_everywhere(version)

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()


def add_items(api: Api, stream: Stream) -> int:
    """PUT every launched item with the fields of an item of its brand, subcategory and kind;
    returns how many field values the service could not use (``unused``)."""
    unused = 0
    for item in stream.new_items:
        attributes = api.call("GET", f"/items/{item['sibling']}").json()["attributes"] if item["sibling"] else {}
        attributes = (attributes or {"brand": item["brand"]}) | (
            {"price": item["price"]} if item["price"] is not None else {}  # GET shows the band, PUT reads a number
        )
        body = api.call(
            "PUT", f"/items/{item['item_id']}", (201,), json={"title": item["title"], "attributes": attributes}
        )
        unused += len(body.json().get("unused") or [])
    return unused


def replay(api: Api, stream: Stream, tail: int, rounds: int) -> dict[str, Any]:
    """The stream's first part: each round, a top-10 shown to every shopper (and, in the first, a
    dismisser's disliked brand dismissed), then the round's purchases."""
    firsts = {s.user: s.purchases[:-tail] if tail else s.purchases for s in stream.shoppers}
    dismissed: dict[str, list[str]] = {}
    shown = events = 0

    def show(shopper: Shopper, first_round: bool) -> None:
        k = DISMISS_K if first_round and shopper.dislike else 10
        body = api.call("GET", f"/users/{shopper.user}/recommendations", params={"k": k}).json()
        if not (first_round and shopper.dislike):
            return
        for entry in body["items"]:
            item = entry["item_id"]
            if (stream.brand.get(item), stream.department.get(item)) == shopper.dislike:
                feedback = {
                    "request_id": body["request_id"],
                    "user_id": shopper.user,
                    "item_id": item,
                    "action": "dismiss",
                }
                api.call("POST", "/feedback", (201,), json=feedback)
                dismissed.setdefault(shopper.user, []).append(item)

    for r in range(rounds):
        api.each(lambda s, r=r: show(s, r == 0), stream.shoppers)
        shown += len(stream.shoppers)
        batch = []
        for s in stream.shoppers:
            mine = firsts[s.user]
            size = -(-len(mine) // rounds)
            for i, (item, _) in enumerate(mine[r * size : (r + 1) * size], start=r * size):
                batch.append({"event_id": f"{s.user}-{i}", "user_id": s.user, "item_id": item, "event": "purchase"})
        events += api.post_events(batch)
    return {"events": events, "lists_shown": shown, "dismissed": dismissed}


def finetune_job(api: Api, budget: float) -> dict[str, Any]:
    """``POST /model/finetune``, then ``GET /model/jobs/{id}`` until the job ends."""
    tic = time.perf_counter()
    job = api.call("POST", "/model/finetune", (202,), json={"budget": budget}).json()["job"]
    stages: list[str] = []
    while True:
        body = api.call("GET", f"/model/jobs/{job}").json()
        if not stages or stages[-1] != body["progress"]["stage"]:
            stages.append(body["progress"]["stage"])
        if body["status"] != "running":
            break
        if time.perf_counter() - tic > JOB_LONGEST:
            raise RuntimeError(f"the fine-tune job {job} still runs after {JOB_LONGEST:.0f} s: {body['progress']}")
        time.sleep(0.25)
    if body["status"] != "succeeded":
        raise RuntimeError(f"the fine-tune job {job} {body['status']}: {body['error']}")
    return {"job": job, "stages": stages, "wall_seconds": time.perf_counter() - tic, **body}


# ---------------------------------------------------------------------------------------
# the measurement
# ---------------------------------------------------------------------------------------
def ask(api: Api, user: str) -> tuple[list[str], str, int]:
    """A shopper's top-10 now: (item ids, model_version, worker)."""
    response = api.call("GET", f"/users/{user}/recommendations", params={"k": 10})
    body = response.json()
    return [i["item_id"] for i in body["items"]], body["model_version"], int(response.headers[WORKER])


def scores(ranks: list[int]) -> dict[str, float]:
    r = np.array(ranks, dtype=np.int64)
    if not len(r):
        return {"cases": 0, "HR@10": None, "NDCG@10": None}
    return {"cases": len(r), "HR@10": round(hit_rate(r, 10), 4), "NDCG@10": round(ndcg(r, 10), 4)}


def measure_tail(api: Api, stream: Stream, versions: dict[str, str], tail: int) -> dict[str, Any]:
    """Each tail position: every shopper's top-10 under each version, then the position's purchases."""
    new = stream.new_ids()
    ranks: dict[str, dict[str, list[int]]] = {name: defaultdict(list) for name in versions}
    with_new: dict[str, list[bool]] = {name: [] for name in versions}
    labels: dict[str, Counter] = {name: Counter() for name in versions}
    dismissed_shown: Counter = Counter()
    switch_seconds = []
    for position in range(tail):
        cases = [
            (s, s.purchases[len(s.purchases) - tail + position]) for s in stream.shoppers if len(s.purchases) > tail
        ]
        for name, version in versions.items():
            switch_seconds.append(api.serve(version))
            for (shopper, (target, mechanism)), (items, label, worker) in zip(
                cases, api.each(lambda c: ask(api, c[0].user), cases), strict=True
            ):
                rank = items.index(target) if target in items else MISS
                ranks[name]["all"].append(rank)
                ranks[name]["launched items" if target in new else "catalog items"].append(rank)
                ranks[name][mechanism].append(rank)
                with_new[name].append(any(i in new for i in items))
                labels[name][(label, worker)] += 1
                dismissed_shown[name] += sum(i in api.dismissed.get(shopper.user, ()) for i in items)
        batch = [
            {
                "event_id": f"{s.user}-{len(s.purchases) - tail + position}",
                "user_id": s.user,
                "item_id": t,
                "event": "purchase",
            }
            for s, (t, _) in cases
        ]
        api.post_events(batch)
    return {
        "metrics": {name: {group: scores(r) for group, r in sorted(ranks[name].items())} for name in versions},
        "lists_with_a_launched_item": {name: round(float(np.mean(v)), 4) for name, v in with_new.items()},
        "lists_by_version_and_worker": {
            name: [{"model_version": v, "worker": w, "lists": n} for (v, w), n in sorted(c.items())]
            for name, c in labels.items()
        },
        "dismissed_items_in_lists": dict(dismissed_shown),
        "switch_seconds": [round(s, 3) for s in switch_seconds],
    }


def dismissed_ranks(api: Api, stream: Stream, versions: dict[str, str], catalog: int) -> dict[str, Any]:
    """Under each version: the rank (1-based, whole catalog, the shopper's live history as the
    service reads it; owned and dismissed items left out) of the unowned items of each
    dismisser's disliked brand and department, how many dismissed items the list holds (none:
    they are filtered) and, per shopper, the median rank of the items of their pair (module
    docstring, "The dismiss bar")."""
    pairs = {s.user: s.last for s in stream.shoppers if s.user in api.dismissed or s.dislike is None}
    users = sorted(pairs)
    k = min(catalog, 1000)
    out: dict[str, Any] = {}
    for name, version in versions.items():
        api.serve(version)

        def ranked(user: str) -> tuple[list[int], list[int]]:
            body = api.call("GET", f"/users/{user}/recommendations", params={"k": k}).json()
            order = [i["item_id"] for i in body["items"]]
            gone = set(api.dismissed.get(user, ()))
            same = [
                r + 1 for r, i in enumerate(order) if (stream.brand.get(i), stream.department.get(i)) == pairs[user]
            ]
            return [order.index(i) + 1 for i in gone if i in order], same

        results = dict(zip(users, api.each(ranked, users), strict=True))
        dismissers = [u for u in users if u in api.dismissed]
        same = [r for u in dismissers for r in results[u][1]]
        out[name] = {
            "dismissers": dismissers,
            "dismissed_in_lists": sum(len(results[u][0]) for u in dismissers),  # 0: dismissals filter the item
            "same_brand_department": len(same),
            "same_brand_department_median_rank": float(np.median(same)) if same else None,
            "pair_median_rank": {u: float(np.median(s)) for u, (_, s) in results.items() if s},
        }
    return out


def dismiss_bar(ranks: dict[str, Any], dismissers: set[str]) -> dict[str, Any]:
    """Per group (dismissers, controls): how the median rank of a shopper's pair moved from the
    frozen to the fine-tuned version (positive: the items fell)."""
    before, after = ranks["frozen"]["pair_median_rank"], ranks["finetuned"]["pair_median_rank"]
    out: dict[str, Any] = {}
    for group, members in (
        ("dismissers", [u for u in before if u in dismissers]),
        ("controls", [u for u in before if u not in dismissers]),
    ):
        change = np.array([after[u] - before[u] for u in members if u in after])
        out[group] = {
            "users": len(change),
            "median_rank_before": float(np.median([before[u] for u in members])) if members else None,
            "median_rank_after": float(np.median([after[u] for u in members if u in after])) if members else None,
            "median_change": float(np.median(change)) if len(change) else None,
            "mean_change": round(float(change.mean()), 2) if len(change) else None,
            "fell_share": round(float((change > 0).mean()), 4) if len(change) else None,
        }
    d, c = out["dismissers"], out["controls"]
    out["met"] = bool(
        d["users"] >= BAR_USERS
        and d["median_change"] is not None
        and d["median_change"] > 0
        and c["median_change"] is not None
        and d["median_change"] > c["median_change"]
    )
    return out


# ---------------------------------------------------------------------------------------
# the whole bench
# ---------------------------------------------------------------------------------------
def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or copy) the base run, replay the stream through the service, fine-tune, measure."""
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recscope-finetune-replay-") as tmp:
        run, train_seconds = base_run(args, Path(tmp))
        phases = {"train": train_seconds}
        lap = time.perf_counter()
        stream = make_stream(args.data, args.stream_users, args.per_user, args.seed)
        phases["stream"] = time.perf_counter() - lap
        with Server(str(run), workers=args.workers, threads=args.threads, api_key=secrets.token_hex(16)) as server:
            api = Api(server)
            phases["server_start"] = server.startup_seconds

            def done(phase: str) -> None:
                nonlocal lap
                phases[phase], lap = time.perf_counter() - lap, time.perf_counter()

            lap = time.perf_counter()
            try:
                base = api.call("GET", "/model").json()["version"]
                catalog_before = api.call("GET", "/items", params={"limit": 1}).json()["total"]
                unknown = [
                    i
                    for i in stream.shoppers[:20]
                    if api.call("GET", f"/users/{i.user}/history", (200, 404)).status_code != 200
                ]
                if unknown:
                    raise SystemExit(
                        f"the run does not hold the shop's shoppers ({unknown[0].user}): is it a run of {args.data}?"
                    )
                unused = add_items(api, stream)
                catalog = api.call("GET", "/items", params={"limit": 1}).json()["total"]
                done("items")
                replayed = replay(api, stream, args.tail, args.rounds)
                done("replay")
                api.dismissed = replayed.pop("dismissed")
                time.sleep(2.5)  # finetune.ignore_window: the last round's impressions are old enough to be read
                job = finetune_job(api, args.budget)
                result = job["result"]
                if result["version"] is None:
                    raise RuntimeError(f"the fine-tune learned nothing: {result['reason']}")
                promoted_switch = api.served_everywhere(result["version"]) if result["promoted"] else None
                done("finetune")
                versions = {"frozen": base, "finetuned": result["version"]}
                tail = measure_tail(api, stream, versions, args.tail)
                done("tail")
                dismissals = dismissed_ranks(api, stream, versions, catalog)
                done("dismissed")
                api.serve(result["version"] if result["promoted"] else base)
                problems = server.problems()
                workers = server.workers()
            finally:
                api.close()
    new = stream.new_ids()
    frozen, finetuned = tail["metrics"]["frozen"], tail["metrics"]["finetuned"]
    return {
        "command": " ".join(["python", "bench/finetune_replay.py", *sys.argv[1:]]),
        "data": args.data,
        "base_settings": ["configs/tiny.yaml", *BASE_SETTINGS, *args.set] if not args.run else ["--run (copied)"],
        "train_seconds": round(train_seconds, 1),
        "stream": {
            "seed": args.seed,
            "shoppers": len(stream.shoppers),
            "per_user": args.per_user,
            "tail": args.tail,
            "rounds": args.rounds,
            "launched_items": len(new),
            "launched_fields_unused": unused,
            "catalog_before": catalog_before,
            "catalog_after": catalog,
            "mechanisms": dict(Counter(m for s in stream.shoppers for _, m in s.purchases)),
            "dismissers": sum(s.dislike is not None for s in stream.shoppers),
            "dismissed_items": sum(len(v) for v in api.dismissed.values()),
            **replayed,
        },
        "workers": len(workers),
        "finetune": {
            "job": job["job"],
            "stages": job["stages"],
            "job_seconds": round(job["seconds"], 2),
            "command_seconds": result["seconds"],
            "timings": result.get("timings"),  # the command's stages and CPU (recscope.finetune, "Timings")
            "wall_seconds": round(job["wall_seconds"], 2),
            "verdict": result["verdict"],
            "reason": result["reason"],
            "metrics": result["metrics"],
            "lineage": result["lineage"],
            "version": result["version"],
            "parent": result["parent"],
            "seconds_until_every_worker_serves_it": None if promoted_switch is None else round(promoted_switch, 3),
        },
        "tail": tail,
        "dismissed_ranks": dismissals,
        "dismiss_bar": dismiss_bar(dismissals, set(api.dismissed)),
        "bars": {
            "finetuned_beats_frozen_on_the_tail": finetuned["all"]["NDCG@10"] > frozen["all"]["NDCG@10"],
            "launched_items_reach_the_top10_more_often": (finetuned["launched items"]["HR@10"] or 0.0)
            > (frozen["launched items"]["HR@10"] or 0.0),
        },
        "server_problems": problems,
        "load_average": load_average(),
        "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
        "seconds": round(time.perf_counter() - tic, 1),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="synthetic:users=3000,items=584,seed=0", help="the synthetic shop")
    parser.add_argument("--run", help="a run trained on --data (copied; default: train one)")
    parser.add_argument("--set", action="append", default=[], help="another config override of the base run")
    parser.add_argument("--stream-users", type=int, default=600)
    parser.add_argument("--per-user", type=int, default=6, help="purchases after training per stream shopper")
    parser.add_argument("--tail", type=int, default=2, help="of which held out (posted after the fine-tune)")
    parser.add_argument("--rounds", type=int, default=3, help="impression rounds of the first part")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds the fine-tune job may train")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--seed", type=int, default=0, help="seeds the stream")
    parser.add_argument("--name", default="finetune_replay", help="bench/results/<name>.json")
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.set = [*args.set, "train.epochs=3"]
        args.name = args.name if args.name != "finetune_replay" else "finetune_replay_smoke"
    if not 1 <= args.tail < args.per_user:
        parser.error(f"--tail {args.tail} must be at least 1 and below --per-user {args.per_user}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    payload = run_bench(args)
    write(args.name, payload)
    print(json.dumps({k: payload[k] for k in ("finetune", "bars", "dismiss_bar")}, indent=1)[:4000])
    print(json.dumps(payload["tail"]["metrics"], indent=1))


if __name__ == "__main__":
    main()
