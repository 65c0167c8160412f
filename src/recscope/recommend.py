"""The Python API a notebook user calls; the CLI and the service wrap it.

rec = Recommender.load("runs/beauty")
rec.recommend(user="42", k=10)                 # a known user's next items
rec.recommend(history=["B001", "B002"], k=10)  # anyone, from item ids
rec.similar("B001", k=10)                      # item to item: what the model scores after B001
rec.popular(k=10)                              # the run's most frequent items (no history needed)

A history of item ids may hold ids the run does not know (items added after training, typos):
they are skipped and named in the result's ``unknown`` (``unknown="error"`` refuses instead);
a history with no known item at all is an error (``EmptyHistory``).

Items hidden in the snapshot (``set_hidden``; the service hides out-of-stock items so) are in
no list: not recommended, not similar, not popular, not in a what-if; an explanation asked
about one says status ``hidden``.

Above a catalog size (``retrieval`` in the config) ``recommend`` and ``what_if`` take their
top-K from an approximate index and score its candidates exactly (recscope.retrieval);
``scores`` and ``explain`` always score the whole catalog (an explanation's rank is against
every item).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from recscope import retrieval
from recscope.config import RetrievalConfig
from recscope.data import Dataset, split_of
from recscope.errors import RunError
from recscope.features.text import encode_texts, encoder
from recscope.histories import History, HistorySource, RunHistories, adhoc, resolve
from recscope.ranking import HIDDEN, Ranking, hide
from recscope.run import RunInfo
from recscope.snapshot import NO_ITEMS, AddedItem, NewItem, Snapshot


@dataclass
class Recommendation:
    rank: int  # 1-based
    item_id: str
    title: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


class Results(list):
    """A list of results (recommendations or explanations) and the history ids that were skipped
    because the run does not know them (``unknown``, in the order given)."""

    def __init__(self, items=(), unknown: list[str] | None = None):
        super().__init__(items)
        self.unknown = list(unknown or [])


UNKNOWN_POLICIES = ("skip", "error")


class EmptyHistory(RunError):
    """A history the model cannot read: no items at all, or none the catalog knows (``unknown``
    names those skipped). The service answers it with a fallback list, not the model's."""

    def __init__(self, problem: str, *, unknown: list[str] = (), fix: str | None = None):
        super().__init__(problem, fix=fix)
        self.unknown = list(unknown)


def _at_least_one(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RunError(f"{name} must be a whole number of at least 1, got {value!r}", fix=f"pass {name}=1 or more")


class Recommender:
    """A trained model over its catalog (item table, ids, titles, attributes), reading users'
    histories from a history source: the run's training data by default, the live event store in
    the service. Everything it answers speaks the user's own ids."""

    def __init__(self, snapshot: Snapshot, histories: HistorySource | None = None):
        self.snapshot = snapshot  # swapped whole, never changed (recscope.snapshot)
        self.histories: HistorySource = histories if histories is not None else RunHistories(snapshot.data)

    @classmethod
    def load(
        cls, run: str | Path, version: str | None = None, retrieval_config: RetrievalConfig | None = None
    ) -> Recommender:
        """The run's model ``version`` (default: the current one; a run from before versions:
        its model.safetensors, named by its digest). ``retrieval_config`` replaces the run's
        ``retrieval`` settings (e.g. ``ann="off"`` to score exactly)."""
        return cls(Snapshot.load(run, version, retrieval_config))

    # What the snapshot holds, read only: a new catalog or version is a new snapshot.
    model = property(lambda self: self.snapshot.model)
    data = property(lambda self: self.snapshot.data)
    config = property(lambda self: self.snapshot.config)
    version = property(lambda self: self.snapshot.version)
    index = property(lambda self: self.snapshot.index)
    inputs = property(lambda self: self.snapshot.inputs)
    trained_items = property(lambda self: self.snapshot.trained_items)

    @property
    def info(self) -> RunInfo:
        return self.snapshot.info

    @info.setter
    def info(self, info: RunInfo) -> None:
        """The run's record re-read (its state changed, e.g. the measured default method)."""
        self.snapshot = dataclasses.replace(self.snapshot, info=info)

    @property
    def path(self) -> Path | None:
        return self.snapshot.path

    @path.setter
    def path(self, path: Path | None) -> None:
        self.snapshot = dataclasses.replace(self.snapshot, path=path)

    def with_snapshot(self, snapshot: Snapshot) -> Recommender:
        """A recommender over ``snapshot`` reading the same history source (this one is unchanged)."""
        return Recommender(snapshot, self.histories)

    # ------------------------------------------------------------------ the catalog
    def trained(self, item_id: str) -> bool:
        """True for an item of the trained catalog (its entry is the trained data, never changed)."""
        return self.snapshot.trained(item_id)

    def set_item(self, item_id: str, title: str, attributes: Mapping[str, object] | None = None) -> AddedItem:
        """Add an item to the catalog (or update one added before): recommendable at once.

        Its token is the sum of its attribute embeddings (its id embedding starts at zero), so
        it is scored from its fields until training gives it an id of its own. An item the run
        was trained on cannot be changed here (its catalog entry is the trained data)."""
        return self.set_items([(item_id, title, attributes or {})])[0]

    def set_items(self, items: list[NewItem]) -> list[AddedItem]:
        """:meth:`set_item` for many ``(item_id, title, attributes)``, with one pass over the model
        and one new item table for them all: a new snapshot, swapped in one assignment."""
        self.snapshot, added = self.with_items(items)
        return added

    def with_items(self, items: list[NewItem]) -> tuple[Snapshot, list[AddedItem]]:
        """The snapshot with ``items`` added (see :meth:`set_items`); this recommender is unchanged."""
        return self.snapshot.with_items(items, self._text_vectors)

    def encode_items(self, items: list[NewItem]) -> None:
        """Encode the texts ``items`` would bring into the text cache now (when the model reads
        text), so that adding them later, here or in a process sharing the cache (the service's
        other workers), reads their vectors rather than running the encoder again."""
        if not self.config.model.text_dim or not items:
            return
        data, added = self.snapshot.catalog_with(items)
        self._text_vectors(data, sorted({a.index for a in added}))

    def load_text_encoder(self) -> None:
        """Load the run's text encoder now (when the model reads text), so that the first item
        added later is encoded in milliseconds rather than after seconds of loading."""
        if self.config.model.text_dim:
            encoder(self.config.features.text_encoder, self.config.features.text_cache)

    def _text_vectors(self, data: Dataset, rows: list[int]) -> torch.Tensor | None:
        """The text vectors of ``data``'s items at ``rows`` (by the run's own encoder), when the model reads text."""
        if not self.config.model.text_dim:
            return None
        f = self.config.features
        encoded = encode_texts(data.item_texts(rows), f.text_encoder, f.text_cache, f.text_batch_size)
        return torch.from_numpy(encoded.vectors)

    # ------------------------------------------------------------------ histories
    def history(self, user: str) -> np.ndarray:
        """The user's history as the model reads it (dense item indices, oldest first)."""
        return self._known(self.user_history(user)).indices

    def user_history(self, user: str) -> History:
        """The user's History from the history source as this snapshot's model reads it: the
        one place a live history is narrowed to its version (see :meth:`read`)."""
        return self.read(self.histories.history(user))

    def read(self, history: History) -> History:
        """``history`` (a source's whole history: its dismissals as events) as this snapshot's
        model reads it: the dismissals are events of it only when the version reads the label
        "dismiss" (``Snapshot.reads_dismissals``), else left out (``dismissed`` still names
        them), and items added to the catalog since the source resolved it are known."""
        if not history.unknown and not history.dismissed:
            return history
        return resolve(self.data, history.user_id, history.items, history.in_run, self.snapshot.reads_dismissals)

    def history_from_ids(self, item_ids: list[str], unknown: str = "error") -> np.ndarray:
        """Dense indices of ``item_ids``; ``unknown="skip"`` leaves out ids the run does not know,
        ``"error"`` refuses them."""
        return self._adhoc(item_ids, unknown).indices

    def _adhoc(self, item_ids: list[str], unknown: str) -> History:
        if unknown not in UNKNOWN_POLICIES:
            raise RunError(f"unknown={unknown!r} is not a policy", fix=f"use one of {', '.join(UNKNOWN_POLICIES)}")
        if not item_ids:
            raise EmptyHistory("the history is empty", fix="pass at least one item id")
        if isinstance(item_ids, str):
            raise RunError("history must be a list of item ids, not one string", fix=f"pass history=[{item_ids!r}]")
        history = adhoc(self.data, item_ids)
        if history.unknown and unknown == "error":
            self.data.item_index(history.unknown[0])  # raises the DataError naming it
        return self._known(history)

    def _known(self, history: History) -> History:
        """``history``, refused when the catalog knows none of its items."""
        if len(history.indices) == 0:
            skipped = history.unknown
            shown = ", ".join(repr(i) for i in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
            raise EmptyHistory(
                f"none of the {len(skipped)} history items is known to this run ({shown})"
                if skipped
                else f"the history of {history.user_id!r} holds no items",
                unknown=skipped,
                fix=f"use item ids from the catalog the run was trained on (e.g. {', '.join(self.data.item_ids[1:4])})",
            )
        return history

    def resolve(
        self, user: str | None = None, history: list[str] | History | None = None, unknown: str = "skip"
    ) -> History:
        """The History of a user (from the history source), of item ids given (anonymous), or a
        History given (a live one, with its events' kinds: :meth:`read` for this snapshot);
        ``.unknown`` names the ids skipped because the catalog does not know them."""
        if (user is None) == (history is None):
            raise RunError("pass exactly one of user=... or history=[...]")
        if user is not None:
            return self._known(self.user_history(user))
        if isinstance(history, History):
            return self._known(self.read(history))
        return self._adhoc(history, unknown)

    def _hidden(self, exclude: Iterable[str] = (), allowed: np.ndarray | None = None) -> np.ndarray:
        """(H,) sorted dense indices no list may hold: the snapshot's hidden items, the ``exclude``
        ids the catalog knows (the others are never recommended anyway) and, with ``allowed``
        ((n_items + 1,) bool: the items a filter lets in), every item it leaves out."""
        excluded = np.array([i for i in map(self.data.find, exclude) if i is not None], dtype=np.int64)
        parts = [self.snapshot.hidden, excluded]
        if allowed is not None:
            if allowed.shape != (len(self.data.item_ids),):
                raise RunError(
                    f"allowed has shape {tuple(allowed.shape)}, not ({len(self.data.item_ids)},)",
                    fix="pass one bool per dense item index, padding included (len(rec.data.item_ids))",
                )
            parts.append(np.flatnonzero(~allowed[1:]) + 1)  # padding is hidden anyway
        return np.unique(np.concatenate(parts))

    def set_hidden(self, item_ids: Iterable[str]) -> None:
        """Keep exactly ``item_ids`` out of every list from now on (ids the catalog does not hold
        are ignored); ``[]`` shows every item again. A new snapshot, swapped in one assignment."""
        self.snapshot = self.snapshot.with_hidden(item_ids)

    @property
    def hidden(self) -> list[str]:
        """The ids of the items no list holds (:meth:`set_hidden`)."""
        return [self.data.item_ids[i] for i in self.snapshot.hidden.tolist()]

    def tensor(self, history: np.ndarray) -> torch.Tensor:
        """(1, T) the last max_len items of a history (or of its event labels), as the model reads them."""
        return torch.from_numpy(np.asarray(history[-self.config.model.max_len :], dtype=np.int64))[None, :]

    def event_codes(self, history: History) -> np.ndarray | None:
        """The event labels of the history's known items (aligned with ``history.indices``), or
        None when the model reads none; an event kind the run was not trained on is label 0."""
        if self.inputs is None:
            return None
        known = [e for e in history.items if self.data.find(e.item_id) is not None]
        return np.array([self.inputs.code(e.event, e.value) for e in known], dtype=np.int64)

    # ------------------------------------------------------------------ recommend
    def scores(
        self, history: np.ndarray, exclude_history: bool = True, events: np.ndarray | None = None
    ) -> torch.Tensor:
        """(n_items + 1,) what the run's task predicts for each item as the next (next-item score,
        rating or click logit), given the history and its ``events`` labels; padding and (by
        default) owned items are hidden (-inf)."""
        labels = None if events is None else self.tensor(events)
        scores = self.model.score(self.tensor(history), self.snapshot.table, labels)[0]
        return hide(scores, owned=history if exclude_history else None)

    @torch.no_grad()
    def query(self, history: np.ndarray, events: np.ndarray | None = None) -> torch.Tensor:
        """(1, C) the history's last hidden state: what SeqRec.score scores the table with."""
        labels = None if events is None else self.tensor(events)
        return self.model.query(self.tensor(history), labels, self.snapshot.table)

    def recommend(
        self,
        user: str | None = None,
        *,
        history: list[str] | None = None,
        k: int = 10,
        exclude_history: bool = True,
        exclude: list[str] = (),
        unknown: str = "skip",
        allowed: np.ndarray | None = None,
    ) -> Results:
        """The top-``k`` (a list of :class:`Recommendation`); ``.unknown`` names the history ids
        that were skipped (``unknown="error"`` refuses them instead). Items in ``exclude`` (e.g. the
        user dismissed them) are never recommended; ids the run does not know there are ignored.
        ``allowed`` ((n_items + 1,) bool, e.g. the items of one category): only those may be in it."""
        _at_least_one("k", k)
        hist = self.resolve(user, history, unknown)
        hidden = self._hidden([*hist.dismissed, *exclude], allowed)
        top = self._top(hist.indices, k, exclude_history, hidden, self.event_codes(hist))
        return Results(top, hist.unknown)

    def similar(self, item: str, k: int = 10, exclude: Iterable[str] = ()) -> Results:
        """Item to item ("bought after this", a product page): the top-``k`` the model scores for
        a history of ``item`` alone, without ``item`` itself, hidden items or ``exclude``.

        The model's own next-item scores rather than the cosine of item tokens: the model never
        compares two tokens, it scores every item against the hidden state its Transformer reads
        from the history (SeqRec.score), so this is what it would recommend to a visitor who has
        seen ``item`` and nothing else, in the same units as every other list. A DataError names
        an item the catalog does not hold."""
        self.data.item_index(item)
        return self.recommend(history=[item], k=k, exclude=list(exclude), unknown="error")

    def popular(self, k: int = 10, exclude: Iterable[str] = (), allowed: np.ndarray | None = None) -> Results:
        """The ``k`` items with the most events in the run's data (``Snapshot.popularity``), best
        first, scored by that count; hidden items, ``exclude`` and items ``allowed`` leaves out are
        not in it. Needs no history: the list for a visitor the model knows nothing about. Equal
        counts follow the tie rule (recscope.ranking); items added since training count 0."""
        _at_least_one("k", k)
        counts = torch.from_numpy(self.snapshot.popularity.astype(np.float32))
        hidden = self._hidden(exclude, allowed)
        top = Ranking.of(counts, exclude=hidden if len(hidden) else None).top(k)
        return Results(
            Recommendation(r + 1, self.data.item_ids[i], self.data.title(i), float(s))
            for r, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True))
        )

    # ------------------------------------------------------------------ explain
    def default_method(self) -> str:
        """The method the faithfulness measurements chose for this run (explain-eval), else the fallback."""
        from recscope.explain.api import FALLBACK_DEFAULT

        measured = self.info.state.explain_eval or {}
        return measured.get("default", FALLBACK_DEFAULT)

    def explain(
        self,
        user: str | None = None,
        item: str | None = None,
        *,
        history: list[str] | None = None,
        top: int = 10,
        method: str | None = None,
        k: int = 10,
        counterfactual: bool = True,
        attentions: bool = False,
        unknown: str = "skip",
        exclude: Iterable[str] = (),
        words: bool = False,
        allowed: np.ndarray | None = None,
    ) -> Results:
        """Explanations (:class:`~recscope.explain.base.Explanation`) for one item (``item=``) or
        the whole top-``top``; ``k`` is the top-K their status and counterfactuals refer to.

        Any ``item`` is explained: one outside the top-K has status ``outside_top_k`` and its
        rank ("ranked 37 of 1,200"); one already in the history has status ``owned`` and no
        score or rank (owned items are never recommended); one hidden in the catalog
        (:meth:`set_hidden`) has status ``hidden``; one in ``exclude`` (the user dismissed it) or
        that ``allowed`` leaves out has status ``dismissed``. None of these is a rival in any rank.
        ``.unknown`` names skipped history ids. ``words``: word attributions of the items text
        drives (:mod:`recscope.explain.words`; about 5 ms per word on 2 cores), when the model reads text.
        """
        from recscope.explain.api import explain_items, make_explainer
        from recscope.explain.words import run_encoder

        _at_least_one("top", top)
        _at_least_one("k", k)
        resolved = self.resolve(user, history, unknown)
        hist, events = resolved.indices, self.event_codes(resolved)
        hidden = self._hidden([*resolved.dismissed, *exclude], allowed)
        # One ranked list: the explained ranks are the places the list gives, ties or not. A
        # dismissed item the model reads is in the history but not owned: it says "dismissed".
        owned = resolved.owned
        ranking = Ranking.of(self.scores(hist, False, events), owned=owned, exclude=hidden if len(hidden) else None)
        targets = [self.data.item_index(item)] if item is not None else ranking.top(top).indices.tolist()
        ranks = [ranking.rank_of(t) for t in targets]  # None: owned, hidden or dismissed, never ranked
        statuses = [self._status(ranking, t, k) for t in targets]
        explainers = self.snapshot.explainers
        explainer = explainers.get(method or self.default_method())
        if explainer is None:
            explainer = make_explainer(self.model, method or self.default_method(), self.snapshot.table)
            explainers[explainer.name] = explainer
        explanations = explain_items(
            explainer,
            self.data,
            hist,
            targets,
            scores=[float(ranking.scores[t]) if r is not None else None for t, r in zip(targets, ranks, strict=True)],
            ranks=ranks,
            user=resolved.user_id,
            k=k,
            counterfactual=counterfactual,
            attentions=attentions,
            cutoff=ranking.cutoff(k),
            statuses=statuses,
            candidates=ranking.n_visible,
            hidden=hidden.tolist(),
            events=events,
            encode=run_encoder(self.config.features) if words else None,
            ranking=ranking,
            dismissals=resolved.dismissals,
        )
        return Results(explanations, resolved.unknown)

    def _status(self, ranking: Ranking, item: int, k: int) -> str:
        """What ``item`` is to the ranked list, as an Explanation says it: owned first, then hidden
        in the catalog, then dismissed (any other item the list hides), else by its rank."""
        from recscope.explain.base import STATUSES

        status = ranking.status(item, k)
        if status == HIDDEN and self.snapshot.is_hidden(item):
            return HIDDEN
        return STATUSES[status]

    def what_if(
        self,
        user: str | None = None,
        *,
        history: list[str] | None = None,
        remove: list[str] = (),
        add: list[str] = (),
        k: int = 10,
        unknown: str = "skip",
        exclude: Iterable[str] = (),
    ) -> dict:
        """Re-rank an edited history: items removed from it and/or appended to it.

        Returns the top-K before and after, which items entered or left, and the history ids
        skipped as unknown (``"unknown"``). Removing an item the history does not hold is an
        error naming it (an edit that silently did nothing would read as "no effect"); so is
        adding an item the catalog does not hold. Items in ``exclude`` are in neither list.
        """
        _at_least_one("k", k)
        resolved = self.resolve(user, history, unknown)
        hist, hidden = resolved.indices, self._hidden([*resolved.dismissed, *exclude])
        held = {self.data.item_ids[i] for i in hist}
        missing = [str(i) for i in remove if str(i) not in held]
        if missing:
            raise RunError(
                f"cannot remove {', '.join(repr(i) for i in missing)}: not in the history",
                fix=f"remove items the history holds (e.g. {', '.join(sorted(held)[:3])})",
            )
        drop = {self.data.item_index(i) for i in remove}
        kept = np.array([i not in drop for i in hist], dtype=bool)
        edited = np.array([*hist[kept], *(self.data.item_index(i) for i in add)], dtype=np.int64)
        if len(edited) == 0:
            raise RunError("the edited history is empty", fix="remove fewer items or add some")
        events = self.event_codes(resolved)
        edited_events = None if events is None else np.concatenate([events[kept], np.zeros(len(add), np.int64)])
        before = self._top(hist, k, exclude=hidden, events=events)
        after = self._top(edited, k, exclude=hidden, events=edited_events)  # an added item's kind: unknown
        ids_before = [r.item_id for r in before]
        ids_after = [r.item_id for r in after]
        return {
            "before": [r.to_dict() for r in before],
            "after": [r.to_dict() for r in after],
            "entered": [i for i in ids_after if i not in ids_before],
            "left": [i for i in ids_before if i not in ids_after],
            "unknown": resolved.unknown,
        }

    def _top(
        self,
        hist: np.ndarray,
        k: int,
        exclude_history: bool = True,
        exclude: np.ndarray = NO_ITEMS,
        events: np.ndarray | None = None,
    ) -> list[Recommendation]:
        """The top-``k`` for ``hist`` with ``exclude`` (both dense indices) hidden."""
        top = None
        if self.index is not None:
            hidden = np.concatenate([hist if exclude_history else [], exclude]).astype(np.int64)
            with torch.no_grad():
                top = retrieval.top_k(
                    self.index, self.query(hist, events), self.snapshot.table, k, hidden, self.model.predict_many
                )
        if top is None:  # exact: no index, or one that cannot vouch for this query
            owned = hist if exclude_history else None
            hidden = exclude if len(exclude) else None
            top = Ranking.of(self.scores(hist, False, events), owned=owned, exclude=hidden).top(k)
        return [
            Recommendation(r + 1, self.data.item_ids[i], self.data.title(i), float(s))
            for r, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True))
        ]

    # ------------------------------------------------------------------ the split
    def split(self):
        """The run's train / valid / test split, as the run's config defines it."""
        return split_of(self.data, self.config)
