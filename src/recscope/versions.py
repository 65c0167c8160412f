"""Model versions: immutable weights a reader can never see half-written.

    RUN/versions/<id>/model.safetensors   the weights; <id> = the first 16 hex digits of their sha256
    RUN/versions/<id>/version.json        when and how they were made (source, parent, epoch, valid)
    RUN/versions/<id>/items.json          a fine-tuned version's catalog extension (when it grew one):
                                          the items added after training it holds rows for, in order
    RUN/versions/<id>/events.json         a fine-tuned version's event labels, when they are not the
                                          run's (it learned the label "dismiss"): {"labels": [...],
                                          "negated": [...] (those whose token is minus its item's)}
    RUN/versions/current                  the id served: rewritten by one rename (promote, rollback)

A version's directory is written under a temporary name and renamed whole, and never written
again; ``publish`` of weights already published is a no-op. Training publishes its best model
at the end; the service serves ``current`` and names it in every answer. Runs written before
versions existed have none: their ``model.safetensors`` is served, named by its digest.

A run whose catalog calls for approximate retrieval has an index per version
(``recscope.retrieval``), built by whoever publishes (training, after ``publish``) or on first
load, in ``RUN/indexes/<id>/`` beside the versions (a version's own directory is never written
again). A version read here carries a summary of that index, when there is one: its kind, the
search depth tuned and the recall@10 it reached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recscope.errors import RunError
from recscope.files import atomic_write

VERSIONS = "versions"
CURRENT = "current"
WEIGHTS = "model.safetensors"
UNVERSIONED = "unversioned"
INDEXES = "indexes"  # RUN/indexes/<id>/: the approximate-retrieval index of version <id>
INDEX_META = "index.json"
ITEMS = "items.json"  # a version's catalog extension (added_items)
EVENTS = "events.json"  # a version's event labels (event_labels)


@dataclass(frozen=True)
class Version:
    id: str
    created: float  # epoch seconds
    source: str  # "train" (the run's best model) or "finetune" (recscope.finetune)
    parent: str | None = None  # the version it was made from
    # e.g. best_epoch, best_valid; a fine-tune's: lineage, verdict, reason, metrics (recscope.finetune)
    details: dict[str, Any] = field(default_factory=dict)
    # its ANN index, when built: kind, items, the search depth chosen and the recall@10 it reached
    # on held-out queries against the target (read from RUN/indexes/<id>/, not stored with the version)
    index: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def publish(
    run: Path,
    weights: Path,
    source: str,
    parent: str | None = None,
    *,
    added_items: list[dict[str, Any]] | None = None,
    event_labels: list[str] | None = None,
    negated_labels: list[str] = (),
    make_current: bool = True,
    **details: Any,
) -> Version:
    """Make ``weights`` a version of ``run`` and (``make_current``) make it current. The caller
    holds the run's lock. ``added_items``: the catalog extension the weights have rows for
    (``{"item_id", "title", "attributes"}`` each, in the order of their rows after the trained
    catalog), written as the version's items.json (see :func:`added_items`). ``event_labels``:
    the event labels the weights' event embedding has rows for, when they are not the run's, and
    ``negated_labels`` those of them read as minus their item's token, written as its events.json
    (see :func:`event_labels`)."""
    run = Path(run)
    version_id = digest(weights)
    final = run / VERSIONS / version_id
    if not final.exists():
        tmp = run / VERSIONS / f".{version_id}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(weights, tmp / WEIGHTS)
        version = Version(version_id, time.time(), source, parent, details)
        record = {k: v for k, v in version.to_dict().items() if k != "index"}  # the index is not the version's
        (tmp / "version.json").write_text(json.dumps(record, indent=1))
        written = [tmp / WEIGHTS, tmp / "version.json"]
        if added_items:
            (tmp / ITEMS).write_text(json.dumps({"items": added_items}, indent=1))
            written.append(tmp / ITEMS)
        if event_labels is not None:
            (tmp / EVENTS).write_text(json.dumps({"labels": event_labels, "negated": list(negated_labels)}))
            written.append(tmp / EVENTS)
        for path in written:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        tmp.rename(final)
    if make_current:
        promote(run, version_id)
    return read(run, version_id)


def added_items(run: Path, version_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The items ``version_id`` holds beyond the run's trained catalog, as (item_id, title,
    attributes) in the order of their rows (a fine-tune grew them into its item table); [] for
    a version that holds the trained catalog only."""
    path = Path(run) / VERSIONS / version_id / ITEMS
    if not path.exists():
        return []
    fix = "promote another version (recscope versions RUN --promote ID), or fine-tune again"
    try:
        raw = json.loads(path.read_text())["items"]
        items = [(str(i["item_id"]), str(i.get("title") or ""), dict(i.get("attributes") or {})) for i in raw]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise RunError(f"{path} is damaged ({type(e).__name__}: {e})", fix=fix) from None
    if len({i for i, _, _ in items}) != len(items):
        raise RunError(f"{path} names an item twice: it is damaged", fix=fix)
    return items


def event_labels(run: Path, version_id: str) -> tuple[list[str], list[str]] | None:
    """The event labels ``version_id``'s model reads (``labels[code]``, ``labels[0]`` "") and those
    of them whose token is minus its item's, when a fine-tune made them its own (it learned
    "dismiss"); None: the run's own (``tasks.event_inputs``), none negated."""
    path = Path(run) / VERSIONS / version_id / EVENTS
    if not path.exists():
        return None
    fix = "promote another version (recscope versions RUN --promote ID), or fine-tune again"
    try:
        raw = json.loads(path.read_text())
        labels, negated = [str(label) for label in raw["labels"]], [str(label) for label in raw.get("negated", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise RunError(f"{path} is damaged ({type(e).__name__}: {e})", fix=fix) from None
    if not labels or labels[0] != "" or len(set(labels)) != len(labels) or not set(negated) <= set(labels[1:]):
        raise RunError(f'{path} is damaged: distinct labels, the first one "", negated ones among them', fix=fix)
    return labels, negated


def promote(run: Path, version_id: str) -> None:
    """Serve ``version_id`` from now on (one atomic rename; rolling back is promoting an older one)."""
    read(run, version_id)  # refuses an unknown or damaged version
    atomic_write(Path(run) / VERSIONS / CURRENT, lambda p: p.write_text(version_id + "\n"))


def read(run: Path, version_id: str) -> Version:
    path = Path(run) / VERSIONS / version_id / "version.json"
    if not path.exists():
        known = ", ".join(v.id for v in listing(run)) or "none"
        raise RunError(f"{run} has no model version {version_id!r}", fix=f"use one of its versions ({known})")
    try:
        version = Version(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise RunError(f"{path} is damaged ({e})", fix="promote another version, or train the run again") from None
    return dataclasses.replace(version, index=index_summary(run, version_id))


def index_folder(run: Path, version_id: str) -> Path:
    return Path(run) / INDEXES / version_id


def index_summary(run: Path, version_id: str) -> dict[str, Any] | None:
    """What the version's ANN index is and the recall it was tuned to, from its index.json
    (None: no index, or one this cannot read: ``recscope.retrieval`` rebuilds those on load)."""
    try:
        meta = json.loads((index_folder(run, version_id) / INDEX_META).read_text())
        tuning = meta.get("tuning") or {}
        return {
            "kind": meta["kind"],
            "items": meta["items"],
            "settings": meta["settings"],
            "depth": tuning.get("depth"),  # ivf_probe (ivf, ivfpq) or ef_search (hnsw); None: not tuned
            "recall@10": tuning.get("recall"),  # on tuning.queries held-out queries
            "recall@10_lower": tuning.get("lower"),  # its one-sided 95% lower bound: what reaches the target
            "target_recall": tuning.get("target"),
            "tuning_queries": tuning.get("queries"),
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def listing(run: Path) -> list[Version]:
    """Every version of ``run``, oldest first."""
    root = Path(run) / VERSIONS
    if not root.is_dir():
        return []
    found = [read(run, p.name) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda v: v.created)


def current(run: Path) -> str | None:
    """The id of the version served, or None for a run without versions."""
    path = Path(run) / VERSIONS / CURRENT
    return path.read_text().strip() if path.exists() else None


def weights(run: Path, version_id: str | None = None) -> tuple[Path, str]:
    """The weights file of ``version_id`` (default: the current one) and its id."""
    run = Path(run)
    version_id = version_id or current(run)
    if version_id is None:  # a run from before versions: its best weights, named by their digest
        path = run / WEIGHTS
        return path, digest(path) if path.exists() else UNVERSIONED
    read(run, version_id)
    return run / VERSIONS / version_id / WEIGHTS, version_id
