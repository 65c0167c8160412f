"""Data specs: one string per source, used everywhere (``--data SPEC``).

- ``s3rec:DIR`` or ``s3rec:FILE.txt``: lines ``user item item ...`` in time order, with optional
  ``<Name>_item2attributes.json`` and ``<Name>_item2title.json`` beside the text file;
- ``movielens:DIR``: ml-100k (``u.data``, ``u.item``) or ml-1m (``ratings.dat``, ``movies.dat``);
- ``csv:FILE`` / ``parquet:FILE``: interactions ``user_id,item_id,timestamp`` (+ optional
  ``event``, ``value``), with an optional catalog file (``item_id`` + attribute and text columns);
- ``synthetic[:key=value,...]``: the built-in shop (see ``recscope.data.synthetic``); with
  ``events=E`` the same shop at any size (``recscope.data.scale``);
- ``prepared:DIR``: a data set ``recscope data prepare`` wrote (see ``recscope.data.prepare``).

Every loader validates what it reads and raises :class:`DataError` naming the file, the
line or row, the column and how to fix it. With ``skip_bad_rows`` bad interaction rows are
skipped, counted and listed in the dataset's :class:`LoadReport` instead (up to
``max_skip_share`` of them); exact duplicates follow ``data.duplicates``. Catalogs and item
metadata are read strictly. Which catalog columns become attributes is ``data.attribute_columns``
(every one by default; :func:`recscope.data.rows.catalog_columns`), for every source that has a
catalog. How rows become checked rows is in :mod:`recscope.data.rows`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import polars as pl

from recscope.config import DataConfig, check_key
from recscope.data.dataset import Dataset, LoadReport, SkippedRow, from_frames
from recscope.data.rows import (
    SKIP_FIX,
    Table,
    catalog_columns,
    check_interactions,
    check_options,
    check_skip_share,
    choose_columns,
    read_bytes,
    read_lines,
    read_parquet,
    read_text,
    require_clean,
    scalar_column,
)
from recscope.errors import DataError

FORMATS = ("s3rec", "movielens", "csv", "parquet", "synthetic", "prepared")


class Source(NamedTuple):
    name: str
    interactions: pl.DataFrame  # user_id, item_id, timestamp (in file order)
    catalog: pl.DataFrame | None
    time_scale: float = 1.0  # seconds per timestamp unit
    catalog_file: str = ""  # the file the catalog came from, for messages


def column_map(entries: list[str] | None) -> dict[str, str]:
    """``--map`` entries ``ours=yours`` (e.g. ``user_id=customer``) as load_dataset's ``columns``."""
    columns = {}
    for entry in entries or []:
        ours, sep, theirs = entry.partition("=")
        if not sep:
            raise DataError(f"--map {entry!r} is not ours=yours", fix="e.g. --map user_id=customer")
        columns[ours] = theirs
    return columns


def load_dataset(
    spec: str,
    catalog: str | Path | None = None,
    config: DataConfig | None = None,
    columns: dict[str, str] | None = None,
) -> Dataset:
    """Load any supported source into a :class:`Dataset`.

    ``columns`` maps our column names to the file's, e.g. ``{"user_id": "customer"}``.
    """
    config = config or DataConfig()
    kind, _, rest = spec.partition(":")
    if kind not in FORMATS:
        raise DataError(
            f"unknown data format {kind!r} in spec {spec!r}",
            fix=f"start the spec with one of {', '.join(f + ':' for f in FORMATS)} e.g. csv:events.csv",
        )
    if kind == "prepared" and (catalog is not None or columns):
        raise DataError(
            "--catalog and --map are for raw data: a prepared data set already holds its catalog and columns",
            fix="drop them here (give them to recscope data prepare)",
        )
    if kind in BUILT:
        return BUILT[kind](rest, config)
    if not rest:
        raise DataError(f"spec {spec!r} names no path", fix=f"write it as {kind}:PATH")
    path = Path(rest).expanduser()
    if not path.exists():
        raise DataError("does not exist", file=str(path), fix="check the path in --data")
    if catalog is not None and kind in ("s3rec", "movielens"):
        raise DataError(
            f"--catalog is for csv/parquet data; {kind} data brings its own item metadata",
            fix="drop --catalog, or convert the data to csv first",
        )
    check_options(config)
    report = LoadReport()
    source = LOADERS[kind](path, config, columns or {}, report)
    if catalog is not None:
        cat = _read_catalog(Path(catalog), columns or {}, config)
    elif source.catalog is not None:
        cat = choose_columns(source.catalog, config, source.catalog_file)
    elif config.attribute_columns:
        raise DataError(
            f"data.attribute_columns names {', '.join(map(repr, config.attribute_columns))}, but the data has "
            "no catalog to read them from",
            file=str(path),
            fix="pass the catalog with --catalog FILE, or leave data.attribute_columns out",
        )
    else:
        cat = None
    return from_frames(
        source.name,
        source.interactions,
        cat,
        price_bands=config.price_bands,
        list_separator=config.list_separator,
        report=report,
        time_scale=source.time_scale,
        text_columns=config.text_columns,
    )


# ---------------------------------------------------------------------- s3rec
def _load_s3rec(path: Path, config: DataConfig, columns: dict[str, str], report: LoadReport) -> Source:
    if path.is_dir():
        candidates = sorted(p for p in path.glob("*.txt") if not p.stem.endswith("_sample"))
        if len(candidates) != 1:
            raise DataError(
                f"expected exactly one <Name>.txt sequence file in {path}, found "
                f"{[p.name for p in candidates] or 'none'}",
                file=str(path),
                fix="pass the file itself: s3rec:DIR/Name.txt",
            )
        text_file = candidates[0]
    else:
        text_file = path
    file = str(text_file)
    lines, bad_bytes = read_lines(text_file)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    first_line: dict[str, tuple[int, list[str]]] = {}  # user -> (line, tokens) of the user's line
    duplicates = []
    for number, line in enumerate(lines.to_list(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        report.rows_read += 1
        problem, column = _s3rec_problem(number, line, tokens, bad_bytes)
        earlier = first_line.get(tokens[0])
        if problem is None and earlier is not None:
            if earlier[1] == tokens and config.duplicates != "keep":
                if config.duplicates == "error":
                    raise DataError(
                        f"line {number} repeats line {earlier[0]} exactly",
                        file=file,
                        row=number,
                        fix="remove the repeat, or --set data.duplicates=drop to drop repeats (they are listed)",
                    )
                duplicates.append((number, earlier[0]))
                report.skipped.append(SkippedRow(file, "line", number, f"exact duplicate of line {earlier[0]}", line))
                continue
            problem, column = f"user {tokens[0]!r} already has a line (line {earlier[0]})", "user"
        if problem:
            if not config.skip_bad_rows:
                raise DataError(
                    problem,
                    file=file,
                    row=number,
                    column=column,
                    fix="each line is `user item item ...`, one line per user, with positive integer item ids "
                    f"separated by spaces, oldest first; or {SKIP_FIX}",
                )
            report.skip(SkippedRow(file, "line", number, problem, line))
            continue
        first_line[tokens[0]] = (number, tokens)
        n = len(tokens) - 1
        users.extend([tokens[0]] * n)
        items.extend(tokens[1:])
        times.extend(range(n))
    if report.rows_skipped:
        check_skip_share(report, file, config.max_skip_share)
    if duplicates:
        report.duplicates_dropped = len(duplicates)
        shown = ", ".join(f"line {n} repeats line {f}" for n, f in duplicates[:3])
        report.notes.append(
            f"dropped {len(duplicates):,} line(s) of {file} that repeat an earlier line exactly: {shown}"
            f"{', ...' if len(duplicates) > 3 else ''}; they are listed in skipped_rows.csv"
        )
    if not users:
        raise DataError("the file holds no interactions", file=file, fix="check the file is not empty")
    report.rows_kept = report.rows_read - report.rows_skipped - report.duplicates_dropped
    report.notes.append(f"timestamps in {file}: none; each line's order is the time order")
    interactions = pl.DataFrame({"user_id": users, "item_id": items, "timestamp": times})
    name = path.stem if path.is_file() else path.name
    stem = text_file.stem
    metadata = text_file.with_name(f"{stem}_item2attributes.json")
    if not metadata.exists():
        metadata = text_file.with_name(f"{stem}_item2title.json")
    return Source(name, interactions, _read_s3rec_catalog(text_file), catalog_file=str(metadata))


def _s3rec_problem(number: int, line: str, tokens: list[str], bad_bytes: set[int]) -> tuple[str | None, str | None]:
    if number in bad_bytes:
        return "bytes that are not UTF-8 text", None
    if "\x00" in line:
        return "a NUL byte (binary data?)", None
    if len(tokens) < 2:
        return "the line has a user but no items", "items"
    for j, token in enumerate(tokens[1:], start=1):
        if not (token.isascii() and token.isdigit()) or not token.strip("0"):
            return f"token {token!r} is not a positive integer item id", f"token {j + 1}"
    return None, None


def _read_s3rec_catalog(text_file: Path) -> pl.DataFrame | None:
    stem = text_file.stem
    attrs_path = text_file.with_name(f"{stem}_item2attributes.json")
    titles_path = text_file.with_name(f"{stem}_item2title.json")
    columns: dict[str, dict[str, object]] = {}
    if attrs_path.exists():
        for item, values in _read_json(attrs_path).items():
            if not isinstance(values, list) or not all(_is_id(v) for v in values):
                raise DataError(
                    f"item {item!r} maps to {json.dumps(values)[:60]}, not a list of attribute ids",
                    file=str(attrs_path),
                    column=item,
                    fix='write {"item": [attribute ids]} with integer or text ids',
                )
            columns.setdefault(item, {})["attribute"] = [str(v) for v in values]
    if titles_path.exists():
        for item, value in _read_json(titles_path).items():
            title = value.get("title") if isinstance(value, dict) else value
            if title is not None and not isinstance(title, str):
                raise DataError(
                    f"item {item!r} has a title that is not text",
                    file=str(titles_path),
                    column=item,
                    fix='write {"item": {"title": "..."}}',
                )
            columns.setdefault(item, {})["title"] = title or ""
    if not columns:
        return None
    ids = list(columns)
    frame: dict[str, object] = {"item_id": ids}
    if attrs_path.exists():
        frame["attribute"] = pl.Series([columns[i].get("attribute") for i in ids], dtype=pl.List(pl.String))
    if titles_path.exists():
        frame["title"] = pl.Series([columns[i].get("title") for i in ids], dtype=pl.String)
    return pl.DataFrame(frame)


def _is_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _read_json(path: Path) -> dict:
    def unique_keys(pairs: list[tuple[str, object]]) -> dict:
        out = dict(pairs)
        if len(out) < len(pairs):  # json.loads would keep the last value silently
            seen: set[str] = set()
            repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise DataError(f"key {repeated!r} appears twice in one object", file=str(path), column=repeated)
        return out

    raw = read_bytes(path)
    try:
        data = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=unique_keys)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError("is not UTF-8 text", file=str(path), row=line, fix="save it as UTF-8") from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"not valid JSON: {e.msg}", file=str(path), row=e.lineno, fix="repair or remove the file"
        ) from None
    except RecursionError:
        raise DataError("not valid JSON: nested too deeply", file=str(path), fix="repair or remove the file") from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object keyed by item id", file=str(path))
    return data


# ---------------------------------------------------------------------- movielens
ML_RATINGS = ["user_id", "item_id", "value", "timestamp"]


def _load_movielens(path: Path, config: DataConfig, columns: dict[str, str], report: LoadReport) -> Source:
    if not path.is_dir():
        raise DataError("movielens: expects the unpacked folder", file=str(path), fix="movielens:DIR")
    if (path / "u.data").exists():
        ratings = read_text(
            path / "u.data", "\t", names=ML_RATINGS, layout="user, item, rating, timestamp", quotes=False
        )
        catalog = _ml100k_catalog(path)
    elif (path / "ratings.dat").exists():
        ratings = read_text(
            path / "ratings.dat", "::", names=ML_RATINGS, layout="UserID::MovieID::Rating::Timestamp", quotes=False
        )
        movies = _clean(
            read_text(
                path / "movies.dat",
                "::",
                names=["item_id", "title", "genre"],
                layout="MovieID::Title::Genres",
                quotes=False,
                encoding="latin-1",
            )
        )
        catalog = movies.select(
            "item_id",
            "title",
            pl.col("genre").str.split("|").alias("genre"),
            pl.col("title").str.extract(r"\((\d{4})\)\s*$").alias("year"),
        )
    else:
        raise DataError(
            "no u.data (ml-100k) or ratings.dat (ml-1m) in the folder",
            file=str(path),
            fix="point movielens: at the unpacked ml-100k or ml-1m folder",
        )
    interactions, scale = check_interactions(ratings, {}, config, report)
    item_file = path / ("u.item" if (path / "u.data").exists() else "movies.dat")
    return Source(path.name, interactions, catalog, scale, str(item_file))


def _ml100k_catalog(path: Path) -> pl.DataFrame:
    genre_file = path / "u.genre"
    if not genre_file.exists():
        raise DataError("file is missing", file=str(genre_file), fix="copy u.genre (it names u.item's genre columns)")
    lines, _ = read_lines(genre_file, "latin-1")
    genres = [line.split("|")[0] for line in lines.to_list() if line.strip()]
    names = ["item_id", "title", "release", "video", "url", *genres]
    repeated = next((g for g in genres if names.count(g) > 1), None)
    if repeated is not None:
        raise DataError(f"genre {repeated!r} is named twice (or is a u.item column)", file=str(genre_file))
    if not (path / "u.item").exists():
        raise DataError("file is missing", file=str(path / "u.item"), fix="copy u.item (the movies)")
    movies = _clean(
        read_text(
            path / "u.item",
            "|",
            names=names,
            layout=f"id, title, release date, video date, url and one flag per genre of u.genre ({len(genres)})",
            quotes=False,
            encoding="latin-1",
        )
    )
    flags = movies.select(genres)
    not_flag = flags.select(pl.any_horizontal(~pl.all().is_in(["0", "1"])).alias("bad"))["bad"]
    if not_flag.any():
        row = int(not_flag.arg_true()[0])
        column = next(g for g in genres if flags[g][row] not in ("0", "1"))
        raise DataError(
            f"genre flag {flags[column][row]!r} is not 0 or 1",
            file=str(path / "u.item"),
            row=int(movies["_number"][row]),
            column=column,
            fix="write 1 if the movie has the genre, else 0",
        )
    genre = pl.concat_list([pl.when(pl.col(g) == "1").then(pl.lit(g)).otherwise(None) for g in genres])
    return movies.select(
        "item_id",
        "title",
        genre.list.drop_nulls().alias("genre"),
        pl.col("release").str.extract(r"(\d{4})\s*$").alias("year"),
    )


def _clean(table: Table) -> pl.DataFrame:
    """A strictly read file's cells under their names, with ``_number``."""
    require_clean(table, str(Path(table.file).name))
    return table.frame.select("_number", *(pl.col(f"#{j}").alias(n) for j, n in enumerate(table.names)))


# ---------------------------------------------------------------------- csv / parquet
def _load_table(kind: str) -> Callable[[Path, DataConfig, dict[str, str], LoadReport], Source]:
    def load(path: Path, config: DataConfig, columns: dict[str, str], report: LoadReport) -> Source:
        interactions, scale = check_interactions(_read_table(path, kind, config), columns, config, report)
        return Source(path.stem, interactions, None, scale)

    return load


def _read_table(path: Path, kind: str, config: DataConfig) -> Table:
    if kind == "parquet" or path.suffix == ".parquet":
        return read_parquet(path)
    return read_text(path, separator(config))


def separator(config: DataConfig) -> str:
    check_key("data.separator", config.separator, "data")  # config.RULES' rule, for a DataConfig built in Python
    return config.separator


def _read_catalog(path: Path, columns: dict[str, str], config: DataConfig) -> pl.DataFrame:
    if not path.exists():
        raise DataError("catalog file does not exist", file=str(path), fix="check the path in --catalog")
    table = _read_table(path, "parquet" if path.suffix == ".parquet" else "csv", config)
    require_clean(table)
    theirs = "item_id" if "item_id" in table.names else columns.get("item_id", "item_id")
    if table.column(theirs) is None:
        raise DataError(
            f"required column 'item_id' is missing; the catalog has {table.names}",
            file=table.file,
            column="item_id",
            fix="name the item column item_id (or map it with --map item_id=YOUR_COLUMN)",
        )
    item = scalar_column(table, theirs, table.column(theirs), "id").alias("item_id")
    # Only the columns read become expressions: a column left out (an image_url, a nested one) is not read.
    names = catalog_columns([n for n in table.names if n != theirs], config, table.file, theirs)
    frame = table.frame.select(item, *(_catalog_column(table, name) for name in names))
    numbers = table.frame["_number"]  # kept apart: a catalog column may be called anything
    ids = frame["item_id"]
    blank = ids.is_null() | (ids.str.strip_chars() == "")
    if blank.any():
        raise DataError(
            "empty item_id",
            file=table.file,
            row=numbers.filter(blank)[0],
            column="item_id",
            row_label=table.unit,
            fix="give every catalog row an item_id",
        )
    repeat = ~ids.is_first_distinct()
    if repeat.any():
        item_id = ids.filter(repeat)[0]
        raise DataError(
            f"item {item_id!r} appears more than once (first at {table.unit} {numbers.filter(ids == item_id)[0]})",
            file=table.file,
            row=numbers.filter(repeat)[0],
            column="item_id",
            row_label=table.unit,
            fix="keep one row per item; put several values in one cell separated by '|'",
        )
    return frame


def _catalog_column(table: Table, name: str) -> pl.Expr:
    """A catalog column as text, or as a list of texts (parquet lists of scalars: multi-valued attributes)."""
    column = table.column(name)
    dtype = table.frame.schema[column]
    if isinstance(dtype, pl.List | pl.Array) and not (dtype.inner.is_nested() or dtype.inner in (pl.Binary, pl.Object)):
        return pl.col(column).cast(pl.List(pl.String)).alias(name)
    return scalar_column(table, name, column, "value (or a list of values)").alias(name)


def _synthetic(rest: str, config: DataConfig) -> Dataset:
    from recscope.data.synthetic import load_synthetic

    return load_synthetic(rest, config)


def _prepared(rest: str, config: DataConfig) -> Dataset:
    from recscope.data.prepare import load_prepared

    return load_prepared(rest, config)


# Sources that make a Dataset themselves (no file of rows to check): spec rest, data config -> Dataset.
BUILT: dict[str, Callable[[str, DataConfig], Dataset]] = {"synthetic": _synthetic, "prepared": _prepared}

LOADERS: dict[str, Callable[[Path, DataConfig, dict[str, str], LoadReport], Source]] = {
    "s3rec": _load_s3rec,
    "movielens": _load_movielens,
    "csv": _load_table("csv"),
    "parquet": _load_table("parquet"),
}
