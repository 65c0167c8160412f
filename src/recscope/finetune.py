"""Fine-tuning from the store: warm-start a run's serving version on what users did since, and
publish the result as a new version, promoted only when measured not worse (DESIGN.md, "Live").

    finetune(run, store=Store.for_run(run), budget=60.0).to_dict()

**What it learns from.** The parent is the version the store says every worker serves, else the
run's current one. The new events are the store's events *received* after the parent was
created (or after ``since``: a version id, meaning its creation time, or a time): received, not
stamped, so a replayed stream whose events carry old timestamps still counts. Forgotten users
(the store's tombstones) are honoured: their training sequences are neither read nor replayed,
and the lineage records the tombstones honoured (``forget.honoured``); the new version still
descends from its parent's weights, so it carries the parent's marks (``forget.forgotten_counts``). A user's sequence
is what the service reads: their training sequence in the run (none for a user only the store
knows) followed by every stored event of theirs in (timestamp, arrival) order. Windows of
``model.max_len + 1`` items are cut from its end backwards, as training cuts them, and those
holding at least one new event as a target are trained on, with the new events as their only
targets: the older items are context. (Cut from the whole sequence, most targets of such a
window are old purchases, at which every item added since is a negative of the softmax: the
stream's own new items were pushed down where the stream should lift them.) To this,
``finetune.replay`` x as many windows of the run's own training split are added (a seeded
sample, every item of them a target), so the model does not forget the older shoppers. Events
on items the version does not know (not in the catalog, not added to the store) are skipped and
counted.

**Dismissals as input.** A user's dismissals (feedback "dismiss", given since or before) are
tokens of their sequence at the time they were given, as the service reads them for a version
that knows the label "dismiss" (``recscope.histories``): the fine-tuned version learns that label
whenever the store holds a dismissal (a new row of the event embedding, zero at first:
``SeqRec.grow_events``; the parent's labels with "dismiss" appended, ``["", "dismiss"]`` for a
parent that read none) and records its labels with it (``versions.event_labels``). A dismissal
is context, never a target (the position before it is not trained to predict the dismissed item:
that would teach the opposite); the purchases after it stay targets. ``finetune.dismiss_token``
says how its token reads: its item's token plus the label's embedding, or minus its item's token
plus the label's (pointing away from the item's brand and category from the first step). Every
other event is read with label 0 in fine-tuning, as before.

**Growing the item table.** Items the store added (``Store.items_added``) that the parent does
not hold a row for get one, built exactly as the service scores them today
(``Snapshot.with_items``: attribute and text fields, zero id embedding), so a new item starts
at its cold-start score; its id embedding then trains on the events that name it. The run's
data files hold the trained catalog only, so a grown version carries its extension: the
items beyond the trained catalog (its parent's extension, then the new ones; id, title,
attributes in row order) in its ``items.json`` (``versions.added_items``), which
``Snapshot.load`` applies; an item the version holds a row for counts as trained for it.

**The loss.** The next-item cross-entropy (full softmax over the grown catalog) at the batch's
targets (a new window's new events, a replayed window's every item after its first), averaged
over targets, plus the explicit negatives' term:
for a negative (user u, item j, time t), h = the history u had at t (training sequence plus
the stored events received by t, its last ``max_len`` items) and p_j = softmax(scores(h))_j
the model's probability that j is u's next item,

    loss = mean_targets CE  +  finetune.negative_weight x mean_negatives [ -log(1 - p_j) ]

(the unlikelihood term: zero when p_j is zero, its gradient pushes j's score down against
every other item, so it falls in rank for that history). A negative is a dismissal (feedback
"dismiss" given since; its history ends with the dismissal itself, and with
``finetune.dismiss_mates`` the items sharing the named fields' values with j are negatives at
that history too) or an ignored impression: an item of a list served to a known user since,
at least ``finetune.ignore_window`` seconds ago, with no click, purchase or dismissal on it in
that list and no event of that user on that item in the window after it was served (younger
impressions are not read: they may still be acted on). At most ``finetune.max_negatives``, the
newest. ``--budget SECONDS`` bounds the training loop's wall time: it stops after the step
that reaches it (one step at least).

**Promotion.** Held out: the last new event of a seeded sample of the store users whose
sequence ends with a new event that follows at least one item (``finetune.holdout`` of them, at
least ``finetune.min_cases``); those events are never trained on, as target, as context of a
later window or as history of a negative. (Holding out every such user's last event, as
before, kept about half of everything there was to learn out of training on a stream where
most users have one or two new events: 999 of 2,000.) Parent (over the
grown catalog, the new items at their cold-start rows: what the service scores now) and
candidate rank it over the whole catalog after the user's history before it (history items
excluded when ``eval.exclude_history``), with the ranking and metric code of evaluation
(``ranking.rank_chunks``, ``metrics.all_metrics``), and the paired difference of their NDCG@10
with a 90% bootstrap interval over the cases (:func:`paired_difference`). The candidate is
promoted unless that whole interval lies below minus ``finetune.tolerance`` (``finetune.gate``
"interval", the default: a verdict on 20 cases refuses only a measurably worse version; "point":
promoted when its NDCG@10 >= the parent's minus the tolerance; :func:`promotes`); else it is
published unpromoted, verdict "kept", with the numbers in its reason. With fewer than
``finetune.min_cases`` users to sample from nothing can be measured: the fine-tune trains on
every new event, reports the in-sample numbers, and keeps its version unpromoted (promote it by
hand: ``recscope versions RUN --promote ID``). A fine-tune with no new window and no negative
publishes nothing (verdict "nothing_to_learn").

**Timings.** The result's ``timings``: wall seconds of each stage (``load``: the lock, the
snapshot, the store, the plan; ``train``; ``evaluate``; ``publish``) and CPU seconds
(user + system): ``cpu`` of the command's work, ``train_cpu`` of its training loop, and
``startup_cpu``, the process's before the work began (starting Python, importing torch and
recscope): the fixed cost a job pays however little it learns.

**Privacy.** Fine-tuning is not differentially private: on a run trained with
``train.privacy=dp`` the lineage's ``privacy`` says the new version is not covered by the
run's (epsilon, delta).

**Kill safety.** The run's lock (``RunLock(run, "finetune")``) keeps two fine-tunes (or a
fine-tune and training) apart; a SIGKILLed one leaves a stale lock the next takes over. Until
the very end the store is only read and the run only gets a temporary weights file; the version
is written under a temporary name and renamed whole (``versions.publish``), then promoted
(``versions.promote``: one rename) and, with a store, named to every worker
(``Store.set_serving``). Killed anywhere before, the serving version, ``versions/current`` and
the store are as they were.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session

from recscope import versions
from recscope.config import Config, RetrievalConfig
from recscope.data import Dataset, split_of
from recscope.data.split import training_windows
from recscope.errors import RecscopeError, RunError
from recscope.files import atomic_write
from recscope.forget import honoured
from recscope.histories import DISMISS
from recscope.lock import RunLock
from recscope.metrics import all_metrics
from recscope.model import SeqRec
from recscope.ranking import rank_chunks
from recscope.run import load_info, save_weights
from recscope.snapshot import Snapshot

STAGES = ("loading", "training", "evaluating", "publishing", "done")
VERDICTS = ("promoted", "kept", "nothing_to_learn")
SOURCE = "finetune"
ACTED = ("click", "purchase", "dismiss")  # feedback that makes an impression not ignored
_TMP_WEIGHTS = ".finetune.{pid}.safetensors"  # the candidate's weights before publishing, in the run


@dataclass
class FinetuneResult:
    """What ``recscope finetune --json`` prints."""

    version: str | None  # the new version; None when there was nothing to learn
    parent: str
    promoted: bool
    verdict: str  # one of VERDICTS
    reason: str
    metrics: dict[str, Any]  # {"candidate": {...}, "parent": {...}, "tolerance": x, "cases": n}
    lineage: dict[str, Any]  # parent, since, until, events, feedback, negatives, new_items, replay_users
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # see the module's docstring, "Timings"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ProgressFile:
    """``--progress FILE``: ``{"stage", "done" (0..1), "message", "pid"}`` rewritten atomically."""

    def __init__(self, path: Path | None, console: Console | None = None):
        self.path, self.console, self._shown = path, console, 0.0

    def __call__(self, stage: str, done: float, message: str, *, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._shown < 0.2:
            return
        self._shown = now
        if self.console is not None and force:
            self.console.print(f"finetune: {stage}: {message}", highlight=False)
        if self.path is None:
            return
        state = {"stage": stage, "done": round(min(max(done, 0.0), 1.0), 4), "message": message, "pid": os.getpid()}
        atomic_write(self.path, lambda p: p.write_text(json.dumps(state)), per_process=True)


def since_time(run: Path, since: str | float | None, parent: versions.Version) -> float:
    """The epoch seconds ``--since`` names: a version id (its creation time), epoch seconds or an
    ISO time (UTC unless it says otherwise); None: the parent's creation time."""
    if since is None or since == "":
        return parent.created
    if isinstance(since, int | float):
        return float(since)
    text = str(since).strip()
    if (Path(run) / versions.VERSIONS / text / "version.json").exists():
        return versions.read(run, text).created
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        known = ", ".join(v.id for v in versions.listing(run)) or "none"
        raise RunError(
            f"--since {text[:60]!r} is neither a version of {run} nor a time",
            fix=f"give a version id ({known}), epoch seconds, or an ISO time such as 2024-05-01T12:00:00Z",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# ---------------------------------------------------------------------- what the store says
@dataclass
class StoreReading:
    """The store, read once: every stored event per user (in history order) and the negatives."""

    events: dict[str, list[tuple[str, float, float]]]  # user -> [(item_id, timestamp, received_at)]
    negatives: list[tuple[str, str, float, str]]  # (user_id, item_id, when, "dismiss" | "ignored")
    feedback: int  # feedback rows given since
    # user -> [(item_id, when)]: every dismissal the store holds (given since or before), oldest first
    dismissals: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def read_store(store, since: float, now: float, window: float, limit: int) -> StoreReading:
    from recscope.serve.models import Event, Feedback, Served, ServedItem

    events: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    with Session(store.engine) as session:
        for user, item, stamp, received in session.execute(
            select(Event.user_id, Event.item_id, Event.timestamp, Event.received_at).order_by(Event.timestamp, Event.id)
        ):
            events[user].append((item, float(stamp), float(received)))
        feedback = session.execute(
            select(Feedback.request_id, Feedback.user_id, Feedback.item_id, Feedback.action, Feedback.created_at)
            .where(Feedback.created_at >= since)
            .order_by(Feedback.created_at.desc())
        ).all()
        dismissals: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for user, item, at in session.execute(
            select(Feedback.user_id, Feedback.item_id, Feedback.created_at)
            .where(Feedback.action == DISMISS)
            .order_by(Feedback.created_at, Feedback.id)
        ):
            dismissals[user].append((item, float(at)))
        shown = session.execute(
            select(Served.request_id, Served.user_id, Served.created_at, ServedItem.item_id)
            .join(ServedItem, ServedItem.request_id == Served.request_id)
            .where(Served.user_id.is_not(None), Served.created_at >= since, Served.created_at <= now - window)
            .order_by(Served.created_at.desc(), ServedItem.rank)
        ).all()
    negatives = [(user, item, float(at), "dismiss") for _, user, item, action, at in feedback if action == "dismiss"]
    acted = {(request, item) for request, _, item, action, _ in feedback if action in ACTED}
    for request, user, at, item in shown:
        if (request, item) in acted:
            continue
        if any(i == item and (at <= s <= at + window or at <= r <= at + window) for i, s, r in events.get(user, ())):
            continue
        negatives.append((user, item, float(at), "ignored"))
    negatives.sort(key=lambda n: -n[2])
    return StoreReading(dict(events), negatives[:limit], len(feedback), dict(dismissals))


# ---------------------------------------------------------------------- the data of one fine-tune
@dataclass
class Plan:
    """What one fine-tune trains and measures on (dense indices of the grown catalog)."""

    windows: torch.Tensor  # (W, max_len + 1) new windows, then the replayed ones
    targets: torch.Tensor  # (W, max_len + 1) bool: the positions trained as targets (new windows: the new events)
    new_windows: int
    replay_users: int
    neg_histories: torch.Tensor  # (N, max_len) left-padded
    neg_items: torch.Tensor  # (N,)
    cases: list[tuple[np.ndarray, int]]  # held-out (history before it, target)
    held_out: bool  # the cases were kept out of training (enough users to sample them from)
    events: int  # new events trained on or held out
    skipped: int  # new events on items the version does not know
    neg_kinds: dict[str, int] = field(default_factory=dict)
    case_codes: list[np.ndarray] | None = None  # the cases' histories' event labels, when window_events has them
    # (W, max_len + 1) and (N, max_len): the event labels of the windows and of the negatives'
    # histories (a dismissal's label "dismiss"), when the fine-tuned model reads labels; else None
    window_events: torch.Tensor | None = None
    neg_events: torch.Tensor | None = None
    labels: list[str] | None = None  # the fine-tuned model's event labels, when a fine-tune gave it "dismiss"


def _pad(seq: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros(width, dtype=np.int64)
    seq = seq[-width:]
    if len(seq):
        out[-len(seq) :] = seq
    return out


def _tail_windows(
    seq: np.ndarray, new: np.ndarray, codes: np.ndarray, max_len: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Windows of ``max_len + 1`` cut from the end of ``seq`` backwards (as training cuts them),
    those with at least one target marked ``new``, each with its ``new`` marks and its event
    ``codes`` (padded alike)."""
    out = []
    end = len(seq)
    while end >= 2:
        start = max(0, end - max_len - 1)
        marks = new[start:end].copy()
        marks[0] = False  # the window's first item is never a target
        if marks.any():
            width = max_len + 1
            out.append((_pad(seq[start:end], width), _pad(marks, width).astype(bool), _pad(codes[start:end], width)))
        end -= max_len
    return out


def _holdout(sequences: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], ft) -> tuple[list[str], bool]:
    """The users whose last event is held out for the promotion gate, and whether there were
    enough to hold any out (``finetune.min_cases``; else all of them, measured in-sample)."""
    eligible = sorted(u for u, (items, new, _) in sequences.items() if len(items) >= 2 and new[-1])
    if len(eligible) < ft.min_cases:
        return eligible, False
    n = min(len(eligible), max(math.ceil(ft.holdout * len(eligible)), ft.min_cases))
    picked = np.random.default_rng(ft.seed).choice(len(eligible), n, replace=False)
    return [eligible[i] for i in np.sort(picked)], True


def plan(
    data: Dataset,
    trained: Dataset,
    reading: StoreReading,
    since: float,
    config: Config,
    forgotten=frozenset(),
    labels: list[str] | None = None,
) -> Plan:
    """The windows, negatives and held-out cases of a fine-tune over ``data`` (the grown catalog;
    ``trained``: the parent's, whose training split is replayed). The ``forgotten`` users' training
    sequences are neither replayed nor read: their stored events (posted after their tombstone)
    are a new history. ``labels``: the parent's event labels (None: it reads none).

    A user's dismissals are tokens of their sequence at their times (label "dismiss", the parent's
    labels with "dismiss" appended when it lacks it: ``Plan.labels``), as the service reads them
    for such a version: context of the windows, never a target (the position before one is not
    trained to predict the dismissed item), in the negatives' histories (a dismissal's history
    ends with it), and in the held-out cases' histories."""
    ft, max_len = config.finetune, config.model.max_len

    def find_user(user: str) -> int | None:
        return None if user in forgotten else data.find_user(user)

    # user -> (items, new, received, dismissal marks): a dismissal is a token, never new
    sequences: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    events = skipped = 0
    for user in dict.fromkeys([*reading.events, *reading.dismissals]):
        u = find_user(user)
        stored = reading.events.get(user, [])
        if u is None and not stored:
            continue  # dismissals alone are no history (the service does not know the user either)
        base = data.sequence(u) if u is not None else np.zeros(0, dtype=np.int64)
        items, new, received = list(base), [False] * len(base), [float("-inf")] * len(base)
        dismiss = [False] * len(base)
        merged = [(stamp, 0, i, item_id, got) for i, (item_id, stamp, got) in enumerate(stored)]
        merged += [(at, 1, i, item_id, at) for i, (item_id, at) in enumerate(reading.dismissals.get(user, []))]
        for _, kind, _, item_id, got in sorted(merged, key=lambda m: m[:3]):  # as Store.live_history orders them
            index = data.find(item_id)
            if index is None:
                skipped += kind == 0 and got >= since
                continue
            items.append(index)
            new.append(kind == 0 and got >= since)
            received.append(got)
            dismiss.append(kind == 1)
            events += kind == 0 and got >= since
        sequences[user] = tuple(
            np.array(a, dtype=t) for a, t in ((items, np.int64), (new, bool), (received, float), (dismiss, bool))
        )
    reads = labels is not None and DISMISS in labels
    if not reads and any(seq[3].any() for seq in sequences.values()):
        labels = [*(labels or [""]), DISMISS]
    elif not reads:
        labels = None
    code = labels.index(DISMISS) if labels is not None else 0

    def codes(marks: np.ndarray) -> np.ndarray:
        return marks.astype(np.int64) * code

    # The gate's case is a user's last event (a dismissal is no case): the history before it, the
    # dismissals before it included, as the service would read it when the event came.
    sampled, held_out = _holdout({u: tuple(a[~seq[3]] for a in seq[:3]) for u, seq in sequences.items()}, ft)
    last = {u: int(np.flatnonzero(~sequences[u][3])[-1]) for u in sampled}
    cases = [(sequences[u][0][: last[u]], int(sequences[u][0][last[u]])) for u in sampled]
    case_codes = [codes(sequences[u][3][: last[u]]) for u in sampled]
    if held_out:  # the gate's events are gone from everything trained on, negatives' histories included
        for u in sampled:
            sequences[u] = tuple(np.delete(a, last[u]) for a in sequences[u])
    windows, marks, labelled = [], [], []
    for items, new, _, dismiss in sequences.values():
        for window, mark, label in _tail_windows(items, new, codes(dismiss), max_len):
            windows.append(window)
            marks.append(mark)
            labelled.append(label)
    new_windows = len(windows)
    replay_users = 0
    if new_windows and ft.replay > 0:
        split = split_of(trained, config)
        gone = [i for i in map(trained.find_user, forgotten) if i is not None]
        train = split.train.copy()
        for i in gone:
            train[trained.offsets[i] : trained.offsets[i + 1]] = False
        old = training_windows(trained, train, max_len)
        n = min(len(old), round(ft.replay * new_windows))
        if n:
            picked = np.random.default_rng(ft.seed).choice(len(old), n, replace=False)
            windows.extend(old[picked])
            marks.extend(old[picked] > 0)
            labelled.extend(np.zeros_like(old[picked]))  # the run's events: label 0, as fine-tuning reads them
            replay_users = n  # windows of distinct users mostly; counted as windows replayed
    mates = _mates(data, ft.dismiss_mates)
    neg_histories, neg_labels, neg_items, kinds = [], [], [], {"dismiss": 0, "ignored": 0, "mates": 0}
    for user, item_id, at, kind in reading.negatives:
        index = data.find(item_id)
        if index is None or user not in sequences and find_user(user) is None:
            continue
        if user in sequences:
            items, _, received, dismiss = sequences[user]
            history, label = items[received <= at], codes(dismiss[received <= at])
        else:
            history = data.sequence(find_user(user))
            label = np.zeros(len(history), dtype=np.int64)
        if not len(history):
            continue
        others = mates(index) if kind == DISMISS else []
        for negative in [index, *others]:
            neg_histories.append(_pad(history, max_len))
            neg_labels.append(_pad(label, max_len))
            neg_items.append(negative)
        kinds[kind] += 1
        kinds["mates"] += len(others)
    width = max_len + 1
    reading_labels = labels is not None
    return Plan(
        windows=torch.from_numpy(np.stack(windows)) if windows else torch.zeros(0, width, dtype=torch.long),
        targets=torch.from_numpy(np.stack(marks)) if marks else torch.zeros(0, width, dtype=torch.bool),
        new_windows=new_windows,
        replay_users=replay_users,
        neg_histories=torch.from_numpy(np.stack(neg_histories))
        if neg_histories
        else torch.zeros(0, max_len, dtype=torch.long),
        neg_items=torch.tensor(neg_items, dtype=torch.long),
        cases=cases,
        held_out=held_out,
        events=events,
        skipped=skipped,
        neg_kinds=kinds,
        window_events=(torch.from_numpy(np.stack(labelled)) if labelled else torch.zeros(0, width, dtype=torch.long))
        if reading_labels
        else None,
        neg_events=(torch.from_numpy(np.stack(neg_labels)) if neg_labels else torch.zeros(0, max_len, dtype=torch.long))
        if reading_labels
        else None,
        labels=labels,
        case_codes=case_codes if reading_labels else None,
    )


def _mates(data: Dataset, fields: tuple[str, ...]) -> Callable[[int], list[int]]:
    """item -> the other items sharing a value of each of ``fields`` with it (a multi-valued
    field: any value, so a category path's department is enough), trained items only:
    ``finetune.dismiss_mates``, the items a dismissal also counts as negatives. () : none."""
    if not fields:
        return lambda item: []
    by_name = {f.name: f for f in data.fields}
    unknown = [name for name in fields if name not in by_name]
    if unknown:
        raise RunError(
            f"finetune.dismiss_mates names {unknown[0]!r}, not a field of the catalog",
            fix=f"name fields of the catalog ({', '.join(by_name) or 'it has none'}), or set it to []",
        )

    def mates(item: int) -> list[int]:
        shared = np.ones(len(data.item_ids), dtype=bool)
        for name in fields:
            values = by_name[name].values  # (n_items + 1, width) value indices, 0 = none
            own = values[item][values[item] > 0]
            shared &= np.isin(values, own).any(axis=1)
        shared[[0, item]] = False
        return np.flatnonzero(shared).tolist()

    return mates


# ---------------------------------------------------------------------- training and measuring
def negative_term(
    model: SeqRec, histories: torch.Tensor, items: torch.Tensor, events: torch.Tensor | None = None
) -> torch.Tensor:
    """(N,) -log(1 - p_j): p_j the softmax share of item ``items`` (N,) as the next item after
    ``histories`` (N, T) (and their event labels ``events``) over the whole catalog (padding excluded)."""
    hidden = model(histories, last_only=True, events=events).hidden[:, -1]  # (N, C)
    logits = model.predict_many(hidden, model.item_table())  # (N, n_items + 1)
    logits[:, 0] = float("-inf")
    log_p = F.log_softmax(logits, dim=-1).gather(1, items[:, None])[:, 0]
    return -torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))


def train(
    model: SeqRec,
    work: Plan,
    config: Config,
    budget: float | None,
    report: Callable[[float, str], None],
    trained_items: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``work``; returns {"steps", "epochs", "stopped", "loss"}.

    ``trained_items``: the size of the run's trained catalog. The replayed windows come from
    the run's training data, from before any item added since existed, so those items get no
    logit there (``SeqRec.loss``'s ``unseen``): counted as negatives of every replayed target,
    a new item's zero-started id row is pushed down at every step (AdamW moves a row by about
    the learning rate whatever its gradient's size) and the items launched after training fell
    out of the lists their buyers get (on the replayed stream, launched items' HR@10 0.033
    frozen, 0.007 fine-tuned)."""
    ft, batch_size = config.finetune, config.train.batch_size
    generator = torch.Generator().manual_seed(ft.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=ft.lr, weight_decay=config.train.weight_decay)
    unseen = None
    if trained_items is not None and model.cfg.n_items > trained_items:
        unseen = torch.zeros(model.cfg.n_items + 1, dtype=torch.bool)
        unseen[trained_items + 1 :] = True
    use_negatives = ft.negative_weight > 0 and len(work.neg_items) > 0
    # The window batches set the steps; the negatives are spread over them (at most a batch a
    # step, a fresh sample each epoch), so each step weighs both sides as the loss says. Steps
    # of negatives alone (an epoch as long as the negatives' batches) trained the negative term
    # alone 9 steps in 10 on a replayed stream with ~8 ignored impressions a purchase, and
    # AdamW's step does not shrink with the weight: NDCG@10 fell 16-fold.
    per_epoch = -(-len(work.windows) // batch_size) or (-(-len(work.neg_items) // batch_size) if use_negatives else 0)
    per_step = min(-(-len(work.neg_items) // max(per_epoch, 1)), batch_size) if use_negatives else 0
    total = max(per_epoch * ft.epochs, 1)
    model.train()
    started, cpu = time.perf_counter(), time.process_time()
    steps, stopped, last = 0, "epochs", 0.0
    for epoch in range(ft.epochs):
        order = torch.randperm(len(work.windows), generator=generator)
        negatives = torch.randperm(len(work.neg_items), generator=generator)
        for i in range(per_epoch):
            if steps and budget is not None and time.perf_counter() - started >= budget:
                stopped = "budget"
                break
            loss = torch.zeros(())
            index = order[i * batch_size : (i + 1) * batch_size]
            if len(index):
                loss = loss + _windows_loss(model, work, index, unseen)
            chosen = negatives[i * per_step : (i + 1) * per_step]
            if len(chosen):
                labels = None if work.neg_events is None else work.neg_events[chosen]
                term = negative_term(model, work.neg_histories[chosen], work.neg_items[chosen], labels)
                loss = loss + ft.negative_weight * term.mean()
            if not loss.requires_grad:  # nothing to learn from in this step
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps, last = steps + 1, float(loss.item())
            report(steps / total, f"epoch {epoch + 1}/{ft.epochs}, step {steps}/{total}, loss {last:.4f}")
        if stopped == "budget":
            break
    model.eval()
    return {
        "steps": steps,
        "stopped": stopped,
        "loss": round(last, 6),
        "train_seconds": time.perf_counter() - started,
        "train_cpu_seconds": time.process_time() - cpu,
    }


def _windows_loss(model: SeqRec, work: Plan, index: torch.Tensor, unseen: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy over the targets of the windows at ``index`` (B,): a target is a
    position ``work.targets`` marks; an unmarked item is context only (a zero target gets no logit)."""
    windows, marks = work.windows[index], work.targets[index]  # (B, max_len + 1), left-padded
    width = max(int((windows > 0).sum(-1).max()), 1)  # columns that are padding in every row cost nothing
    windows, marks = windows[:, -width:], marks[:, -width:]
    inputs, targets = windows[:, :-1], windows[:, 1:] * marks[:, 1:]  # (B, width - 1)
    labels = None if work.window_events is None else work.window_events[index][:, -width:-1]
    count = float(((inputs > 0) & (targets > 0)).sum())
    new = index < work.new_windows

    def part(rows: torch.Tensor, unseen_items: torch.Tensor | None) -> torch.Tensor:
        events = None if labels is None else labels[rows]
        return model.loss(inputs[rows], targets[rows], None, "sum", unseen_items, events=events)

    summed = part(new, None) if new.any() else 0.0
    if not new.all():  # replayed windows: the items added since get no logit (see train)
        summed = summed + part(~new, unseen)
    return summed / max(count, 1.0)


def measure(
    model: SeqRec, cases: list[tuple[np.ndarray, int]], config: Config, codes: list[np.ndarray] | None = None
) -> dict[str, float]:
    """NDCG@10 and HR@10 of ``cases`` (history, target), full ranking over the model's catalog;
    ``codes``: the histories' event labels (aligned with ``cases``; None: none read)."""
    return _metrics(case_ranks(model, cases, config, codes))


def _metrics(ranks: np.ndarray) -> dict[str, float]:
    if not len(ranks):
        return {"NDCG@10": 0.0, "HR@10": 0.0}
    metrics = all_metrics(ranks, (10,))
    return {"NDCG@10": metrics["NDCG@10"], "HR@10": metrics["HR@10"]}


@torch.no_grad()
def case_ranks(
    model: SeqRec, cases: list[tuple[np.ndarray, int]], config: Config, codes: list[np.ndarray] | None = None
) -> np.ndarray:
    """(len(cases),) each case's 0-based rank of its target (see :func:`measure`)."""
    if not cases:
        return np.zeros(0, dtype=np.int64)
    max_len = config.model.max_len
    table = model.item_table()
    ranks = []
    rng = np.random.default_rng(config.finetune.seed)
    for start in range(0, len(cases), config.eval.batch_size):
        part = cases[start : start + config.eval.batch_size]
        histories = torch.from_numpy(np.stack([_pad(h, max_len) for h, _ in part]))
        labels = (
            None
            if codes is None
            else torch.from_numpy(np.stack([_pad(c, max_len) for c in codes[start:][: len(part)]]))
        )
        longest = max(len(h) for h, _ in part)
        owned = torch.from_numpy(np.stack([_pad(h, longest) for h, _ in part])) if config.eval.exclude_history else None
        targets = torch.tensor([t for _, t in part], dtype=torch.long)
        scores = model.score(histories, table, labels).float()
        own = scores.gather(1, targets[:, None])[:, 0]
        ranks.append(rank_chunks([(0, scores)], targets, own, owned=owned, rng=rng).numpy())
    return np.concatenate(ranks)


def _parent_ranks(parent: Snapshot, work: Plan, config: Config) -> np.ndarray:
    """:func:`case_ranks` of the parent on the held-out cases as it reads them (as it serves
    them): with the dismissals as events when it reads the label, else without them."""
    if work.case_codes is None or parent.reads_dismissals:
        return case_ranks(parent.model, work.cases, config, work.case_codes if parent.reads_dismissals else None)
    kept = [c == 0 for c in work.case_codes]  # the fine-tune labels nothing but dismissals
    cases = [(h[k], t) for (h, t), k in zip(work.cases, kept, strict=True)]
    return case_ranks(parent.model, cases, config)


def promotes(gate: str, change: float, difference: dict[str, float], tolerance: float) -> tuple[bool, str]:
    """The gate's verdict on a candidate whose NDCG@10 is ``change`` from the parent's (with its
    interval, :func:`paired_difference`), and the words the reason gives it (finetune.gate):
    "point" promotes when ``change >= -tolerance``; "interval" unless the whole interval lies
    below ``-tolerance``, so a verdict on a few cases refuses only a measurably worse version."""
    if gate == "interval":
        promoted = difference["high"] >= -tolerance
        return promoted, ("not measurably worse than" if promoted else "measurably worse than")
    promoted = change >= -tolerance
    return promoted, ("within" if promoted else "worse than")


INTERVAL = 0.9  # the confidence level of the gate's interval on the NDCG@10 difference
RESAMPLES = 2000  # bootstrap resamples of the held-out cases for it


def paired_difference(candidate: np.ndarray, parent: np.ndarray, seed: int) -> dict[str, float]:
    """The candidate's NDCG@10 minus the parent's on the same cases (0-based target ranks of
    each), with a paired percentile-bootstrap interval at :data:`INTERVAL` (the cases resampled
    together, so what both get right or wrong cancels): how far the held-out cases can tell the
    two apart: the default gate decides on it (:func:`promotes`)."""
    gains = [np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0) for r in (candidate, parent)]
    diffs = gains[0] - gains[1]
    out = {"NDCG@10": float(diffs.mean()) if len(diffs) else 0.0, "level": INTERVAL, "resamples": RESAMPLES}
    if len(diffs) < 2:
        return {**out, "low": out["NDCG@10"], "high": out["NDCG@10"]}
    from scipy.stats import bootstrap

    found = bootstrap(
        (diffs,),
        np.mean,
        confidence_level=INTERVAL,
        n_resamples=RESAMPLES,
        method="percentile",
        batch=100,  # resamples drawn at a time: memory stays at 100 x the cases
        random_state=np.random.default_rng(seed),
    ).confidence_interval
    return {**out, "low": float(found.low), "high": float(found.high)}


def _text_vectors(config: Config) -> Callable[[Dataset, list[int]], torch.Tensor | None]:
    """The text vectors of new items, by the run's own encoder (as the service computes them)."""

    def vectors(data: Dataset, rows: list[int]) -> torch.Tensor | None:
        if not config.model.text_dim:
            return None
        from recscope.features.text import encode_texts

        f = config.features
        return torch.from_numpy(
            encode_texts(data.item_texts(rows), f.text_encoder, f.text_cache, f.text_batch_size).vectors
        )

    return vectors


# ---------------------------------------------------------------------- the whole fine-tune
def finetune(
    run: str | Path,
    store,
    *,
    since: str | float | None = None,
    budget: float | None = None,
    progress: Path | None = None,
    console: Console | None = None,
    config: Config | None = None,
) -> FinetuneResult:
    """Fine-tune ``run``'s serving version on ``store`` (a :class:`recscope.serve.store.Store`)
    and publish the result (see the module's docstring). ``config``: the run's config with other
    ``finetune`` settings (default: the run's own)."""
    run = Path(run)
    tic = time.perf_counter()
    clock = _Stages()
    report = ProgressFile(progress, console)
    if budget is not None and not budget > 0:
        raise RecscopeError(f"--budget {budget} must be a positive number of seconds", fix="e.g. --budget 60")
    report("loading", 0.0, f"reading {run} and its store")
    with RunLock(run, "finetune", console, create=False):
        for leftover in run.glob(_TMP_WEIGHTS.format(pid="*")):
            leftover.unlink(missing_ok=True)  # a killed fine-tune's (we hold the lock: none is running)
        parent_id = store.serving() or versions.current(run)
        if parent_id is None:
            raise RunError(
                f"{run} has no model version to fine-tune (trained before versions existed)",
                fix="train the run again with this recscope (recscope train --out <new dir>)",
            )
        parent = versions.read(run, parent_id)
        start = since_time(run, since, parent)
        snapshot = Snapshot.load(run, parent_id, RetrievalConfig(ann="off"))
        config = dataclasses.replace(snapshot.config, finetune=(config or snapshot.config).finetune)
        if config.train.task != "next_item":
            raise RunError(
                f"{run} is a {config.train.task} run: fine-tuning learns next-item runs only",
                fix="fine-tune a run trained with train.task=next_item",
            )
        ft = config.finetune
        now = time.time()
        reading = read_store(store, start, now, ft.ignore_window, ft.max_negatives)
        new_items = [i for i in store.items_added() if not snapshot.trained(i.item_id)]
        grown, _ = snapshot.with_items([(i.item_id, i.title, i.attributes) for i in new_items], _text_vectors(config))
        forgotten = store.forgotten()
        parent_labels = None if snapshot.inputs is None else snapshot.inputs.labels
        work = plan(grown.data, snapshot.data, reading, start, config, forgotten, parent_labels)
        lineage = {
            "parent": parent_id,
            "since": start,
            "until": now,
            "events": work.events,
            "feedback": reading.feedback,
            "negatives": len(work.neg_items),
            "new_items": len(new_items),
            "replay_users": work.replay_users,
            "tombstones": honoured(forgotten, now),
        }
        spent = snapshot.info.state.privacy
        if spent is not None:  # a DP run's guarantee covers its trained weights, not what a fine-tune adds
            lineage["privacy"] = (
                f"not private: fine-tuned without DP on the store's events; the run's (epsilon {spent.epsilon:g}, "
                f"delta {spent.delta:.3g}) covers its own training data, not this version's"
            )
        if work.new_windows == 0 and len(work.neg_items) == 0:
            reason = f"no new event and no negative since {_when(start)}: nothing to learn"
            report("done", 1.0, reason)
            metrics = {"candidate": {}, "parent": {}, "tolerance": ft.tolerance, "cases": 0}
            clock.lap("load")
            return FinetuneResult(
                None, parent_id, False, "nothing_to_learn", reason, metrics, lineage, _since(tic), clock.timings()
            )
        report(
            "training",
            0.0,
            f"{work.events} new events ({work.new_windows} windows, {work.replay_users} replayed), "
            f"{len(work.neg_items)} negatives, {len(new_items)} new items",
        )
        clock.lap("load")
        model = copy.deepcopy(grown.model)
        if snapshot.reads_dismissals:  # the parent's reading of a dismissal is kept
            flipped = grown.model.negated_events
            negated = [] if flipped is None else [work.labels[c] for c in flipped.tolist()]
        else:
            negated = [DISMISS] if work.labels is not None and ft.dismiss_token == "negated" else []
        if work.labels is not None:  # the label "dismiss" gets a row (zero: reads as before)
            model.grow_events(len(work.labels), [work.labels.index(label) for label in negated])
        progress = lambda done, msg: report("training", done, msg, force=False)  # noqa: E731
        trained_items = load_info(run).config.model.n_items  # the run's catalog: what replay windows knew
        fitted = train(model, work, config, budget, progress, trained_items=trained_items)
        clock.lap("train", train_cpu=fitted.get("train_cpu_seconds"))
        report("evaluating", 0.0, f"{len(work.cases)} held-out cases")
        parent_ranks = _parent_ranks(grown, work, config)
        candidate_ranks = case_ranks(model, work.cases, config, work.case_codes)
        before, after = _metrics(parent_ranks), _metrics(candidate_ranks)
        difference = paired_difference(candidate_ranks, parent_ranks, ft.seed)
        metrics = {
            "candidate": after,
            "parent": before,
            "tolerance": ft.tolerance,
            "cases": len(work.cases),
            "difference": difference,
        }
        numbers = (
            f"NDCG@10 {after['NDCG@10']:.4f} against the parent's {before['NDCG@10']:.4f} (difference "
            f"{difference['NDCG@10']:+.4f}, {difference['level']:.0%} interval {difference['low']:+.4f} to "
            f"{difference['high']:+.4f})"
        )
        if not work.held_out:
            promoted = False
            reason = (
                f"only {len(work.cases)} held-out cases (finetune.min_cases={ft.min_cases}): trained on every new "
                f"event, so nothing was measured (in-sample {numbers}); kept unpromoted, promote it by hand"
            )
        else:
            promoted, relation = promotes(ft.gate, after["NDCG@10"] - before["NDCG@10"], difference, ft.tolerance)
            reason = f"{numbers} on {len(work.cases)} held-out newest events: {relation} the tolerance {ft.tolerance}"
        verdict = "promoted" if promoted else "kept"
        clock.lap("evaluate")
        report("publishing", 0.0, verdict)
        extension = [
            {"item_id": i, "title": t, "attributes": a} for i, t, a in versions.added_items(run, parent_id)
        ] + [{"item_id": i.item_id, "title": i.title, "attributes": i.attributes} for i in new_items]
        weights = run / _TMP_WEIGHTS.format(pid=os.getpid())
        try:
            save_weights(weights, model)
            version = versions.publish(
                run,
                weights,
                SOURCE,
                parent_id,
                added_items=extension,
                event_labels=work.labels,
                negated_labels=negated,
                make_current=False,
                lineage=lineage,
                verdict=verdict,
                reason=reason,
                metrics=metrics,
                training=fitted | {"negatives": work.neg_kinds, "skipped_events": work.skipped},
            )
        finally:
            weights.unlink(missing_ok=True)
        if promoted:
            versions.promote(run, version.id)
            store.set_serving(version.id)
        report("done", 1.0, f"version {version.id}: {verdict}")
        clock.lap("publish")
        return FinetuneResult(
            version.id, parent_id, promoted, verdict, reason, metrics, lineage, _since(tic), clock.timings()
        )


def _since(tic: float) -> float:
    return round(time.perf_counter() - tic, 3)


class _Stages:
    """Wall seconds per stage and the CPU seconds the result's ``timings`` report (module docstring)."""

    def __init__(self) -> None:
        self.startup_cpu = time.process_time()  # this process's CPU before the work: start-up, imports
        self.wall, self.train_cpu = time.perf_counter(), None
        self.laps: dict[str, float] = {}

    def lap(self, stage: str, train_cpu: float | None = None) -> None:
        now = time.perf_counter()
        self.laps[stage], self.wall = round(now - self.wall, 3), now
        self.train_cpu = train_cpu if train_cpu is not None else self.train_cpu

    def timings(self) -> dict[str, float]:
        cpu = {"cpu": time.process_time() - self.startup_cpu, "startup_cpu": self.startup_cpu}
        if self.train_cpu is not None:
            cpu["train_cpu"] = self.train_cpu
        return self.laps | {k: round(v, 3) for k, v in cpu.items()}


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
