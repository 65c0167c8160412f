"""A replayed stream (issue 23): a frozen, a periodically fine-tuned and a periodically retrained
model side by side, scored prequentially through the real service.

    python bench/stream.py --data movielens:../shared/data/ml-100k --out bench/results/stream_ml100k.json
    python bench/stream.py --data synthetic:users=3000,items=584,seed=0,drift=0.5 --out bench/results/stream_drift.json
    python bench/stream.py --smoke [--out FILE]     # seconds: the tiny drifting shop, for tests/test_stream.py

Options: ``--config FILE`` (default configs/tiny.yaml with ``SETTINGS``: the pinned config;
another file is used as it is), ``--set KEY=VALUE`` (more overrides: the base run's and every
retraining's, and, the ``finetune`` ones, every fine-tune's), ``--every N`` (events between two
updates), ``--events K`` (the stream's length), ``--train-share S``, ``--budget SECONDS`` (each
fine-tune's), ``--window W``, ``--arms frozen,finetune`` (a subset of the arms: validation runs
that choose a ``finetune`` setting need no retraining).

**The time split.** Every event of ``--data`` in time order (ties in file order). The oldest
``--train-share`` of them train the base run; on a drifting shop (``synthetic:...,drift=F``,
:func:`recscope.data.synthetic.generate_drifting`) the training part is every event up to the
planted change instead, so the stream starts at the change. The stream is the next ``--events``
events (the subsample that keeps a run within minutes). The base run: ``recscope train --data
csv:TRAIN --catalog CATALOG`` with the pinned config, the catalog being the data set's whole
catalog (MovieLens's every movie, the shop's every item, the new brand's included), so an item
first bought in the stream is known by its fields and its (untrained) id. Every training of the
bench (the base run, each retraining) holds out its newest events by time for early stopping
(``data.split=temporal``, :func:`split_settings`), as many as a fine-tune's gate holds out of
one update's events (:func:`held_out`: ``finetune.holdout`` of ``--every``, at least
``finetune.min_cases``, their defaults), so a retraining trains on the rest of the stream's new
events as a fine-tune does. Not each user's last two: with leave-one-out a retraining never
trained on the events of the stream's users with one or two new events (most of them). Not a
share of all its events either (2% until 2026-12-07): on a large data set that share exceeds
one update's events, and the retraining
never trained on any event of the stream.

**Three arms, one stream.** Each arm is a copy of the base run behind its own ``recscope serve
RUN --workers 1`` (``serve_load.Server``: loopback, a fresh SQLite store, a write key):

- *frozen*: never updated;
- *finetune*: every ``--every`` events, ``POST /model/finetune`` (the service's real job, the
  run's ``finetune`` settings, ``--budget`` s), polled at ``GET /model/jobs/{id}``; a promoted
  version is served once the worker names it at ``/health/ready``; a version the promotion gate
  keeps is not served (the service's own rule);
- *retrain*: at the same points, ``recscope train`` from scratch, same config and seed, on the
  training part plus the stream so far, then the arm's service is restarted on the new run with
  a fresh store (the new run holds the stream so far, so the store must not hold it again).

**Prequential scoring.** The stream goes in batches of consecutive events of distinct users.
For every event of a batch, each arm is asked ``GET /users/{id}/recommendations?k=10`` (the
whole catalog, owned items left out as the service leaves them out; a user the arm does not know
yet gets the service's fallback list) and the rank of the item the user takes is recorded; then
the batch is posted to every arm (``POST /events``, its real timestamps). So each event is
scored on the history before it, and posted before the next event of its user is scored.
HR@10 and NDCG@10 by ``recscope.metrics``, over the stream and per ``--window`` events.

**Updates' compute.** ``seconds`` of an arm: the CPU seconds (user + system) of its updates:
the fine-tune job's process (reaped by the worker: its children's time) or the training
command's; wall seconds beside them. Restarting a service is not counted (``restart_seconds``).
A fine-tune job's own ``timings`` split its CPU: ``startup_cpu`` (starting Python, importing
torch and recscope: paid by every job however little it learns), ``cpu`` (the command's work:
loading the run, reading the store, training, measuring, publishing) and ``train_cpu`` (the
training loop). ``bar`` gives the compute share with and without the start-up: without, a
retraining's CPU less the same start-up (one interpreter, the same imports: the fine-tune jobs'
median ``startup_cpu``).

**Following the change** (a drifting shop): per window, HR@10 of the purchases whose planted
cause is the change (mechanism ``launch``: the new brand; ``fashion``: the fashionable
category), and the share of the new brand's items and of the fashionable category's in the
lists. An arm *follows* a mechanism from the first window whose HR@10 on it reaches
``FOLLOW_HR`` (fixed before any run); ``events_after_change``: that window's end. Writes the
JSON to ``--out`` with the machine and commit (``_common``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, commit, load_average, machine, uncommitted  # noqa: E402
from finetune_replay import Api, finetune_job  # noqa: E402
from recscope.config import DataConfig, FeaturesConfig, FinetuneConfig  # noqa: E402
from recscope.data.dataset import LoadReport  # noqa: E402
from recscope.data.formats import LOADERS, load_dataset  # noqa: E402
from recscope.data.synthetic import (  # noqa: E402
    DRIFT_MECHANISMS,
    MECHANISMS,
    Change,
    generate,
    generate_drifting,
    parse_spec,
)
from recscope.evaluate import AttributesOnlyScorer  # noqa: E402
from recscope.features.text import catalog_vectors  # noqa: E402
from recscope.metrics import hit_rate, ndcg  # noqa: E402
from serve_load import RECSCOPE, Server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny.yaml"
# The pinned config on top of configs/tiny.yaml (the base run and every retraining use it):
# 64 wide, 2 blocks, 50 items read, up to 20 epochs with early stopping on valid.
SETTINGS = ("model.d_model=64", "model.n_layers=2", "model.max_len=50", "train.epochs=20", "train.patience=3")
ARMS = ("frozen", "finetune", "retrain", "attributes")
UPDATED = ("finetune", "retrain")  # the arms that learn from the stream
FOLLOW_HR = 0.2  # an arm follows a planted mechanism from the first window with HR@10 >= this on its purchases
MISS = 10**9  # the 0-based rank of an item not in the top 10
K = 10
BATCH = 100  # at most this many events per POST /events (of distinct users: see the docstring)
SMOKE = {
    "data": "synthetic:users=200,items=120,seed=5,drift=0.5",
    "events": 120,
    "every": 60,
    "window": 30,
    "budget": 10.0,
    "set": ["train.epochs=3", "model.n_layers=1", "model.d_model=32", "model.max_len=20"],
}


# ---------------------------------------------------------------------------------------
# the data: a time split
# ---------------------------------------------------------------------------------------
@dataclass
class Timeline:
    """A data set split in time: the part the base run trains on, then the stream."""

    train: pl.DataFrame  # user_id, item_id, timestamp (the file's units)
    stream: pl.DataFrame  # user_id, item_id, timestamp, seconds (epoch), mechanism (label or "")
    catalog: pl.DataFrame  # item_id + attribute and text columns, as strings: every item
    change: Change | None  # a drifting shop's planted change
    split: str  # how the training part was cut, in words
    categories: dict[str, str] = field(default_factory=dict)  # item_id -> category (a drifting shop)


def timeline(spec: str, train_share: float, events: int) -> Timeline:
    """``spec`` in time order, split (see the module's docstring)."""
    kind, _, rest = spec.partition(":")
    change, categories, scale = None, {}, 1.0
    if kind == "synthetic":
        shop = parse_spec(rest)
        if shop.drift:
            interactions, catalog, change = generate_drifting(shop)
            categories = dict(zip(catalog["item_id"], catalog["category"], strict=True))
        else:
            interactions, catalog = generate(shop)
        labels = MECHANISMS + DRIFT_MECHANISMS
        interactions = interactions.with_columns(
            pl.col("mechanism").map_elements(labels.__getitem__, return_dtype=pl.String)
        )
    elif kind in ("movielens", "csv", "parquet"):
        if not Path(rest).exists():
            raise SystemExit(f"--data {spec}: {rest} does not exist (the MovieLens copy is ../shared/data/ml-100k)")
        source = LOADERS[kind](Path(rest), DataConfig(), {}, LoadReport())
        interactions = source.interactions.select("user_id", "item_id", "timestamp")
        interactions = interactions.with_columns(pl.lit("").alias("mechanism"))
        catalog = _as_strings(source.catalog) if source.catalog is not None else None
        scale = source.time_scale
    else:
        raise SystemExit(f"--data {spec}: the stream needs real timestamps: synthetic:, movielens:, csv: or parquet:")
    ordered = interactions.with_row_index("_row").sort("timestamp", "_row").drop("_row")
    if change is not None:
        cut = int((ordered["timestamp"] <= change.time).sum())
        split = f"every event up to the planted change (day {change.time / 86400:.1f}): {cut:,} events"
    else:
        cut = round(train_share * ordered.height)
        split = f"the oldest {train_share:.0%} of the events by time: {cut:,} events"
    if catalog is None:
        catalog = pl.DataFrame({"item_id": ordered["item_id"].unique(maintain_order=True)})
    if change is not None and ordered.head(cut)["item_id"].is_in(list(change.items)).any():
        raise SystemExit("the training part holds a purchase of the launched brand: the shop is not as planted")
    stream = ordered.slice(cut, events).with_columns((pl.col("timestamp").cast(pl.Float64) * scale).alias("seconds"))
    return Timeline(ordered.head(cut).drop("mechanism"), stream, catalog, change, split, categories)


def _as_strings(catalog: pl.DataFrame) -> pl.DataFrame:
    """The catalog as a CSV can hold it: multi-valued columns joined by ``|`` (data.list_separator)."""
    return catalog.select(
        pl.col(c).list.join("|") if isinstance(catalog.schema[c], pl.List) else pl.col(c).cast(pl.String)
        for c in catalog.columns
    )


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
@dataclass
class Cost:
    wall: float
    cpu: float


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(events: pl.DataFrame, catalog: Path, config: list[str], out: Path) -> Cost:
    """``recscope train`` from scratch on ``events``: (wall, CPU) seconds of the command."""
    out.mkdir(parents=True)
    data = out.parent / f"{out.name}.csv"
    events.write_csv(data)
    command = [str(RECSCOPE), "train", "--data", f"csv:{data}", "--catalog", str(catalog), *config, "--out", str(out)]
    tic, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    data.unlink()
    return Cost(time.perf_counter() - tic, children_cpu() - cpu)


def held_out(every: int) -> int:
    """The newest events every training of the bench holds out for early stopping: as many as a
    fine-tune's gate holds out of one update's ``every`` events (``finetune.holdout``'s default
    share, at least ``finetune.min_cases``), so a retraining trains on the rest, as a fine-tune does."""
    gate = FinetuneConfig()
    return max(round(gate.holdout * every), gate.min_cases)


def split_settings(events: int, every: int) -> tuple[str, ...]:
    """The temporal split of a training on ``events`` events: its newest ``held_out(every)`` held
    out (at most half), the older half of them valid, the newer test (quantiles of time: ties may
    move a few events across)."""
    held = min(held_out(every) / events, 0.5)
    return ("data.split=temporal", f"data.temporal_valid={1 - held:.10g}", f"data.temporal_test={1 - held / 2:.10g}")


def settings(args: argparse.Namespace) -> list[str]:
    """The config overrides of every training of the bench but its split: the pinned ones, then ``--set``."""
    return [*(SETTINGS if args.config == str(CONFIG) else ()), *args.set]


def config_args(args: argparse.Namespace, events: int) -> list[str]:
    """The training command's config options for a training on ``events`` events (``--set`` last: it wins)."""
    overrides = [*split_settings(events, args.every), *settings(args)]
    return ["--config", args.config, *(a for s in overrides for a in ("--set", s))]


# ---------------------------------------------------------------------------------------
# an arm: a run behind its own service
# ---------------------------------------------------------------------------------------
def process_cpu(pid: int) -> float:
    """User + system CPU of a process and of its children it has reaped (/proc/PID/stat)."""
    values = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in values[11:15]) / os.sysconf("SC_CLK_TCK")


class Arm:
    def __init__(self, name: str, run: Path, key: str):
        self.name, self.run, self.key = name, run, key
        self.server: Server | None = None
        self.api: Api | None = None
        self.updates: list[dict[str, Any]] = []
        self.ranks: list[int] = []  # per scored event, in stream order
        self.versions: Counter = Counter()  # model_version of every list
        self.sources: Counter = Counter()  # "model" or "fallback"
        self.brand_share: list[float] = []  # per list: share of the launched brand's items
        self.category_share: list[float] = []  # per list: share of the fashionable category's items

    def start(self) -> float:
        self.server = Server(str(self.run), workers=1, threads=1, api_key=self.key).__enter__()
        self.api = Api(self.server)
        return self.server.startup_seconds

    def stop(self) -> list[str]:
        problems = self.server.problems() if self.server else []
        if self.api:
            self.api.close()
        if self.server:
            self.server.__exit__(None, None, None)
        self.server = self.api = None
        return problems

    def launch(self, items: pl.DataFrame) -> int:
        """PUT the launched items (title, brand, category, price); returns the field values the
        model has no embedding for (the new brand's name, at first)."""
        unused = 0
        for row in items.iter_rows(named=True):
            attributes = {"brand": row["brand"], "category": row["category"].split("|"), "price": float(row["price"])}
            body = {"title": row["title"], "attributes": attributes}
            unused += len(self.api.call("PUT", f"/items/{row['item_id']}", (201,), json=body).json()["unused"])
        return unused

    def top(self, user: str) -> dict[str, Any]:
        return self.api.call("GET", f"/users/{user}/recommendations", params={"k": K}).json()

    def post_events(self, events: list[dict[str, Any]]) -> int:
        return self.api.post_events(events)

    def seconds(self) -> Cost:
        return Cost(sum(u["wall_seconds"] for u in self.updates), sum(u["cpu_seconds"] for u in self.updates))


class AttributesArm(Arm):
    """The attributes-only content baseline on the same stream, offline (no service, no update):
    :class:`recscope.evaluate.AttributesOnlyScorer` (the items' attribute fields and title vectors,
    no learned weight) over the whole catalog, the launched items included from the start (the
    other arms get them by ``PUT /items`` before the first event). A user's history is their
    training events then their stream events so far, in time order, as the service reads it;
    their items are left out of the list as the service leaves owned items out. A user with no
    history gets no list (a miss): the service's fallback is not content."""

    def __init__(self, line: Timeline, catalog: Path, work: Path):
        super().__init__("attributes", work / "attributes", "")
        events = work / "attributes-events.csv"
        line.train.write_csv(events)
        data = load_dataset(f"csv:{events}", catalog=catalog)
        text = catalog_vectors(data, True, FeaturesConfig())
        self.scorer = AttributesOnlyScorer(data, None if text is None else text.vectors)
        self.data = data
        self.history: dict[str, list[int]] = defaultdict(list)
        for user, item in line.train.select("user_id", "item_id").iter_rows():
            self.history[str(user)].append(data.item_index(str(item)))

    def start(self) -> float:
        return 0.0

    def stop(self) -> list[str]:
        return []

    def launch(self, items: pl.DataFrame) -> int:
        return 0

    def top(self, user: str) -> dict[str, Any]:
        history = self.history.get(user)
        listed: list[str] = []
        if history:
            scores = self.scorer(torch.tensor([history])).numpy()[0]
            scores[[0, *history]] = -np.inf
            listed = [self.data.item_ids[i] for i in np.argsort(-scores, kind="stable")[:K]]
        return {"items": [{"item_id": i} for i in listed], "model_version": "attributes-only", "source": "content"}

    def post_events(self, events: list[dict[str, Any]]) -> int:
        for event in events:
            self.history[event["user_id"]].append(self.data.item_index(event["item_id"]))
        return len(events)


def finetune(arm: Arm, budget: float) -> dict[str, Any]:
    """The service's fine-tune job; waits until a promoted version is served."""
    cpu = process_cpu(arm.server.pid)
    job = finetune_job(arm.api, budget)
    result = job["result"]
    if result["version"] is None:
        raise RuntimeError(f"the fine-tune learned nothing: {result['reason']}")
    switch = arm.api.served_everywhere(result["version"]) if result["promoted"] else None
    return {
        "wall_seconds": round(job["wall_seconds"], 2),
        "cpu_seconds": round(process_cpu(arm.server.pid) - cpu, 2),
        "command_seconds": result["seconds"],
        "timings": result["timings"],
        "held_out": result["metrics"]["cases"],
        "verdict": result["verdict"],
        "reason": result["reason"],
        "events": result["lineage"]["events"],
        "version": result["version"],
        "switch_seconds": None if switch is None else round(switch, 3),
    }


def retrain(arm: Arm, events: pl.DataFrame, catalog: Path, args: argparse.Namespace, work: Path, n: int) -> dict:
    """Train from scratch on ``events`` and restart the arm's service on the new run (fresh store)."""
    run = work / f"retrain-{n}"
    cost = train(events, catalog, config_args(args, events.height), run)
    problems = arm.stop()
    old, arm.run = arm.run, run
    restart = arm.start()
    shutil.rmtree(old)
    return {
        "wall_seconds": round(cost.wall, 2),
        "cpu_seconds": round(cost.cpu, 2),
        "events": events.height,
        "restart_seconds": round(restart, 2),
        "server_problems": problems,
    }


# ---------------------------------------------------------------------------------------
# the replay
# ---------------------------------------------------------------------------------------
def batches(stream: pl.DataFrame, start: int, end: int) -> list[list[int]]:
    """Positions ``start..end-1`` cut into runs of distinct users, at most ``BATCH`` long."""
    users = stream["user_id"].to_list()
    out: list[list[int]] = []
    seen: set[str] = set()
    for i in range(start, end):
        if not out or users[i] in seen or len(out[-1]) == BATCH:
            out.append([])
            seen = set()
        out[-1].append(i)
        seen.add(users[i])
    return out


def replay(arms: dict[str, Arm], line: Timeline, start: int, end: int, pool: ThreadPoolExecutor) -> None:
    """Score then post the stream's events ``start..end-1`` on every arm."""
    users, items = line.stream["user_id"].to_list(), line.stream["item_id"].to_list()
    seconds = line.stream["seconds"].to_list()
    launched = set(line.change.items) if line.change else set()
    for batch in batches(line.stream, start, end):
        asks = [(arm, i) for arm in arms.values() for i in batch]
        for (arm, i), body in zip(asks, pool.map(lambda a: a[0].top(users[a[1]]), asks), strict=True):
            listed = [entry["item_id"] for entry in body["items"]]
            arm.ranks.append(listed.index(items[i]) if items[i] in listed else MISS)
            arm.versions[body["model_version"]] += 1
            arm.sources[body["source"]] += 1
            if line.change:
                arm.brand_share.append(sum(x in launched for x in listed) / K)
                arm.category_share.append(sum(line.categories[x] == line.change.category for x in listed) / K)
        posted = [
            {
                "event_id": f"s{i}",
                "user_id": users[i],
                "item_id": items[i],
                "event": "purchase",
                "timestamp": seconds[i],
            }
            for i in batch
        ]
        accepted = list(pool.map(lambda arm, posted=posted: arm.post_events(posted), arms.values()))
        if accepted != [len(posted)] * len(arms):
            raise RuntimeError(f"events {batch[0]}..{batch[-1]}: the arms accepted {accepted} of {len(posted)}")


# ---------------------------------------------------------------------------------------
# the figures
# ---------------------------------------------------------------------------------------
def scores(ranks: list[int] | np.ndarray) -> dict[str, Any]:
    r = np.asarray(ranks, dtype=np.int64)
    if not len(r):
        return {"cases": 0, "HR@10": None, "NDCG@10": None}
    return {"cases": len(r), "HR@10": round(hit_rate(r, K), 4), "NDCG@10": round(ndcg(r, K), 4)}


def windows(arm: Arm, line: Timeline, width: int) -> list[dict[str, Any]]:
    """Per ``width`` events of the stream: HR@10 and NDCG@10 (and, on a drifting shop, how far the
    lists follow the change)."""
    ranks = np.array(arm.ranks)
    mechanism = np.array(line.stream["mechanism"].to_list())
    out = []
    for start in range(0, len(ranks), width):
        part = slice(start, start + width)
        row = {"events": [start, min(start + width, len(ranks))], **scores(ranks[part])}
        if line.change:
            for name in DRIFT_MECHANISMS:
                row[name] = scores(ranks[part][mechanism[part] == name])
            row["brand_in_lists"] = round(float(np.mean(arm.brand_share[part])), 4)
            row["category_in_lists"] = round(float(np.mean(arm.category_share[part])), 4)
        out.append(row)
    return out


def follows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per planted mechanism: the first window whose HR@10 on its purchases reaches FOLLOW_HR."""
    out = {}
    for name in DRIFT_MECHANISMS:
        hit = next((r for r in rows if r[name]["cases"] and r[name]["HR@10"] >= FOLLOW_HR), None)
        out[name] = {
            "window": None if hit is None else rows.index(hit),
            "events_after_change": hit and hit["events"][1],
        }
    return out


def summary(arms: dict[str, Arm], line: Timeline, width: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, arm in arms.items():
        cost = arm.seconds()
        rows = windows(arm, line, width)
        out[name] = {
            **{k: v for k, v in scores(arm.ranks).items() if k != "cases"},
            "seconds": round(cost.cpu, 2),
            "wall_seconds": round(cost.wall, 2),
            "cases": len(arm.ranks),
            "updates": arm.updates,
            "lists_by_version": dict(arm.versions),
            "lists_by_source": dict(arm.sources),
            "windows": rows,
        }
        if line.change:
            mechanism = np.array(line.stream["mechanism"].to_list())
            ranks = np.array(arm.ranks)
            out[name]["by_mechanism"] = {m: scores(ranks[mechanism == m]) for m in sorted(set(mechanism))}
            out[name]["follows"] = follows(rows)
    return out


def bars(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's bar: fine-tuning recovers >= 90% of retraining's NDCG@10 gain over the frozen
    model at <= 15% of its compute seconds; the share also without the jobs' start-up (docstring)."""
    if {"frozen", *UPDATED} - set(result):
        return {"met": None, "arms": sorted(result)}
    frozen, tuned, retrained = (result[a]["NDCG@10"] for a in ("frozen", *UPDATED))
    gain = retrained - frozen
    recovered = (tuned - frozen) / gain if gain > 0 else None
    jobs, trainings = result["finetune"]["updates"], result["retrain"]["updates"]
    startup = float(np.median([u["timings"]["startup_cpu"] for u in jobs])) if jobs else 0.0
    ft_cpu, re_cpu = result["finetune"]["seconds"], result["retrain"]["seconds"]
    share = ft_cpu / re_cpu if re_cpu else None
    bare = sum(u["cpu_seconds"] - u["timings"]["startup_cpu"] for u in jobs)
    bare_retrain = re_cpu - startup * len(trainings)
    bare_share = bare / bare_retrain if bare_retrain > 0 else None
    return {
        "retrain_gain": round(gain, 4),
        "finetune_gain": round(tuned - frozen, 4),
        "recovered_share": None if recovered is None else round(recovered, 3),
        "compute_share": None if share is None else round(share, 3),
        "startup_cpu_per_process": round(startup, 2),
        "finetune_cpu_without_startup": round(bare, 2),
        "retrain_cpu_without_startup": round(bare_retrain, 2),
        "compute_share_without_startup": None if bare_share is None else round(bare_share, 3),
        "met": recovered is not None and share is not None and recovered >= 0.9 and share <= 0.15,
    }


def new_items(arms: dict[str, Arm], line: Timeline, every: int) -> dict[str, Any] | None:
    """The new-items bar (a drifting shop): the purchases whose planted cause is the launched
    brand (mechanism ``launch``), HR@10 of each arm before the first update (the stream's first
    ``every`` events: the launched items scored from their fields alone) and after it (the next
    ``every``). Met when, before, the frozen model places them at least as often as the
    attributes-only baseline, and after one fine-tune the fine-tuned arm more often than before."""
    if line.change is None:
        return None
    launch = np.array(line.stream["mechanism"].to_list()) == "launch"
    out: dict[str, Any] = {}
    for name, arm in arms.items():
        ranks = np.array(arm.ranks)
        out[name] = {
            "before_first_update": scores(ranks[:every][launch[:every]]),
            "after_first_update": scores(ranks[every : 2 * every][launch[every : 2 * every]]),
        }

    def hr(arm: str, when: str) -> float | None:
        return out[arm][when]["HR@10"] if arm in out else None

    before, baseline = hr("frozen", "before_first_update"), hr("attributes", "before_first_update")
    tuned_before, tuned_after = hr("finetune", "before_first_update"), hr("finetune", "after_first_update")
    known = None not in (before, baseline, tuned_before, tuned_after)
    out["met"] = (before >= baseline and tuned_after > tuned_before) if known else None
    return out


# ---------------------------------------------------------------------------------------
# the whole bench
# ---------------------------------------------------------------------------------------
def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    tic = time.perf_counter()
    line = timeline(args.data, args.train_share, args.events)
    if line.stream.height < 2 * args.every:
        print(f"note: the stream holds {line.stream.height} events: fewer than two --every {args.every}")
    config = config_args(args, line.train.height)  # the base run's (a retraining's holds out as many events)
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="recscope-stream-") as tmp, ThreadPoolExecutor(8) as pool:
        work = Path(tmp)
        # The launched brand's items join the catalog at the change (PUT /items on each arm's
        # service); a retraining after the change knows them from its catalog file.
        launched = line.catalog.filter(pl.col("item_id").is_in(list(line.change.items if line.change else ())))
        before, catalog = work / "catalog-before.csv", work / "catalog.csv"
        line.catalog.filter(~pl.col("item_id").is_in(launched["item_id"].implode())).write_csv(before)
        line.catalog.write_csv(catalog)
        base = work / "base"
        base_cost = train(line.train, before, config, base)
        arms = {name: Arm(name, work / name, key) for name in args.arms if name != "attributes"}
        for arm in arms.values():
            shutil.copytree(base, arm.run)
        if "attributes" in args.arms:
            arms["attributes"] = AttributesArm(line, catalog, work)
        startup = [arm.start() for arm in arms.values()]  # Server sets a signal handler: the main thread only
        problems: dict[str, list[str]] = defaultdict(list)
        try:
            unused = [arm.launch(launched) for arm in arms.values()]
            points = list(range(args.every, line.stream.height, args.every))
            for start, end in zip([0, *points], [*points, line.stream.height], strict=True):
                replay(arms, line, start, end, pool)
                if end == line.stream.height:
                    break
                if "finetune" in arms:
                    arms["finetune"].updates.append({"at": end, **finetune(arms["finetune"], args.budget)})
                if "retrain" in arms:
                    seen = pl.concat([line.train, line.stream.head(end).select(line.train.columns)])
                    update = retrain(arms["retrain"], seen, catalog, args, work, end)
                    problems["retrain"] += update.pop("server_problems")
                    arms["retrain"].updates.append({"at": end, **update})
        finally:
            for name, arm in arms.items():
                problems[name] += arm.stop()
    result = summary(arms, line, args.window)
    mechanisms = dict(Counter(line.stream["mechanism"].to_list()))
    return {
        "command": " ".join(["python", "bench/stream.py", *sys.argv[1:]]),
        "data": args.data,
        "config": [Path(args.config).relative_to(ROOT).as_posix() if args.config == str(CONFIG) else args.config]
        + settings(args),
        "held_out_events": held_out(args.every),  # by each training, for early stopping
        "split": line.split,
        "train_events": line.train.height,
        "stream_events": line.stream.height,
        "every": args.every,
        "window": args.window,
        "budget": args.budget,
        "follow_hr": FOLLOW_HR,
        "change": None
        if line.change is None
        else {"day": round(line.change.time / 86400, 2), "brand": line.change.brand, "items": len(line.change.items)}
        | {"category": line.change.category, "stream_mechanisms": mechanisms, "unused_fields": unused[0]},
        "base_train_seconds": {"wall": round(base_cost.wall, 2), "cpu": round(base_cost.cpu, 2)},
        "server_startup_seconds": [round(s, 2) for s in startup],
        **{name: result[name] for name in args.arms},
        "bar": bars(result),
        "new_items": new_items(arms, line, args.every),
        "server_problems": {k: v for k, v in problems.items() if v},
        "load_average": load_average(),
        "seconds": round(time.perf_counter() - tic, 1),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="movielens:../shared/data/ml-100k", help="a timestamped data set")
    parser.add_argument("--config", default=str(CONFIG), help="the base config (default: tiny.yaml + SETTINGS)")
    parser.add_argument("--set", action="append", default=[], help="another config override")
    parser.add_argument("--every", type=int, default=2000, help="events between two updates")
    parser.add_argument("--events", type=int, default=6000, help="events of the stream (after the training part)")
    parser.add_argument("--train-share", type=float, default=0.5, help="the oldest share of events trained on")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds each fine-tune may train")
    parser.add_argument("--window", type=int, default=500, help="events per window of the curves")
    parser.add_argument("--arms", default=",".join(ARMS), help="a comma-separated subset of " + ", ".join(ARMS))
    parser.add_argument("--out", help="the result file (default bench/results/stream.json)")
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.out = args.out or str(RESULTS / "stream_smoke.json")
    if not 0 < args.train_share < 1:
        parser.error(f"--train-share {args.train_share} must be between 0 and 1")
    if args.every < 1 or args.events < 1 or args.window < 1:
        parser.error("--every, --events and --window must be at least 1")
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not args.arms or set(args.arms) - set(ARMS):
        parser.error(f"--arms {','.join(args.arms)}: give some of {', '.join(ARMS)}")
    args.out = args.out or str(RESULTS / "stream.json")
    return args


def write(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` with where it was measured (as ``_common.write``), to ``path``."""
    header = {"benchmark": path.stem, "date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit()}
    payload = header | {"uncommitted": uncommitted(), "machine": machine(), **payload}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    payload = run_bench(args)
    write(Path(args.out), payload)
    table = {a: {k: payload[a][k] for k in ("NDCG@10", "HR@10", "seconds", "wall_seconds")} for a in args.arms}
    print(json.dumps(table | {"bar": payload["bar"]}, indent=1))


if __name__ == "__main__":
    main()
