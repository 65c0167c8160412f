"""Forgetting a user, exactly (DESIGN.md, "Live"; docs/privacy.md).

    forget(run, "U00007", store)          # recscope forget RUN --user U00007 [--db URL]
    retrain(run, store, out)              # recscope retrain RUN [--db URL] --out RUN2

**The tombstone.** ``forget`` deletes every stored row of the user and writes their tombstone in
the same transaction (``Store.forget_user``), as ``DELETE /users/{id}`` does. Every reader checks
it: the service's history source hides the run's training events of a forgotten user
(``serve.live.StoreHistories``), the user lists and the web view leave them out, the report
refuses them. The run's files are immutable and still hold their training events; the
tombstone hides them until ``retrain`` writes a run without them. Events stored after the
tombstone are a new history under the same id.

**Lineage.** Which versions were trained on a forgotten user is worked out from the tombstones
when asked (:func:`forgotten_counts`), so nothing has to be rewritten when a user is forgotten:
a version trained from the run's data (``train``, the sharded ``forget``) was trained on every
user of the run's data forgotten after the tombstones it honoured (``details.tombstones.until``,
-inf when it honoured none); a fine-tune carries its parent's marks (it starts from its weights)
and adds the users whose stored events it read and who were forgotten after it.

**Retraining.** ``retrain`` trains from scratch, with the run's config, on :func:`training_data`:
the run's training data without the forgotten users, followed by the store's events (those on
items the trained catalog does not know are skipped and counted). The new run's version records
the tombstones it honoured (how many and a digest of their ids, not the ids) and its lineage
(parent run, its data fingerprint, the store's events received up to ``until``). The run's data
files are the training data, so a reader checks what was trained on (the tests do). On a run
with sharded towers (``train.tower_shards``) only the shards whose users changed are trained
again (``recscope.shards``); ``forget`` itself does that in place there, publishing a version
whose towers hold no forgotten user.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from recscope import versions
from recscope.data import Dataset
from recscope.data.dataset import Impressions, LoadReport
from recscope.errors import RunError
from recscope.run import load_data, load_info

SOURCE = "retrain"  # the version source of a retrained run's model


def honoured(forgotten: Mapping[str, float], until: float) -> dict[str, Any]:
    """What a version records of the tombstones it honoured: how many, a digest of the sorted
    ids (a user's id is not written into the run that forgot them), and ``until``: the time up
    to which tombstones were read."""
    ids = sorted(forgotten)
    digest = hashlib.sha256("\n".join(ids).encode("utf-8", "surrogatepass")).hexdigest()
    return {"count": len(ids), "digest": "sha256:" + digest, "until": until}


def rebuild(data: Dataset, keep: np.ndarray, stored: Mapping[str, Sequence] = (), name: str | None = None):
    """A Dataset of ``data``'s catalog with the training events of the users ``keep`` (n_users,)
    marks, each followed by their ``stored`` events (user id -> ``StoredEvent`` list, oldest first),
    then the users only ``stored`` holds, in its order; a user left with no event is left out.
    Stored events on items the catalog does not know are skipped: returns (data, skipped)."""
    starts, ends = data.offsets[:-1], data.offsets[1:]
    stored = dict(stored)
    users, pieces, added = [], [], []  # added: per kept user, (items, timestamps, events, values) of the store's
    codes = {t: c for c, t in enumerate(data.event_types)}
    skipped = 0

    def from_store(user_id: str) -> tuple[list, list, list, list]:
        nonlocal skipped
        out: tuple[list, list, list, list] = ([], [], [], [])
        for e in stored.pop(user_id, ()):
            index = data.find(e.item_id)
            if index is None:
                skipped += 1
                continue
            out[0].append(index)
            out[1].append(e.timestamp)
            out[2].append(codes.get(e.event, 0))
            out[3].append(math.nan if e.value is None else e.value)
        return out

    for u, user_id in enumerate(data.user_ids):
        extra = from_store(user_id)
        run_part = (int(starts[u]), int(ends[u])) if keep[u] else (0, 0)
        if run_part[1] > run_part[0] or extra[0]:
            users.append(user_id)
            pieces.append(run_part)
            added.append(extra)
    for user_id in list(stored):
        extra = from_store(user_id)
        if extra[0]:
            users.append(user_id)
            pieces.append((0, 0))
            added.append(extra)
    lengths = np.array([(b - a) + len(x[0]) for (a, b), x in zip(pieces, added, strict=True)], dtype=np.int64)

    def column(array: np.ndarray, part: int, fill) -> np.ndarray:
        chunks = []
        for (a, b), x in zip(pieces, added, strict=True):
            chunks.append(array[a:b])
            chunks.append(np.asarray(x[part] if part >= 0 else [fill] * len(x[0]), dtype=array.dtype))
        return np.concatenate(chunks) if chunks else array[:0]

    impressions = data.impressions
    if impressions is not None:  # the kept run users' rows, renumbered (their run history is a prefix still)
        renumber = np.full(data.n_users, -1, dtype=np.int64)
        index = {u: i for i, u in enumerate(users)}
        for u, user_id in enumerate(data.user_ids):
            if keep[u] and user_id in index:
                renumber[u] = index[user_id]
        rows = impressions.rows(renumber[impressions.users] >= 0)
        impressions = Impressions(renumber[rows.users], rows.hist_len, rows.items, rows.clicked)
    rebuilt = Dataset(
        name=name or data.name,
        user_ids=users,
        item_ids=data.item_ids,
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        items=column(data.items, 0, 0),
        timestamps=column(data.timestamps, 1, 0.0),
        titles=data.titles,
        texts=data.texts,
        fields=data.fields,
        # per-event extras (the synthetic shop's planted causes) are not known of stored events: code 0
        extras={k: column(v, -1, 0) for k, v in data.extras.items()},
        extra_labels=data.extra_labels,
        report=LoadReport(notes=[f"rebuilt from {data.name}: {data.n_users - int(keep.sum())} users left out"]),
        events=column(data.events, 2, 0),
        event_types=data.event_types,
        values=column(data.values, 3, math.nan),
        impressions=impressions,
    )
    return rebuilt, skipped


def training_data(data: Dataset, store, forgotten: Mapping[str, float]) -> tuple[Dataset, dict[str, Any]]:
    """The run's ``data`` without the ``forgotten`` users' training events, followed by the
    store's events (a forgotten user's are those stored after their tombstone: the forget
    deleted the rest); returns (data, summary of what was left out and added)."""
    keep = np.array([u not in forgotten for u in data.user_ids], dtype=bool)
    stored = store.events_by_user() if store is not None else {}
    rebuilt, skipped = rebuild(data, keep, stored)
    summary = {
        "users_left_out": int((~keep).sum()),
        "events_left_out": int(data.lengths[~keep].sum()),
        "stored_events": int(sum(len(v) for v in stored.values())) - skipped,
        "stored_events_skipped": skipped,
    }
    return rebuilt, summary


def forgotten_counts(run: Path, user_ids: Iterable[str], store) -> dict[str, int]:
    """Version id -> how many users it was trained on have been forgotten since (see the module's
    docstring, "Lineage"). ``user_ids``: the run's training users."""
    forgotten = store.forgotten()
    in_run = {u: t for u, t in forgotten.items() if u in set(user_ids)} if forgotten else {}
    read_by = [(t.user_id, t.first_received, t.forgotten_at) for t in store.tombstones() if t.first_received]
    marks: dict[str, set[str]] = {}
    for v in versions.listing(run):  # oldest first: a parent before its children
        if v.source == "finetune":
            until = float((v.details.get("lineage") or {}).get("until") or 0.0)
            own = {u for u, first, at in read_by if first <= until < at}
            marks[v.id] = marks.get(v.parent or "", set()) | own
        else:
            cut = float((v.details.get("tombstones") or {}).get("until", -math.inf))
            marks[v.id] = {u for u, at in in_run.items() if at > cut}
    return {k: len(v) for k, v in marks.items()}


def forget(run: str | Path, user_id: str, store, console: Console | None = None) -> dict[str, Any]:
    """Forget ``user_id`` in ``store`` (the run's service store): their rows deleted and their
    tombstone written, committed before this returns. On a run with sharded towers the shard
    that held them is trained again without them and spliced into a new version, made current
    and served by every worker over the store (``recscope.shards.reshard``)."""
    from recscope import shards

    run = Path(run)
    info = load_info(run)  # a RunError naming a directory that is not a run, before anything is deleted
    tombstone = store.forget_user(user_id)
    result: dict[str, Any] = {
        "user_id": user_id,
        "deleted": tombstone.deleted,
        "forgotten_at": tombstone.forgotten_at,
        "version": None,
    }
    if info.config.train.tower_shards:
        version, retrained = shards.reshard(run, store, console)
        result |= {"version": version.id, "shards_retrained": retrained}
    return result


def retrain(run: str | Path, store, out: str | Path, console: Console | None = None) -> dict[str, Any]:
    """Train ``out`` from scratch with ``run``'s config on :func:`training_data`; its version
    records the tombstones it honoured and its lineage. ``out`` appears whole: it is trained
    under a temporary name beside it and renamed when done."""
    from recscope import retrieval, shards
    from recscope.lock import RunLock
    from recscope.train import fit

    run, out = Path(run), Path(out)
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out} exists and is not empty", fix="give --out a new directory")
    if out.resolve() == run.resolve():
        raise RunError("--out is the run itself: retrain writes a new run", fix="give --out a new directory")
    info = load_info(run)
    data = load_data(run, info)
    until = time.time()
    forgotten = store.forgotten() if store is not None else {}
    rebuilt, summary = training_data(data, store, forgotten)
    details = {
        "tombstones": honoured(forgotten, until),
        "lineage": {
            "parent_run": str(run.resolve()),
            "parent_version": versions.current(run),
            "parent_data": info.data_fingerprint,
            "data_spec": info.data_spec,
            "store_until": until,
            **summary,
        },
    }
    config = info.config
    if config.train.tower_shards:
        shards.fit_sharded(
            rebuilt, config, out, data_spec=info.data_spec, catalog=info.catalog, console=console,
            details=details, reuse=run, source=SOURCE,
        )  # fmt: skip
    else:
        tmp = out.parent / f".{out.name}.retrain-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            fit(rebuilt, config, tmp, data_spec=info.data_spec, catalog=info.catalog, console=console)
            # the scratch run's own version is dropped: the run's version is published with its lineage
            for folder in (versions.VERSIONS, versions.INDEXES):
                shutil.rmtree(tmp / folder, ignore_errors=True)
            if out.exists():
                out.rmdir()
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with RunLock(out, "retrain", console):
            version = versions.publish(out, out / versions.WEIGHTS, SOURCE, None, **details)
            retrieval.prepare(out, version.id)
    version = versions.read(out, versions.current(out))
    return {"run": str(out), "version": version.id, **details}


def tombstoned(forgotten: Mapping[str, float], users: Iterable[str]) -> list[str]:
    """The ``users`` among the ``forgotten``, in their order."""
    return [u for u in users if u in forgotten]
