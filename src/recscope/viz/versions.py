"""The loop made visible: what a new model version changed for a shopper, and what shoppers said
of the explanations each version showed.

Data contract (the "Versions" section of the report, the "Model versions" panel of ``GET /ui``)::

    {"serving": id | None,          the version the movers are computed under ("after")
     "parent": id | None,           the version they are compared with ("before"); None: nothing to compare
     "note": str,                   what the section can say, in words (e.g. one version only)
     "method": str | None,          the explanation method of the sentences
     "versions": [version_row],     every version of the run, oldest first (:func:`version_rows`)
     "movers": [[mover], ...]}      per case (the page's histories, in order), :func:`movers`

A mover is one item whose rank for that shopper's history moved most between ``parent`` and
``serving``: ``{"id", "title", "before": rank | None, "after": rank | None, "moved": int | None,
"sentence_before": str | None, "sentence_after": str | None}``. Ranks are 1-based over the whole
catalog with the tie rule every list uses (``recscope.ranking``), owned and dismissed items out;
None: the item is not in that version's catalog (or hidden there). The sentences are each
version's own explanation of that item for that history (``Recommender.explain``), computed here,
never a template. Candidates are the items of either version's top-``k``; the largest moves first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recscope import versions
from recscope.histories import History
from recscope.ranking import Ranking
from recscope.snapshot import Snapshot

MOVERS = 5  # items per shopper the panel and the report show


@dataclass(frozen=True)
class Mover:
    item_id: str
    title: str
    before: int | None  # 1-based rank under the parent version; None: not ranked there
    after: int | None  # ... under the newer version
    sentence_before: str | None  # the parent's explanation of the item for this history
    sentence_after: str | None

    @property
    def moved(self) -> int | None:
        """Places gained (positive: it rose); None when it is ranked under one version only."""
        return None if self.before is None or self.after is None else self.before - self.after

    def to_dict(self) -> dict:
        return {
            "id": self.item_id,
            "title": self.title,
            "before": self.before,
            "after": self.after,
            "moved": self.moved,
            "sentence_before": self.sentence_before,
            "sentence_after": self.sentence_after,
        }


def _ranking(rec, ids: list[str] | History, exclude: Iterable[str]) -> Ranking:
    """The ranked catalog of the history ``ids`` under ``rec``, as ``Recommender.explain`` ranks it
    (owned items, the snapshot's hidden items and ``exclude`` out), so ranks here are its ranks."""
    hist = rec.resolve(history=ids)
    excluded = [i for i in map(rec.data.find, exclude) if i is not None]
    hidden = np.unique(np.concatenate([rec.snapshot.hidden, np.array(excluded, dtype=np.int64)]))
    scores = rec.scores(hist.indices, False, rec.event_codes(hist))
    return Ranking.of(scores, owned=hist.owned, exclude=hidden if len(hidden) else None)


def movers(
    before,
    after,
    history: Sequence[str] | History,
    *,
    k: int = 10,
    top: int = MOVERS,
    method: str | None = None,
    exclude: Iterable[str] = (),
) -> list[Mover]:
    """The ``top`` items of either version's top-``k`` for ``history`` (item ids, oldest first,
    or a live History, which each version reads as it does: ``Recommender.read``)
    whose rank moved most from ``before`` to ``after`` (two Recommenders of one run), each with
    its explanation sentence by ``method`` (default: ``after``'s) under both. An item ranked under
    one version only (a catalog the newer version grew) moves more than any ranked under both."""
    ids = history if isinstance(history, History) else list(history)  # a live History: each version reads it
    exclude = list(exclude)
    method = method or after.default_method()
    ranked = {"before": _ranking(before, ids, exclude), "after": _ranking(after, ids, exclude)}
    recs = {"before": before, "after": after}
    candidates: dict[str, None] = {}
    for side in ("after", "before"):
        for i in ranked[side].top(k).indices.tolist():
            candidates.setdefault(recs[side].data.item_ids[i], None)

    def rank(side: str, item_id: str) -> int | None:
        index = recs[side].data.find(item_id)
        return None if index is None else ranked[side].rank_of(index)

    places = [(item_id, rank("before", item_id), rank("after", item_id)) for item_id in candidates]
    unranked = max(r.n_visible for r in ranked.values()) + 1
    moves = [(i, b, a) for i, b, a in places if b != a]
    moves.sort(key=lambda m: (-abs((m[1] or unranked) - (m[2] or unranked)), m[2] or unranked))

    def sentence(side: str, item_id: str, place: int | None) -> str | None:
        if place is None:
            return None
        return recs[side].explain(history=ids, item=item_id, k=k, method=method, exclude=exclude)[0].sentence

    out = []
    for item_id, b, a in moves[:top]:
        holder = after if after.data.find(item_id) is not None else before
        title = holder.data.title(holder.data.find(item_id))
        out.append(Mover(item_id, title, b, a, sentence("before", item_id, b), sentence("after", item_id, a)))
    return out


def share_rows(shares) -> list[dict]:
    """``Store.helpful_shares`` of one version as the page shows them: per method (None: lists
    served without explanations) the helpful and unhelpful votes, their share and the lists served."""
    return [
        {
            "method": s.method,
            "helpful": s.helpful,
            "unhelpful": s.unhelpful,
            "votes": s.votes,
            "share": None if s.share is None else round(s.share, 4),
            "lists": s.lists,
        }
        for s in shares
    ]


def version_rows(run: Path | None, serving: str | None, shares=None) -> list[dict]:
    """Every version of ``run``, oldest first: its verdict, reason, parent and when, whether it
    serves, and (``shares``: ``Store.helpful_shares()``; None: no store) its helpful shares."""
    if run is None:  # a service over a model without a run directory
        return []
    current = versions.current(run)
    rows = []
    for v in versions.listing(run):
        verdict = v.details.get("verdict")
        rows.append(
            {
                "id": v.id,
                "parent": v.parent,
                "source": v.source,
                "created": v.created,
                "verdict": verdict,
                "promoted": verdict in (None, "promoted"),  # as GET /model says it
                "reason": v.details.get("reason"),
                "serving": v.id == serving,
                "current": v.id == current,
                "helpful": None if shares is None else share_rows([s for s in shares if s.version == v.id]),
            }
        )
    return rows


def versions_data(
    run: Path | None,
    serving: str | None,
    cases: list[tuple[object, list[str] | History, list[str]]] | None = None,
    *,
    parent=None,
    k: int = 10,
    method: str | None = None,
    shares=None,
) -> dict:
    """The section's data contract (see the module): ``cases`` are (the serving Recommender, a
    history's item ids, the items it dismissed) per shopper; ``parent`` the serving version's
    parent's Recommender (None: it has none, nothing to compare)."""
    rows = version_rows(run, serving, shares)
    if cases:
        method = method or cases[0][0].default_method()
    by_id = {r["id"]: r for r in rows}
    parent_id = by_id[serving]["parent"] if serving in by_id else None
    if len(rows) <= 1:
        note = "This run has one model version only: nothing to compare yet. Fine-tune it (recscope finetune RUN)."
    elif parent_id is None or parent is None:
        note = f"The serving version {serving} has no parent version to compare with."
    else:
        note = f"How version {serving} ranks each shopper's items against its parent {parent_id}."
    found = []
    if parent is not None and parent_id is not None:
        for rec, history, dismissed in cases or []:
            found.append([m.to_dict() for m in movers(parent, rec, history, k=k, method=method, exclude=dismissed)])
    return {
        "serving": serving,
        "parent": parent_id if parent is not None else None,
        "note": note,
        "method": method,
        "versions": rows,
        "movers": found,
    }


def report_versions(rec, histories: list[list[str]], *, k: int = 10, method: str | None = None, shares=None) -> dict:
    """The section for the report: ``rec`` (the run's current version, as the report explains it)
    against its parent version, for each of ``histories`` (item ids, oldest first)."""
    run = rec.path
    known = {v.id: v for v in versions.listing(run)} if run is not None else {}
    parent_id = known[rec.version].parent if rec.version in known else None
    parent = rec.with_snapshot(Snapshot.load(run, parent_id)) if parent_id in known else None
    cases = [(rec, h, []) for h in histories]
    return versions_data(run, rec.version, cases, parent=parent, k=k, method=method, shares=shares)
