"""Data specs: one string per source, used everywhere (``--data SPEC``).

- ``s3rec:DIR`` or ``s3rec:FILE.txt``: lines ``user item item ...`` in time order, with optional
  ``<Name>_item2attributes.json`` and ``<Name>_item2title.json`` beside the text file;
- ``movielens:DIR``: ml-100k (``u.data``, ``u.item``) or ml-1m (``ratings.dat``, ``movies.dat``);
- ``csv:FILE`` / ``parquet:FILE``: interactions ``user_id,item_id,timestamp`` (+ optional
  ``event``, ``value``), with an optional catalog file (``item_id`` + attribute and text columns);
- ``synthetic[:key=value,...]``: the built-in shop (see ``recscope.data.synthetic``).

Every loader validates what it reads and raises :class:`DataError` naming the file, the
line or row, the column and how to fix it. With ``skip_bad_rows`` bad rows are skipped and
counted in the dataset's :class:`LoadReport` instead.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl

from recscope.config import DataConfig
from recscope.data.dataset import Dataset, LoadReport, from_frames
from recscope.errors import DataError

FORMATS = ("s3rec", "movielens", "csv", "parquet", "synthetic")
REQUIRED = ("user_id", "item_id", "timestamp")


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
    if kind == "synthetic":
        from recscope.data.synthetic import load_synthetic

        return load_synthetic(rest, config)
    if not rest:
        raise DataError(f"spec {spec!r} names no path", fix=f"write it as {kind}:PATH")
    path = Path(rest).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist", file=str(path), fix="check the path in --data")
    if catalog is not None and kind in ("s3rec", "movielens"):
        raise DataError(
            f"--catalog is for csv/parquet data; {kind} data brings its own item metadata",
            fix="drop --catalog, or convert the data to csv first",
        )
    report = LoadReport()
    if kind == "s3rec":
        interactions, cat = _read_s3rec(path, report, config.skip_bad_rows)
        name = path.stem if path.is_file() else path.name
    elif kind == "movielens":
        interactions, cat = _read_movielens(path, report, config.skip_bad_rows)
        name = path.name
    else:
        interactions = _read_interactions(path, kind, columns or {}, report, config.skip_bad_rows)
        cat = _read_catalog(Path(catalog), columns or {}) if catalog is not None else None
        name = path.stem
    return from_frames(
        name,
        interactions,
        cat,
        price_bands=config.price_bands,
        list_separator=config.list_separator,
        report=report,
    )


# ---------------------------------------------------------------------- s3rec
def _read_s3rec(path: Path, report: LoadReport, skip_bad: bool) -> tuple[pl.DataFrame, pl.DataFrame | None]:
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
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    with text_file.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            tokens = line.split()
            if not tokens:
                continue
            report.rows_read += 1
            where = f"{text_file}, line {line_no}"
            problem = None
            if len(tokens) < 2:
                problem, column = "the line has a user but no items", "items"
            else:
                bad = next((j for j, t in enumerate(tokens[1:], 1) if not t.isdigit() or t == "0"), None)
                if bad is not None:
                    problem = f"token {tokens[bad]!r} is not a positive integer item id"
                    column = f"token {bad + 1}"
            if problem:
                if skip_bad:
                    report.skip(problem, where)
                    continue
                raise DataError(
                    problem,
                    file=str(text_file),
                    row=line_no,
                    column=column,
                    fix="each line is `user item item ...` with positive integer item ids separated by "
                    "spaces, oldest first (or pass --set data.skip_bad_rows=true to skip such lines)",
                )
            n = len(tokens) - 1
            users.extend([tokens[0]] * n)
            items.extend(tokens[1:])
            times.extend(range(n))
    if not users:
        raise DataError("the file holds no interactions", file=str(text_file), fix="check the file is not empty")
    interactions = pl.DataFrame({"user_id": users, "item_id": items, "timestamp": times})
    return interactions, _read_s3rec_catalog(text_file)


def _read_s3rec_catalog(text_file: Path) -> pl.DataFrame | None:
    stem = text_file.stem
    attrs_path = text_file.with_name(f"{stem}_item2attributes.json")
    titles_path = text_file.with_name(f"{stem}_item2title.json")
    columns: dict[str, dict[str, object]] = {}
    if attrs_path.exists():
        raw = _read_json(attrs_path)
        for item, values in raw.items():
            if not isinstance(values, list):
                raise DataError(
                    f"item {item!r} maps to {type(values).__name__}, not a list of attribute ids",
                    file=str(attrs_path),
                    column=item,
                    fix='write {"item": [attribute ids]}',
                )
            columns.setdefault(item, {})["attribute"] = [str(v) for v in values]
    if titles_path.exists():
        raw = _read_json(titles_path)
        for item, value in raw.items():
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
        frame["title"] = [columns[i].get("title") for i in ids]
    return pl.DataFrame(frame)


def _read_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(
            f"not valid JSON: {e.msg}", file=str(path), row=e.lineno, fix="repair or remove the file"
        ) from None
    if not isinstance(raw, dict):
        raise DataError("expected a JSON object keyed by item id", file=str(path))
    return raw


# ---------------------------------------------------------------------- movielens
def _read_movielens(path: Path, report: LoadReport, skip_bad: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    if not path.is_dir():
        raise DataError("movielens: expects the unpacked folder", file=str(path), fix="movielens:DIR")
    if (path / "u.data").exists():
        ratings_file = path / "u.data"
        ratings = _read_delimited(ratings_file, "\t", ["user_id", "item_id", "value", "timestamp"])
        movies = _read_delimited(path / "u.item", "|", None, encoding="latin-1")
        if not (path / "u.genre").exists():
            raise DataError(
                "file is missing", file=str(path / "u.genre"), fix="copy u.genre (it names u.item's genre columns)"
            )
        genres = [g.split("|")[0] for g in (path / "u.genre").read_text(encoding="latin-1").splitlines() if g]
        flags = movies.columns[5 : 5 + len(genres)]
        if len(flags) != len(genres):
            raise DataError(
                f"u.item has {movies.width} columns, expected {5 + len(genres)} (5 + one per genre)",
                file=str(path / "u.item"),
            )
        genre = pl.concat_list(
            [pl.when(pl.col(c) == "1").then(pl.lit(g)).otherwise(None) for c, g in zip(flags, genres, strict=True)]
        ).list.drop_nulls()
        year = pl.col(movies.columns[2]).str.slice(-4)
        catalog = movies.select(
            pl.col(movies.columns[0]).alias("item_id"),
            pl.col(movies.columns[1]).alias("title"),
            genre.alias("genre"),
            year.alias("year"),
        )
    elif (path / "ratings.dat").exists():
        ratings_file = path / "ratings.dat"
        ratings = _read_double_colon(ratings_file, ["user_id", "item_id", "value", "timestamp"])
        movies = _read_double_colon(path / "movies.dat", ["item_id", "title", "genre"], encoding="latin-1")
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
    report.rows_read = ratings.height
    lines = ratings["_line"].to_list() if "_line" in ratings.columns else None
    interactions = _validate_interactions(
        ratings.select("user_id", "item_id", "timestamp"), str(ratings_file), report, skip_bad, first_row=1, lines=lines
    )
    return interactions, catalog


def _read_delimited(path: Path, sep: str, names: list[str] | None, encoding: str = "utf-8") -> pl.DataFrame:
    if not path.exists():
        raise DataError("file is missing", file=str(path))
    text = path.read_bytes().decode(encoding)  # polars reads utf-8 only
    try:
        return pl.read_csv(
            io.BytesIO(text.encode("utf-8")),
            separator=sep,
            has_header=False,
            infer_schema=False,
            quote_char=None,
            new_columns=names,
        )
    except pl.exceptions.PolarsError as e:
        raise DataError(f"could not be parsed: {e}", file=str(path)) from None


def _read_double_colon(path: Path, names: list[str], encoding: str = "utf-8") -> pl.DataFrame:
    """The ``::``-separated ml-1m files; blank lines hold nothing, and ``_line`` keeps each row's line."""
    if not path.exists():
        raise DataError("file is missing", file=str(path))
    rows, lines = [], []
    for number, line in enumerate(path.read_text(encoding=encoding).splitlines(), start=1):
        if not line.strip():
            continue
        row = line.split("::")
        if len(row) != len(names):
            raise DataError(
                f"expected {len(names)} '::'-separated fields, found {len(row)}", file=str(path), row=number
            )
        rows.append(row)
        lines.append(number)
    return pl.DataFrame(rows, schema=names, orient="row").with_columns(pl.Series("_line", lines, dtype=pl.Int64))


# ---------------------------------------------------------------------- csv / parquet
def _read_table(path: Path, kind: str) -> pl.DataFrame:
    try:
        if kind == "parquet" or path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            # Every cell as text (lists as lists of text): the catalog code detects numbers itself.
            return frame.with_columns(
                pl.col(c).cast(pl.List(pl.String) if frame[c].dtype == pl.List else pl.String) for c in frame.columns
            )
        return pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError:
        raise DataError("the file is empty", file=str(path), fix="write a header line and one row per event") from None
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"could not be parsed as {kind}: {e}", file=str(path)) from None


def _read_interactions(
    path: Path, kind: str, columns: dict[str, str], report: LoadReport, skip_bad: bool
) -> pl.DataFrame:
    frame = _read_table(path, kind)
    frame = _rename(frame, columns, str(path), required=REQUIRED)
    if frame.height == 0:
        raise DataError("the file has a header but no rows", file=str(path), fix="add one row per event")
    report.rows_read = frame.height
    keep = [c for c in ("user_id", "item_id", "timestamp") if c in frame.columns]
    text = kind == "csv" and path.suffix != ".parquet"
    return _validate_interactions(
        frame.select(keep), str(path), report, skip_bad, first_row=2 if text else 1, row_label="line" if text else "row"
    )


def _rename(frame: pl.DataFrame, columns: dict[str, str], file: str, required: tuple[str, ...]) -> pl.DataFrame:
    unknown = [k for k in columns if k not in ("user_id", "item_id", "timestamp", "event", "value")]
    if unknown:
        raise DataError(
            f"cannot map unknown column(s) {unknown}", fix="map only user_id, item_id, timestamp, event, value"
        )
    renames = {theirs: ours for ours, theirs in columns.items() if theirs in frame.columns}
    for ours, theirs in columns.items():
        if theirs not in frame.columns:
            raise DataError(
                f"column {theirs!r} (mapped to {ours}) is not in the file; it has {frame.columns}",
                file=file,
                column=theirs,
            )
    frame = frame.rename(renames)
    for name in required:
        if name not in frame.columns:
            raise DataError(
                f"required column {name!r} is missing; the file has {frame.columns}",
                file=file,
                column=name,
                fix=f"add a {name} column, or map yours with --map {name}=YOUR_COLUMN",
            )
    return frame


def _validate_interactions(
    frame: pl.DataFrame,
    file: str,
    report: LoadReport,
    skip_bad: bool,
    first_row: int,
    *,
    lines: list[int] | None = None,
    row_label: str = "line",
) -> pl.DataFrame:
    """Check ids are present and timestamps parse.

    Row ``r`` is reported as ``lines[r]`` when given (files that skip blank lines), else as
    ``r + first_row`` (the file line of row 0, or the 1-based row of a parquet file)."""
    where = (lambda r: lines[r]) if lines is not None else (lambda r: r + first_row)
    frame = frame.with_columns(_parse_time(frame["timestamp"]).alias("_time"))
    checks = [
        ("user_id", pl.col("user_id").is_null() | (pl.col("user_id").str.strip_chars() == ""), "empty user_id"),
        ("item_id", pl.col("item_id").is_null() | (pl.col("item_id").str.strip_chars() == ""), "empty item_id"),
        (
            "timestamp",
            pl.col("_time").is_null(),
            "timestamp is not a number or an ISO date/time",
        ),
    ]
    bad_any = pl.lit(False)
    for column, condition, reason in checks:
        bad = frame.with_row_index("_r").filter(condition)
        if bad.height == 0:
            continue
        if not skip_bad:
            row = int(bad["_r"][0])
            value = bad[column][0]
            raise DataError(
                f"{reason} (value {value!r}); {bad.height} row(s) have this problem",
                file=file,
                row=where(row),
                column=column,
                fix="correct the value, or pass --set data.skip_bad_rows=true to skip such rows "
                "(they are counted and reported)",
                row_label=row_label,
            )
        for r in bad["_r"].to_list():
            report.skip(f"{reason} in column {column}", f"{file}, {row_label} {where(r)}")
        bad_any = bad_any | condition
    frame = frame.filter(~bad_any)
    if frame.height == 0:
        raise DataError("no valid rows are left", file=file)
    return frame.select("user_id", "item_id", pl.col("_time").alias("timestamp"))


def _parse_time(column: pl.Series) -> pl.Series:
    """Numbers as they are; otherwise ISO date/times as epoch seconds."""
    if column.dtype.is_numeric():
        return column.cast(pl.Float64)
    as_number = column.cast(pl.Float64, strict=False)
    if as_number.null_count() == column.null_count():
        return as_number
    try:
        as_date = column.str.to_datetime(strict=False, time_unit="ms")
    except pl.exceptions.ComputeError:  # no value looks like a date: the bad rows are reported as such
        return as_number
    if as_date.null_count() <= as_number.null_count():
        return as_date.dt.epoch("ms").cast(pl.Float64) / 1000.0
    return as_number


def _read_catalog(path: Path, columns: dict[str, str]) -> pl.DataFrame:
    if not path.exists():
        raise DataError("catalog file does not exist", file=str(path), fix="check the path in --catalog")
    kind = "parquet" if path.suffix == ".parquet" else "csv"
    frame = _read_table(path, kind)
    first_row = 2 if kind == "csv" else 1  # file line (csv: after the header) of row 0, or parquet's 1-based row
    row_label = "line" if kind == "csv" else "row"
    if "item_id" not in frame.columns and columns.get("item_id") in frame.columns:
        frame = frame.rename({columns["item_id"]: "item_id"})
    if "item_id" not in frame.columns:
        raise DataError(
            f"required column 'item_id' is missing; the catalog has {frame.columns}",
            file=str(path),
            column="item_id",
            fix="name the item column item_id (or map it with --map item_id=YOUR_COLUMN)",
        )
    blank = frame.with_row_index("_r").filter(pl.col("item_id").is_null())
    if blank.height:
        raise DataError(
            "empty item_id", file=str(path), row=int(blank["_r"][0]) + first_row, column="item_id", row_label=row_label
        )
    dup = frame.with_row_index("_r").filter(~pl.col("item_id").is_first_distinct())  # the repeats
    if dup.height:
        raise DataError(
            f"item {dup['item_id'][0]!r} appears more than once",
            file=str(path),
            row=int(dup["_r"][0]) + first_row,
            column="item_id",
            row_label=row_label,
            fix="keep one row per item; put several values in one cell separated by '|'",
        )
    return frame
