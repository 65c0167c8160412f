"""The one in-memory form of every data source: dense ids, per-user sequences, item fields.

User and item ids are the user's own strings at the edges and dense integers inside.
Item index 0 is padding, so real items are 1..n_items. Sequences are stored CSR-style:
user u's items in time order are ``items[offsets[u]:offsets[u+1]]``; ``events`` (each event's
type, as a code into ``event_types``) and ``values`` (a number per event, e.g. a rating) are
aligned with ``items``. ``impressions`` are items shown to users, clicked or not (click data).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
from safetensors.numpy import load_file, save_file

from recscope.errors import DataError
from recscope.features.attributes import TEXT_COLUMNS, ItemField, as_list, catalog_fields
from recscope.files import atomic_write

SKIPPED_FILE = "skipped_rows.csv"  # in a run folder: every input row that was read but not kept


class SkippedRow(NamedTuple):
    """A row that was read but not kept, with where it was and its text as read."""

    file: str
    unit: str  # "line" (text files) or "row" (parquet, 1-based)
    number: int
    reason: str
    text: str  # the line as read (non-UTF-8 bytes as \\xNN escapes); parquet: the row's values as JSON


SKIPPED_COLUMNS = SkippedRow._fields


@dataclass
class LoadReport:
    """What a loader read, kept, skipped and dropped: nothing leaves without being counted.

    ``rows_read == rows_kept + rows_skipped + duplicates_dropped`` (s3rec: rows are lines).
    """

    rows_read: int = 0  # interaction rows read (lines that hold data; blank lines hold none)
    rows_kept: int = 0  # rows that became events (s3rec: lines that became sequences)
    rows_skipped: int = 0  # bad rows skipped (data.skip_bad_rows)
    duplicates_dropped: int = 0  # exact repeats of an earlier row, dropped (data.duplicates=drop)
    reasons: dict[str, int] = field(default_factory=dict)  # skip reason -> rows
    examples: list[str] = field(default_factory=list)  # the first few "file, line N: reason" strings
    notes: list[str] = field(default_factory=list)  # things the user should know (not errors)
    # Every row skipped or dropped; Dataset.save writes them to skipped_rows.csv.
    skipped: list[SkippedRow] = field(default_factory=list)

    def skip(self, row: SkippedRow) -> None:
        """Skip a bad row: counted by reason and kept, with its text, in ``skipped``."""
        self.rows_skipped += 1
        self.reasons[row.reason] = self.reasons.get(row.reason, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(f"{row.file}, {row.unit} {row.number}: {row.reason}")
        self.skipped.append(row)

    def to_dict(self) -> dict:
        """Everything but the skipped rows themselves (those go to skipped_rows.csv)."""
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_skipped": self.rows_skipped,
            "duplicates_dropped": self.duplicates_dropped,
            "reasons": self.reasons,
            "examples": self.examples,
            "notes": self.notes,
        }

    def write_skipped(self, path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(SKIPPED_COLUMNS)
            writer.writerows(self.skipped)

    @staticmethod
    def read_skipped(path: Path) -> list[SkippedRow]:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))[1:]
        return [SkippedRow(f, u, int(n), r, t) for f, u, n, r, t in rows]


@dataclass
class Impressions:
    """Items shown to users and whether they were clicked: one row per shown item.

    Row r: ``items[r]`` was shown to ``users[r]`` after the user's first ``hist_len[r]`` events
    (the history the shown list was made for) and clicked when ``clicked[r]`` is 1."""

    users: np.ndarray  # (n,) int64 dense user indices
    hist_len: np.ndarray  # (n,) int64 events of the user before the item was shown
    items: np.ndarray  # (n,) int64 dense item indices
    clicked: np.ndarray  # (n,) float64 1.0 = clicked, 0.0 = not

    def __len__(self) -> int:
        return len(self.users)

    def rows(self, mask: np.ndarray) -> Impressions:
        return Impressions(self.users[mask], self.hist_len[mask], self.items[mask], self.clicked[mask])


NO_EVENT = ""  # event_types[0]: the event's type is not known


@dataclass
class Dataset:
    name: str
    user_ids: list[str]  # dense user index -> own id
    item_ids: list[str]  # dense item index -> own id; item_ids[0] is "" (padding)
    offsets: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (n_events,) int64 dense item indices, grouped by user, in time order
    timestamps: np.ndarray  # (n_events,) float64 (s3rec: position in the line)
    titles: list[str] | None = None  # dense item index -> title, or None if the data has none
    texts: dict[str, list[str]] = field(default_factory=dict)  # text column -> dense item index -> text
    fields: list[ItemField] = field(default_factory=list)
    # Per-event extra columns (e.g. the synthetic shop's planted mechanism and cause).
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    extra_labels: dict[str, list[str]] = field(default_factory=dict)  # code -> label for coded extras
    report: LoadReport = field(default_factory=LoadReport)
    events: np.ndarray | None = None  # (n_events,) int64 codes into event_types; None: all 0 (no type known)
    event_types: list[str] = field(default_factory=lambda: [NO_EVENT])  # code -> event type; [0] is "" (none)
    values: np.ndarray | None = None  # (n_events,) float64 each event's value (a rating, ...); NaN = none
    impressions: Impressions | None = None  # shown items and clicks, when the data has them
    _user_index: dict[str, int] | None = None
    _item_index: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.events is None:
            self.events = np.zeros(len(self.items), dtype=np.int64)
        if self.values is None:
            self.values = np.full(len(self.items), np.nan)

    @property
    def n_event_types(self) -> int:
        """Distinct event types the data names (0 when it names none)."""
        return len(self.event_types) - 1

    @property
    def has_values(self) -> bool:
        return bool(np.isfinite(self.values).any())

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def n_events(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def find_user(self, user_id: str) -> int | None:
        """The dense index of ``user_id``, or None when the data does not hold the user."""
        if self._user_index is None:
            self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        return self._user_index.get(str(user_id))

    def find(self, item_id: str) -> int | None:
        """The dense index of ``item_id``, or None when the catalog does not hold it."""
        if self._item_index is None:
            self._item_index = {it: i for i, it in enumerate(self.item_ids) if i > 0}
        return self._item_index.get(str(item_id))

    def user_index(self, user_id: str) -> int:
        """The dense index of ``user_id``; a DataError naming it (and users to use) when unknown."""
        index = self.find_user(user_id)
        if index is None:
            raise DataError(
                f"unknown user {user_id!r}",
                fix=f"use one of the {self.n_users} users in the training data "
                f"(e.g. {', '.join(self.user_ids[:3])}), or pass a history of item ids",
            )
        return index

    def item_index(self, item_id: str) -> int:
        """The dense index of ``item_id``; a DataError naming it (and items to use) when unknown."""
        index = self.find(item_id)
        if index is None:
            raise DataError(
                f"unknown item {item_id!r}",
                fix=f"use item ids from the catalog (e.g. {', '.join(self.item_ids[1:4])})",
            )
        return index

    # ------------------------------------------------------------------ a growing catalog
    def with_catalog_copy(self) -> Dataset:
        """A Dataset sharing this one's sequences but with a catalog of its own (ids, titles,
        texts, field values): :meth:`set_item` on the copy leaves this one as it was, so a reader
        of this one never sees a half-added item (the service's catalog snapshots)."""
        self.find("")  # build the id index once, then copy it
        return dataclasses.replace(
            self,
            item_ids=list(self.item_ids),
            titles=None if self.titles is None else list(self.titles),
            texts={name: list(column) for name, column in self.texts.items()},
            fields=[dataclasses.replace(f, values=f.values.copy()) for f in self.fields],
            _user_index=self._user_index,
            _item_index=dict(self._item_index or {}),
        )

    def set_item(self, item_id: str, title: str, attributes: Mapping[str, object]) -> tuple[int, list[str]]:
        """Add an item to the catalog (or replace the title and attributes of one added before)
        from its title and ``attributes`` (field -> value or [values]); the sequences are unchanged.

        Returns the item's dense index and what of ``attributes`` the fields cannot hold, as
        ``"field=value"`` (a value no trained item has, a field the data does not have, more
        values than the field's width): the model has no embedding for them.
        """
        item_id = str(item_id)
        index = self.find(item_id)
        if index is None:
            index = len(self.item_ids)
            self.item_ids.append(item_id)
            self._item_index[item_id] = index
            if self.titles is not None:
                self.titles.append("")
            for column in self.texts.values():
                column.append("")
            for f in self.fields:
                f.values = np.vstack([f.values, np.zeros((1, f.values.shape[1]), dtype=f.values.dtype)])
        if title:
            if self.titles is None:
                self.titles = [""] * len(self.item_ids)
            self.titles[index] = title
            column = next((c for c in self.texts if c.lower() in ("title", "name")), None)
            if column is not None:
                self.texts[column][index] = title
        rows, unused = self.encode(attributes)
        for f in self.fields:
            f.values[index] = rows[f.name]
        return index, unused

    def items_with(self, field_name: str, label: str) -> list[int]:
        """Dense indices of the items whose ``field_name`` holds the value ``label`` (as the
        catalog names it, e.g. ``brand`` ``Voltra``); a DataError names an unknown field or value."""
        fields = {f.name: f for f in self.fields}
        if field_name not in fields:
            raise DataError(
                f"unknown attribute field {field_name!r}",
                fix=f"use one of the catalog's fields: {', '.join(fields) or '(the catalog has none)'}",
            )
        f = fields[field_name]
        if label not in f.vocab[1:]:
            shown = ", ".join(repr(v) for v in f.vocab[1:6]) + (", ..." if len(f.vocab) > 6 else "")
            raise DataError(f"{field_name!r} has no value {label!r}", fix=f"use a value it has (e.g. {shown})")
        return np.flatnonzero((f.values == f.vocab.index(label)).any(axis=1)).tolist()

    def encode(self, attributes: Mapping[str, object]) -> tuple[dict[str, np.ndarray], list[str]]:
        """Each field's value indices for an item with ``attributes`` (field -> value or [values]),
        and ``"field=value"`` for each value the fields cannot hold (a field the data does not
        have, a value no trained item has, more values than the field's width)."""
        rows, left = {}, {}
        for f in self.fields:
            rows[f.name], left[f.name] = f.encode(attributes.get(f.name))
        unused = []
        for name, value in attributes.items():  # in the order given
            values = left[name] if name in left else [] if value is None else as_list(value)
            unused += [f"{name}={v}" for v in values]
        return rows, unused

    def unusable(self, attributes: Mapping[str, object]) -> list[str]:
        """The ``"field=value"`` of ``attributes`` the model has no embedding for (see :meth:`encode`)."""
        return self.encode(attributes)[1]

    def item_texts(self, rows: Sequence[int] | None = None) -> list[str]:
        """The text the encoder reads for the items at ``rows`` (dense indices; default every index,
        padding included): the item's text columns joined by ". "; a run without text columns
        reads its titles."""
        present = list(self.texts.values()) or ([self.titles] if self.titles else [])
        rows = range(len(self.item_ids)) if rows is None else rows
        return [". ".join(t[i].strip() for t in present if t[i].strip()) for i in rows]

    def title(self, item: int) -> str:
        if self.titles and self.titles[item]:
            return self.titles[item]
        return self.item_ids[item]

    def describe(self) -> str:
        lengths = self.lengths
        return (
            f"{self.name}: {self.n_users:,} users, {self.n_items:,} items, {self.n_events:,} events "
            f"(mean length {lengths.mean():.2f}, max {lengths.max()}), "
            f"fields: {', '.join(f'{f.name}[{f.vocab_size - 1}]' for f in self.fields) or 'none'}"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"offsets": self.offsets, "items": self.items, "timestamps": self.timestamps}
        for f in self.fields:
            arrays[f"field.{f.name}"] = f.values
        for name, values in self.extras.items():
            arrays[f"extra.{name}"] = values
        arrays["events"], arrays["values"] = self.events, self.values
        if self.impressions is not None:
            for name in ("users", "hist_len", "items", "clicked"):
                arrays[f"impressions.{name}"] = getattr(self.impressions, name)
        atomic_write(directory / "data.safetensors", lambda p: save_file(arrays, str(p)))
        meta = {
            "name": self.name,
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "titles": self.titles,
            "texts": self.texts,
            "fields": [
                {"name": f.name, "kind": f.kind, "vocab": f.vocab, "band_edges": f.band_edges} for f in self.fields
            ],
            "extras": list(self.extras),
            "extra_labels": self.extra_labels,
            "event_types": self.event_types,
            "report": self.report.to_dict(),
        }
        atomic_write(directory / "data.json", lambda p: p.write_text(json.dumps(meta)))
        if self.report.skipped:
            atomic_write(directory / SKIPPED_FILE, self.report.write_skipped)

    @classmethod
    def load(cls, directory: Path) -> Dataset:
        arrays = load_file(str(directory / "data.safetensors"))
        meta = json.loads((directory / "data.json").read_text())
        fields_ = [
            ItemField(f["name"], f["kind"], f["vocab"], arrays[f"field.{f['name']}"], f["band_edges"])
            for f in meta["fields"]
        ]
        report = LoadReport(**meta["report"])
        if (directory / SKIPPED_FILE).exists():
            report.skipped = LoadReport.read_skipped(directory / SKIPPED_FILE)
        impressions = None
        if "impressions.users" in arrays:
            impressions = Impressions(*(arrays[f"impressions.{n}"] for n in ("users", "hist_len", "items", "clicked")))
        # Runs from before events and values were kept have neither: every event has code 0 and no value.
        return cls(
            name=meta["name"],
            user_ids=meta["user_ids"],
            item_ids=meta["item_ids"],
            offsets=arrays["offsets"],
            items=arrays["items"],
            timestamps=arrays["timestamps"],
            titles=meta["titles"],
            texts=meta.get("texts") or {},  # runs from before text columns were kept have titles only
            fields=fields_,
            extras={name: arrays[f"extra.{name}"] for name in meta["extras"]},
            extra_labels=meta["extra_labels"],
            report=report,
            events=arrays.get("events"),
            event_types=meta.get("event_types") or [NO_EVENT],
            values=arrays.get("values"),
            impressions=impressions,
        )


# ---------------------------------------------------------------------- building
def from_frames(
    name: str,
    interactions: pl.DataFrame,
    catalog: pl.DataFrame | None = None,
    *,
    price_bands: int = 5,
    list_separator: str = "|",
    report: LoadReport | None = None,
    extra_labels: dict[str, list[str]] | None = None,
    time_scale: float = 1.0,
    text_columns: tuple[str, ...] = TEXT_COLUMNS,
) -> Dataset:
    """Build a Dataset from validated frames.

    ``interactions`` has string ``user_id``, ``item_id`` and numeric ``timestamp`` columns, and
    optionally ``event`` (String, null = none) and ``value`` (Float64, null = none), which become
    ``events``/``event_types`` and ``values`` (the report says what they hold); any other integer
    columns are kept as per-event extras. ``catalog`` has a string
    ``item_id`` and any attribute or text columns (all strings; numeric ones are detected).
    Events are ordered by the timestamps as given (integers compare exactly), ties keep
    file order; ``Dataset.timestamps`` is ``timestamp * time_scale`` (seconds).
    """
    report = report or LoadReport()
    catalog_ids = catalog["item_id"] if catalog is not None else pl.Series("item_id", [], pl.String)
    all_items = pl.concat([catalog_ids, interactions["item_id"]]).unique(maintain_order=True)
    item_ids = [""] + all_items.to_list()
    item_lookup = pl.DataFrame({"item_id": all_items, "_item": np.arange(1, len(all_items) + 1)})

    users = interactions["user_id"].unique(maintain_order=True)
    user_lookup = pl.DataFrame({"user_id": users, "_user": np.arange(len(users))})

    events = (
        interactions.with_row_index("_row")
        .join(user_lookup, on="user_id", how="left")
        .join(item_lookup, on="item_id", how="left")
        .sort(["_user", "timestamp", "_row"])
    )
    counts = np.bincount(events["_user"].to_numpy(), minlength=len(users))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    extras = {
        c: events[c].to_numpy().astype(np.int64)
        for c in interactions.columns
        if c not in ("user_id", "item_id", "timestamp", "event", "value")
    }
    codes, event_types = _event_codes(events, report)
    values = _values(events, report)

    if catalog is not None:
        bought = interactions["item_id"].unique(maintain_order=True)
        missing = bought.filter(~bought.is_in(catalog["item_id"].implode()))
        if len(missing):
            report.notes.append(
                f"{len(missing):,} item(s) in the interactions are not in the catalog "
                f"(e.g. {_examples(missing)}); they get no attributes"
            )
        unseen = catalog["item_id"].filter(~catalog["item_id"].is_in(bought.implode()))
        if len(unseen):
            report.notes.append(
                f"{len(unseen):,} catalog item(s) never appear in the interactions (e.g. {_examples(unseen)}); "
                "they stay in the catalog and can be recommended"
            )
    titles, texts, item_fields = catalog_fields(
        catalog, item_lookup, len(item_ids), price_bands=price_bands, sep=list_separator, text_columns=text_columns
    )
    return Dataset(
        name=name,
        user_ids=users.to_list(),
        item_ids=item_ids,
        offsets=offsets,
        items=events["_item"].to_numpy().astype(np.int64),
        timestamps=events["timestamp"].to_numpy().astype(np.float64) * time_scale,
        titles=titles,
        texts=texts,
        fields=item_fields,
        extras=extras,
        extra_labels=extra_labels or {},
        report=report,
        events=codes,
        event_types=event_types,
        values=values,
    )


def _event_codes(events: pl.DataFrame, report: LoadReport) -> tuple[np.ndarray | None, list[str]]:
    """Each event's type as a code (0 = none) and the types by code, sorted; the report says what
    the column holds and whether it can be a model input (it needs more than one type)."""
    if "event" not in events.columns:
        return None, [NO_EVENT]
    column = events["event"]
    types = sorted(column.drop_nulls().unique().to_list())
    codes = column.replace_strict(types, range(1, len(types) + 1), default=0, return_dtype=pl.Int64)
    codes = codes.fill_null(0).to_numpy().astype(np.int64)  # null (no type) is code 0
    counts = np.bincount(codes, minlength=len(types) + 1)
    shown = ", ".join(f"{t!r} {counts[i]:,}" for i, t in enumerate(types[:8], start=1))
    shown += ", ..." if len(types) > 8 else ""
    missing = f"; {counts[0]:,} row(s) name none (type 'none')" if counts[0] else ""
    if len(types) > 1:
        use = "each event's type is an input of the model (an embedding added to its token, model.use_events)"
    else:
        use = "a single type tells the model nothing, so it is kept but not read as an input"
    report.notes.append(f"event types in column 'event': {shown}{missing}: {use}")
    return codes, [NO_EVENT, *types]


def _values(events: pl.DataFrame, report: LoadReport) -> np.ndarray | None:
    """Each event's value (NaN = none); the report says what the column holds and what reads it."""
    if "value" not in events.columns:
        return None
    values = events["value"].cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(np.float64)
    known = values[np.isfinite(values)]
    if len(known):
        missing = f"; {len(values) - len(known):,} row(s) have none" if len(known) < len(values) else ""
        report.notes.append(
            f"values in column 'value': {len(known):,} from {known.min():g} to {known.max():g}{missing}: the rating "
            "task (train.task=rating) predicts them and reads them as inputs; the other tasks do not use them"
        )
    else:
        report.notes.append("column 'value' holds no numbers: nothing to keep")
    return values


def _examples(ids: pl.Series, n: int = 3) -> str:
    return ", ".join(repr(i) for i in ids.head(n).to_list()) + (", ..." if len(ids) > n else "")
