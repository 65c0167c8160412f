"""Attribute vocabularies: catalog columns become token fields (value indices per item).

A catalog column is categorical (one value), multi-valued (a list, or cells joined by the
list separator) or numeric (bucketed into quantile bands, e.g. price). Each becomes an
:class:`ItemField`: a vocabulary (index 0 = missing) and an ``(n_items + 1, width)`` matrix
of value indices, the model's attribute embeddings read. Text columns (titles,
descriptions) are not attributes: :mod:`recscope.features.text` encodes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl

TEXT_COLUMNS = ("title", "name", "description")  # catalog columns read as text, not attributes
RESERVED = ("item_id",)
# What Python's str.strip() strips (polars' default strips Unicode White_Space, which is not quite the same set).
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


@dataclass
class ItemField:
    """One catalog attribute as a token field: every item has up to ``width`` values."""

    name: str
    kind: str  # "categorical" | "multi" | "numeric" (numeric values are bucketed into bands)
    vocab: list[str]  # value index -> label; index 0 = missing
    values: np.ndarray  # (n_items + 1, width) int64 value indices, 0 = none
    band_edges: list[float] | None = None  # numeric: upper edges of bands 1..n-1

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def labels(self, item: int) -> list[str]:
        return [self.vocab[v] for v in self.values[item] if v > 0]

    def encode(self, value: object) -> tuple[np.ndarray, list[object]]:
        """The (width,) value indices of an item's cell (a value, a list of values or None) and
        the values the field cannot hold (not in the vocabulary, not a number, past the width)."""
        row = np.zeros(self.values.shape[1], dtype=self.values.dtype)
        values = [] if value is None else as_list(value)
        if self.kind == "numeric":  # one number, put in its band as the training data's were
            first = next((j for j, v in enumerate(values) if _number(v) is not None), None)
            if first is None:
                return row, values
            edges = np.asarray(self.band_edges or [], dtype=np.float64)
            row[0] = int(np.searchsorted(edges, _number(values[first]), side="right")) + 1
            return row, values[:first] + values[first + 1 :]
        lookup = {label: i for i, label in enumerate(self.vocab) if i > 0}
        known = [lookup[str(v)] for v in dict.fromkeys(values) if str(v) in lookup]
        left = [v for v in dict.fromkeys(values) if str(v) not in lookup]
        row[: min(len(known), len(row))] = known[: len(row)]
        return row, left + [self.vocab[i] for i in known[len(row) :]]


class CatalogFeatures(NamedTuple):
    titles: list[str] | None  # dense item index -> display title (the first title/name column)
    texts: dict[str, list[str]]  # text column -> dense item index -> its text ("" where none)
    fields: list[ItemField]  # every other column, as a token field


def catalog_fields(
    catalog: pl.DataFrame | None,
    item_lookup: pl.DataFrame,
    n_rows: int,
    *,
    price_bands: int,
    sep: str,
    text_columns: Sequence[str] = TEXT_COLUMNS,
) -> CatalogFeatures:
    """The catalog's columns as titles, texts (``text_columns``, matched without case) and
    attribute fields, each indexed by dense item index (``item_lookup``: item_id -> _item)."""
    if catalog is None:
        return CatalogFeatures(None, {}, [])
    # The dense index of each catalog row, without joining (a catalog column may be called anything).
    index = catalog["item_id"].replace_strict(item_lookup["item_id"], item_lookup["_item"]).to_numpy()
    titles = None
    texts: dict[str, list[str]] = {}
    fields_: list[ItemField] = []
    text_names = {c.lower() for c in text_columns}
    for column in catalog.columns:
        if column in RESERVED:
            continue
        series = catalog[column]
        if column.lower() in text_names and series.dtype == pl.String:
            column_texts = pl.repeat("", n_rows, dtype=pl.String, eager=True).scatter(index, series.fill_null(""))
            texts[column] = column_texts.to_list()
            if titles is None and column.lower() in ("title", "name"):
                titles = list(texts[column])
            continue
        if series.dtype == pl.List(pl.String):
            fields_.append(_multi_field(column, series, index, n_rows))
            continue
        numeric = series.cast(pl.Float64, strict=False)
        if numeric.is_finite().any() and numeric.null_count() == series.null_count():
            fields_.append(_numeric_field(column, numeric.to_numpy(), index, n_rows, price_bands))
        elif series.str.contains(sep, literal=True).any():
            parts = series.str.split(sep, literal=True).list.eval(pl.element().str.strip_chars(WHITESPACE))
            fields_.append(
                _multi_field(column, parts.list.eval(pl.element().filter(pl.element() != "")), index, n_rows)
            )
        else:
            one = series.to_frame().select(pl.when(pl.col(column).is_not_null()).then(pl.concat_list(column)))
            fields_.append(_multi_field(column, one.to_series(), index, n_rows))
            fields_[-1].kind = "categorical"
    return CatalogFeatures(titles, texts, fields_)


def _multi_field(name: str, values: pl.Series, index: np.ndarray, n_rows: int) -> ItemField:
    """A field from ``values`` (List[String], one list per catalog row, null = none) put at the
    rows ``index``: a value's index is its order of first appearance in the catalog, and a value
    repeated within a cell counts once (the width is the longest cell as written)."""
    width = max(int(values.list.len().max() or 0), 1)
    cells = (
        pl.DataFrame({"_row": index, "_value": values})
        .filter(pl.col("_value").list.len() > 0)
        .explode("_value")
        .unique(maintain_order=True)
    )
    vocab = cells["_value"].unique(maintain_order=True)
    codes = pl.DataFrame({"_value": vocab, "_code": np.arange(1, len(vocab) + 1)})
    cells = cells.join(codes, on="_value", how="left", nulls_equal=True, maintain_order="left").with_columns(
        _slot=pl.int_range(pl.len()).over("_row")
    )
    matrix = np.zeros((n_rows, width), dtype=np.int64)
    matrix[cells["_row"].to_numpy(), cells["_slot"].to_numpy()] = cells["_code"].to_numpy()
    return ItemField(name, "multi", ["<none>", *vocab.to_list()], matrix)


def _numeric_field(name: str, values: np.ndarray, index: np.ndarray, n_rows: int, bands: int) -> ItemField:
    present = np.isfinite(values)  # nan, inf and missing cells get no band
    edges = np.unique(np.quantile(values[present], np.linspace(0, 1, bands + 1)[1:-1]))
    band = np.searchsorted(edges, values[present], side="right") + 1  # 1..len(edges)+1
    matrix = np.zeros((n_rows, 1), dtype=np.int64)
    matrix[index[present], 0] = band
    bounds = [float(values[present].min()), *edges.tolist(), float(values[present].max())]
    vocab = ["<none>"] + [f"band{b} ({_fmt(bounds[b - 1])}-{_fmt(bounds[b])})" for b in range(1, len(edges) + 2)]
    return ItemField(name, "numeric", vocab, matrix, edges.tolist())


def as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _number(value: object) -> float | None:
    """A finite number from an attribute value (a number or a numeric string), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _fmt(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.2g}"
