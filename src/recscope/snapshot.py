"""What a request reads: one frozen snapshot of a run (model version, item table, catalog, config).

A Snapshot is never changed after it is built. A new catalog (items added after training) or
a new model version is a new Snapshot, and whoever holds one swaps it in one assignment: a
reader that took the old one goes on with the old one, whole, and the next reader gets the
new one; nobody ever sees a half-grown catalog or a model of one version over the item table
of another (DESIGN.md, "Live").

Growing the catalog copies the per-item rows (id embeddings, field values, text vectors, the
scoring table) and shares everything else with the snapshot it came from: O(catalog) memory
and time per change, once, whatever the number of readers. Add many items in one call.

Hidden items (out of stock, recalled: the service's ``PUT /items {"hidden": true}``) are part
of the snapshot too (``hidden``): every list the Recommender draws from it leaves them out,
so a worker that swaps in the snapshot of a hide hides the item in every list at once.

The event labels the model reads (``inputs``) are the version's: a fine-tuned version that
learned the label "dismiss" records its labels (``versions.event_labels``) and reads users'
dismissals as events of their histories (``reads_dismissals``); any other reads what the run's
data labels, as it was trained to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from recscope import retrieval, versions
from recscope.config import Config, RetrievalConfig
from recscope.data import Dataset
from recscope.errors import RunError
from recscope.histories import DISMISS
from recscope.model import SeqRec
from recscope.run import RunInfo, load_data, load_model
from recscope.tasks import EventInputs, event_inputs

NewItem = tuple[str, str, Mapping[str, object]]  # (item_id, title, attributes)
NO_ITEMS = np.zeros(0, dtype=np.int64)  # no dense indices (read only: shared)
NO_ITEMS.flags.writeable = False


@dataclass(frozen=True)
class AddedItem:
    index: int  # the item's dense index
    new: bool  # added (True) or updated (False)
    unused: list[str]  # "field=value" the catalog's fields cannot hold: no embedding, no effect


@dataclass(frozen=True)
class Snapshot:
    model: SeqRec
    data: Dataset  # the catalog (ids, titles, attributes) and the run's training sequences
    info: RunInfo
    table: torch.Tensor  # (n_items + 1, C) every item's token: what the model scores against
    version: str  # the model version (see recscope.versions)
    path: Path | None  # the run directory
    index: retrieval.ItemIndex | None  # approximate top-K over the trained items; None: exact
    inputs: EventInputs | None  # the event labels the model reads; None: it reads none
    trained_items: int  # dense indices 1..trained_items are the trained catalog, later ones added since
    # Explainers built over this snapshot's model and table (a cache: filled on first use).
    explainers: dict = field(default_factory=dict, compare=False, repr=False)
    # (H,) sorted dense indices of the items no list may hold (hidden in the catalog; none offline)
    hidden: np.ndarray = field(default_factory=lambda: NO_ITEMS, compare=False, repr=False)

    @property
    def config(self) -> Config:
        return self.info.config

    @classmethod
    def build(
        cls,
        model: SeqRec,
        data: Dataset,
        info: RunInfo,
        path: Path | None = None,
        version: str = versions.UNVERSIONED,
        retrieval_config: RetrievalConfig | None = None,
        labels: list[str] | None = None,
    ) -> Snapshot:
        """The snapshot of a trained model over its trained catalog; ``retrieval_config`` replaces
        the run's ``retrieval`` settings (e.g. ``ann="off"`` to score exactly); ``labels``: the
        version's own event labels (``versions.event_labels``; None: the run's)."""
        cold = info.state.cold_items or []  # held out of training (data.split=cold_items): no id embedding
        if cold and model.cfg.cold_ids == "neighbours":
            rows = torch.tensor(sorted(data.item_index(i) for i in cold), dtype=torch.long)
            known = torch.ones(data.n_items + 1, dtype=torch.bool)
            known[0], known[rows] = False, False
            model.borrow_ids(rows, known.nonzero().flatten())
        with torch.no_grad():
            table = model.item_table()
        config = info.config
        if retrieval_config is not None:
            config = dataclasses.replace(config, retrieval=retrieval_config)
            info = dataclasses.replace(info, config=config)
        index = None
        if retrieval.wanted(config, data.n_items):  # built once per version and cached beside it
            index = retrieval.open_index(path, version, table, config.retrieval)
        inputs = event_inputs(data, config, labels) if config.model.n_events or labels else None
        return cls(model, data, info, table, version, path, index, inputs, data.n_items)

    @classmethod
    def load(cls, run: str | Path, version: str | None = None, retrieval_config: RetrievalConfig | None = None):
        """The run's model ``version`` (default: the current one; a run from before versions: its
        model.safetensors, named by its digest) over the run's trained catalog, and the items a
        fine-tune grew into that version (its items.json): those count as trained for it."""
        path, version_id = versions.weights(Path(run), version)
        data = load_data(Path(run))
        grown = versions.added_items(Path(run), version_id) if version_id != versions.UNVERSIONED else []
        if grown:
            data = data.with_catalog_copy()
            for item_id, title, attributes in grown:
                data.set_item(item_id, title, attributes)
        own = versions.event_labels(Path(run), version_id) if version_id != versions.UNVERSIONED else None
        labels, negated = own or (None, [])
        model, info = load_model(Path(run), weights=path, n_items=data.n_items, n_events=own and len(labels))
        if negated:
            model.grow_events(len(labels), [labels.index(label) for label in negated])
        return cls.build(model, data, info, Path(run), version_id, retrieval_config, labels)

    @property
    def reads_dismissals(self) -> bool:
        """The model reads a user's dismissals as events of their history (its version learned
        the label "dismiss"; ``recscope.histories``)."""
        return self.inputs is not None and DISMISS in self.inputs.labels

    def trained(self, item_id: str) -> bool:
        """True for an item of the trained catalog (its entry is the trained data, never changed)."""
        index = self.data.find(item_id)
        return index is not None and index <= self.trained_items

    def with_hidden(self, item_ids: Iterable[str]) -> Snapshot:
        """This snapshot with exactly ``item_ids`` hidden (ids the catalog does not hold are
        ignored: an item removed since, or one of a version that does not have it); the model,
        the catalog and the caches are shared, so it costs O(hidden items)."""
        found = [self.data.find(i) for i in item_ids]
        hidden = np.unique(np.array([i for i in found if i is not None], dtype=np.int64))
        hidden.flags.writeable = False  # shared by every snapshot grown from this one
        return dataclasses.replace(self, hidden=hidden)

    def is_hidden(self, index: int) -> bool:
        """True when the item at dense ``index`` is hidden."""
        at = int(np.searchsorted(self.hidden, index))
        return at < len(self.hidden) and int(self.hidden[at]) == index

    @cached_property
    def popularity(self) -> np.ndarray:
        """(n_items + 1,) how many of the run's events each item has (the training data, every
        split: what the run knows of the shop); 0 for padding and for items added since."""
        return np.bincount(self.data.items, minlength=len(self.data.item_ids)).astype(np.int64)

    def with_items(
        self, items: list[NewItem], text: Callable[[Dataset, list[int]], torch.Tensor | None]
    ) -> tuple[Snapshot, list[AddedItem]]:
        """A new snapshot whose catalog also holds ``items`` (added, or replacing the title and
        attributes of items added before), and what became of each. This one is unchanged.

        A new item's token is the sum of its attribute (and ``text``) embeddings, its id
        embedding zero: it is scored from its fields until training gives it an id of its own.
        ``text(data, rows)``: the text vectors of the items at ``rows`` (None: the model reads none).
        """
        refused = [item_id for item_id, _, _ in items if self.trained(item_id)]
        if refused:
            raise RunError(
                f"item {refused[0]!r} is in the trained catalog: its title and attributes come from the trained data",
                fix="add items the run does not know (items added after training)",
            )
        if not items:
            return self, []
        data, added = self.catalog_with(items)
        rows = sorted({a.index for a in added})
        values = {f.name: torch.from_numpy(f.values[rows]) for f in data.fields}
        model = self.model.with_items(rows, values, text=text(data, rows))
        if model.cfg.cold_ids == "neighbours":  # on the trained items' scale (SeqRec.borrow_ids)
            model.borrow_ids(torch.tensor(rows, dtype=torch.long), torch.arange(1, self.trained_items + 1))
        # Only these rows change (a token is its own item's fields): no pass over the whole catalog.
        with torch.no_grad():
            grown = model.cfg.n_items + 1 - len(self.table)
            table = torch.cat([self.table, self.table.new_zeros(grown, self.table.shape[1])])
            table[rows] = model.item_tokens(torch.tensor(rows, dtype=torch.long))
        snapshot = dataclasses.replace(self, model=model, data=data, table=table, explainers={})
        return snapshot, added

    def catalog_with(self, items: list[NewItem]) -> tuple[Dataset, list[AddedItem]]:
        """A copy of the catalog that also holds ``items`` (this one unchanged), and what became of
        each: the catalog :meth:`with_items` builds on, and whose texts it encodes."""
        data = self.data.with_catalog_copy()
        added = []
        for item_id, title, attributes in items:
            new = data.find(item_id) is None
            index, unused = data.set_item(item_id, title, attributes)
            added.append(AddedItem(index, new, unused))
        return data, added
