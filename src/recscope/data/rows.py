"""From a file to checked interaction rows, every row located and every row accounted for.

A :class:`Table` is a file's data rows as read, each with its place in the file (the line,
or a parquet file's 1-based row) and, for text files, the line itself. Reading is strict:
a row with too many or too few fields, bytes that are not UTF-8 or a NUL byte is a bad row,
never padded, cut or guessed at. :func:`check_interactions` then finds empty ids, timestamps
that do not parse and exact duplicates; each bad row either stops the load with a
:class:`DataError` naming file, line and column, or (``data.skip_bad_rows``) is skipped,
counted by reason and kept with its text in the :class:`LoadReport`.

Timestamps are epoch numbers (seconds, or milliseconds/microseconds/nanoseconds when their
size says so), ISO-8601 date/times, or the strftime format named by ``data.time_format``;
anything else is not guessed. The load report says which was used.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recscope.config import DataConfig
from recscope.data.dataset import LoadReport, SkippedRow
from recscope.errors import ConfigError, DataError

REQUIRED = ("user_id", "item_id", "timestamp")
OPTIONAL = ("event", "value")  # kept when present: the event's type (any string) and a number (a rating, ...)
SKIP_FIX = "pass --set data.skip_bad_rows=true to skip such rows (they are counted and listed)"
DUPLICATES = ("drop", "keep", "error")


# ---------------------------------------------------------------------- reading files
@dataclass
class Table:
    """A file's data rows.

    ``frame`` has one column per field of the header, named by position (``#0``, ``#1``, ...:
    a header may repeat a name or use one of ours), plus ``_number`` (the row's line, or its
    1-based parquet row), ``_problem`` (why the row cannot be read, or null) and, for text
    files, ``_text`` (the row as read).
    """

    file: str
    names: list[str]
    frame: pl.DataFrame
    unit: str  # "line" | "row"
    quoting: bool = False  # values may be quoted (csv): the fix for a ragged line says so

    def column(self, name: str) -> str | None:
        """The frame column of the field called ``name``, or None; a name the header repeats is an error."""
        fields = [i for i, n in enumerate(self.names) if n == name]
        if len(fields) > 1:
            positions = ", ".join(str(i + 1) for i in fields)
            raise DataError(
                f"the header names column {name!r} {len(fields)} times (fields {positions})",
                file=self.file,
                column=name,
                fix="rename or remove the extra column",
            )
        return f"#{fields[0]}" if fields else None

    def texts(self, rows: pl.DataFrame) -> list[str]:
        """The text of each of ``rows`` (a slice of ``frame``): the line, or the parquet row as JSON."""
        if "_text" in rows.columns:
            return rows["_text"].to_list()
        originals = rows.select("_number").join(self.frame, on="_number", how="left", maintain_order="left")
        cells = originals.select(f"#{i}" for i in range(len(self.names))).rows()
        return [json.dumps(dict(zip(self.names, row, strict=True)), default=str, ensure_ascii=False) for row in cells]


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise DataError("is a folder, not a file", file=str(path), fix="name the file inside it") from None
    except FileNotFoundError:
        raise DataError("file is missing", file=str(path), fix="check the path") from None
    except PermissionError:
        raise DataError(
            "cannot be read: permission denied", file=str(path), fix="make it readable (chmod u+r)"
        ) from None
    except OSError as e:
        raise DataError(f"cannot be read: {e.strerror or e}", file=str(path)) from None


def read_lines(path: Path, encoding: str = "utf-8") -> tuple[pl.Series, set[int]]:
    """The file's lines without their line ends, and the numbers of lines whose bytes are not ``encoding``.

    Those lines are kept with the bad bytes as ``\\xNN`` escapes, so they can be reported and listed."""
    raw = read_bytes(path)
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(
            "is UTF-16 text", file=str(path), fix=f"save it as UTF-8, e.g. iconv -f utf-16 -t utf-8 {path} > new.csv"
        )
    if encoding == "utf-8" and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    bad: set[int] = set()
    try:
        lines = pl.Series([raw.decode(encoding)], dtype=pl.String).str.split("\n").explode()
    except UnicodeDecodeError:
        decoded = []
        for number, chunk in enumerate(raw.split(b"\n"), start=1):
            try:
                decoded.append(chunk.decode(encoding))
            except UnicodeDecodeError:
                decoded.append(chunk.decode(encoding, "backslashreplace"))
                bad.add(number)
        lines = pl.Series(decoded, dtype=pl.String)
    if raw.endswith(b"\n") or not raw:
        lines = lines.head(-1)  # the last line end ends a line, it does not start one
    return lines.str.strip_suffix("\r"), bad


def read_text(
    path: Path,
    separator: str,
    *,
    names: list[str] | None = None,
    layout: str | None = None,
    quotes: bool = True,
    encoding: str = "utf-8",
) -> Table:
    """A delimited text file: a header line (or the given ``names``), then one row per non-blank line.

    ``layout`` says where the field count comes from, for messages (default: the header).
    With ``quotes``, double-quoted values may hold the separator, quotes (doubled) and line breaks."""
    file = str(path)
    lines, bad_bytes = read_lines(path, encoding)
    # One frame row per record: _number (its first line), _text, _fields (List[String]), _bad_bytes.
    frame = (
        pl.DataFrame({"_text": lines})
        .with_row_index("_number", offset=1)
        .with_columns(pl.col("_number").cast(pl.Int64))
        .filter(pl.col("_text").str.strip_chars() != "")
    )
    if frame.height == 0:
        raise DataError(
            "the file is empty", file=file, fix="write a header line, then one row per event (per item in a catalog)"
        )
    if quotes and frame["_text"].str.contains('"', literal=True).any():
        frame = _quoted_records(lines.to_list(), separator, file, bad_bytes)
    else:
        frame = frame.with_columns(
            pl.col("_text").str.split(separator).alias("_fields"),
            pl.col("_number").is_in(pl.Series(sorted(bad_bytes), dtype=pl.Int64).implode()).alias("_bad_bytes"),
        )
    if names is None:
        header = frame.row(0, named=True)
        frame = frame.slice(1)
        if header["_bad_bytes"] or "\x00" in header["_text"]:
            raise DataError(
                "the header line is not UTF-8 text",
                file=file,
                row=header["_number"],
                fix="save the file as UTF-8 text, e.g. iconv -f latin1 -t utf-8",
            )
        names = [name.strip() for name in header["_fields"]]
    width = len(names)
    layout = layout or f"as many as the header: {separator.join(names)}"
    count = pl.col("_fields").list.len()
    frame = frame.with_columns(
        pl.when("_bad_bytes")
        .then(pl.lit(f"bytes that are not {encoding.upper()} text"))
        .when(pl.col("_text").str.contains("\x00", literal=True))
        .then(pl.lit("a NUL byte (binary data?)"))
        .when(count != width)
        .then(pl.concat_str(count.cast(pl.String), pl.lit(f" fields, expected {width} ({layout})")))
        .alias("_problem")
    )
    ok = pl.col("_problem").is_null()
    frame = frame.select(
        *(pl.when(ok).then(pl.col("_fields").list.get(j, null_on_oob=True)).alias(f"#{j}") for j in range(width)),
        "_number",
        "_text",
        "_problem",
    )
    return Table(file, names, frame, "line", quoting=quotes)


def _quoted_records(lines: list[str], separator: str, file: str, bad_bytes: set[int]) -> pl.DataFrame:
    """Records of a file with quotes: a quoted value may hold the separator and span lines (even blank ones)."""
    current = [0]

    def numbered():
        for number, line in enumerate(lines, start=1):
            current[0] = number
            yield line + "\n"

    reader = csv.reader(numbered(), delimiter=separator, strict=True)
    rows = []
    end = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            start = next(n for n in range(end + 1, current[0] + 1) if lines[n - 1].strip())
            raise DataError(
                f"a quoted value is not closed or is followed by text ({e}; the row starts here, "
                f"the reader stopped at line {current[0]})",
                file=file,
                row=start,
                fix='close the quote; a quote inside a quoted value is written twice ("")',
            ) from None
        end = current[0]
        start = end - sum(field.count("\n") for field in fields)
        text = "\n".join(lines[start - 1 : end])
        if start == end and not text.strip():
            continue  # a blank line holds no record
        rows.append((start, text, fields, any(n in bad_bytes for n in range(start, end + 1))))
    return pl.DataFrame(
        rows,
        schema={"_number": pl.Int64, "_text": pl.String, "_fields": pl.List(pl.String), "_bad_bytes": pl.Boolean},
        orient="row",
    )


def read_parquet(path: Path) -> Table:
    if path.is_dir():
        raise DataError("is a folder, not a file", file=str(path), fix="name one parquet file")
    try:
        frame = pl.read_parquet(read_bytes(path))
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        raise DataError(f"could not be parsed as parquet: {str(e).splitlines()[0]}", file=str(path)) from None
    names = frame.columns
    frame = frame.rename({name: f"#{j}" for j, name in enumerate(names)}).with_columns(
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("_number"),
        pl.lit(None, dtype=pl.String).alias("_problem"),
    )
    return Table(str(path), names, frame, "row")


def require_clean(table: Table, what: str = "the catalog") -> None:
    """A file read strictly: its first unreadable row is an error (skip_bad_rows is for interactions)."""
    bad = table.frame.filter(pl.col("_problem").is_not_null())
    if bad.height:
        raise DataError(
            f"{bad['_problem'][0]} (text {bad['_text'][0]!r})",
            file=table.file,
            row=bad["_number"][0],
            row_label=table.unit,
            fix=f"correct the line: {what} is read strictly (data.skip_bad_rows skips interaction rows only)",
        )


def catalog_columns(names: list[str], config: DataConfig, file: str, id_column: str = "item_id") -> list[str]:
    """The catalog columns a load reads besides the item id, in the file's order: the text columns
    (``data.text_columns``) and the attributes ``data.attribute_columns`` names, every column when it
    is None. ``names`` are the catalog's columns but ``id_column``; an attribute named there that the
    catalog lacks is a DataError naming the file, the column and the columns the catalog has."""
    chosen = config.attribute_columns
    if chosen is None:
        return list(names)
    missing = [c for c in chosen if c not in names]
    if missing:
        near = [n for n in names if n.lower() == missing[0].lower()]
        raise DataError(
            f"data.attribute_columns names {missing[0]!r}, which the catalog does not have "
            f"(its columns: {', '.join([id_column, *names])})",
            file=file,
            column=missing[0],
            fix=f"write it as {near[0]!r}: column names are exact"
            if near
            else "name only columns of the catalog in data.attribute_columns, or add the column to the catalog",
        )
    text = {c.lower() for c in config.text_columns}
    return [n for n in names if n in chosen or n.lower() in text]


def choose_columns(catalog: pl.DataFrame, config: DataConfig, file: str) -> pl.DataFrame:
    """A catalog frame (``item_id`` first) with only the columns a load reads (:func:`catalog_columns`)."""
    return catalog.select("item_id", *catalog_columns([c for c in catalog.columns if c != "item_id"], config, file))


def scalar_column(table: Table, name: str, column: str, what: str) -> pl.Expr:
    """``column`` as text; a parquet column of lists, structs or bytes is an error naming its type."""
    dtype = table.frame.schema[column]
    if dtype.is_nested() or dtype in (pl.Binary, pl.Object):
        raise DataError(
            f"holds {dtype} values where one {what} per row is expected",
            file=table.file,
            column=name,
            fix="write one value per row (a list of items becomes one row per item, e.g. polars .explode())",
        )
    return pl.col(column).cast(pl.String)


# ---------------------------------------------------------------------- interactions
def check_interactions(
    table: Table, columns: dict[str, str], config: DataConfig, report: LoadReport
) -> tuple[pl.DataFrame, float]:
    """(``user_id``, ``item_id``, ``timestamp`` in file order, plus ``event`` (String, null = none) and
    ``value`` (Float64, null = none) when the file has them; seconds per timestamp unit).

    Bad rows stop the load or are skipped (``data.skip_bad_rows``); a value that is not a finite
    number is a bad row. Exact duplicates follow ``data.duplicates``. Every row read is counted in
    ``report`` as kept, skipped or dropped."""
    check_options(config)
    where = _locate(table, columns)
    frame = table.frame.select(
        "_number",
        "_problem",
        *(["_text"] if "_text" in table.frame.columns else []),
        *(scalar_column(table, columns.get(n, n), where[n], "id").alias(n) for n in ("user_id", "item_id")),
        *(scalar_column(table, columns.get(n, n), where[n], "value").alias(n) for n in OPTIONAL if n in where),
        pl.col(where["timestamp"]).alias("timestamp"),
    )
    if frame.height == 0:
        raise DataError("the file has a header but no rows", file=table.file, fix="add one row per event")
    report.rows_read = frame.height
    times = parse_times(frame, table, config.time_format, columns.get("timestamp", "timestamp"))
    report.notes.append(times.note)
    frame = frame.with_columns(times.values.alias("_time"), times.problem.alias("_time_problem"))
    empty = {n: pl.col(n).is_null() | (pl.col(n).str.strip_chars() == "") for n in ("user_id", "item_id")}
    bad_value = pl.lit(False)
    if "value" in frame.columns:
        text = pl.col("value").str.strip_chars()
        number = text.cast(pl.Float64, strict=False)
        frame = frame.with_columns(pl.when(text != "").then(number).alias("_value"))
        bad_value = (text != "") & (number.is_null() | ~number.is_finite())
    frame = frame.with_columns(
        pl.when(pl.col("_problem").is_not_null())
        .then(pl.col("_problem"))
        .when(empty["user_id"])
        .then(pl.lit("empty user_id"))
        .when(empty["item_id"])
        .then(pl.lit("empty item_id"))
        .when(pl.col("_time_problem").is_not_null())
        .then(pl.col("_time_problem"))
        .when(bad_value)
        .then(pl.lit("value is not a finite number"))
        .alias("_reason"),
        pl.when(pl.col("_problem").is_not_null())
        .then(pl.lit(None, dtype=pl.String))
        .when(empty["user_id"])
        .then(pl.lit("user_id"))
        .when(empty["item_id"])
        .then(pl.lit("item_id"))
        .when(pl.col("_time_problem").is_not_null())
        .then(pl.lit("timestamp"))
        .otherwise(pl.lit("value"))
        .alias("_field"),
    )
    frame = drop_bad_rows(frame, table, config, report, columns)
    frame = handle_duplicates(frame, table, config, report, ["user_id", "item_id", "_time", *OPTIONAL])
    report.rows_kept = frame.height
    _note_padded_ids(frame, report)
    kept = [pl.when(pl.col("event").str.strip_chars() != "").then("event").alias("event")] * ("event" in where)
    kept += [pl.col("_value").alias("value")] * ("value" in where)
    return frame.select("user_id", "item_id", pl.col("_time").alias("timestamp"), *kept), times.scale


def check_options(config: DataConfig) -> None:
    if config.duplicates not in DUPLICATES:
        raise ConfigError(
            f"data.duplicates={config.duplicates!r} is not one of {', '.join(DUPLICATES)}",
            fix="--set data.duplicates=drop (the default), keep or error",
        )
    if not 0.0 <= config.max_skip_share <= 1.0:
        raise ConfigError(
            f"data.max_skip_share={config.max_skip_share} is not a share between 0 and 1",
            fix="e.g. --set data.max_skip_share=0.1 (stop if more than 10% of the rows are bad)",
        )


def _locate(table: Table, columns: dict[str, str]) -> dict[str, str]:
    """Our column name -> the table's column; a missing required column is an error with a hint."""
    unknown = [k for k in columns if k not in (*REQUIRED, *OPTIONAL)]
    if unknown:
        raise DataError(f"cannot map unknown column(s) {unknown}", fix=f"map only {', '.join((*REQUIRED, *OPTIONAL))}")
    where = {}
    for ours in (*REQUIRED, *OPTIONAL):
        theirs = columns.get(ours, ours)
        found = table.column(theirs)
        if found is not None:
            where[ours] = found
        elif ours in columns:
            raise DataError(
                f"column {theirs!r} (mapped to {ours}) is not in the file; it has {table.names}",
                file=table.file,
                column=theirs,
            )
        elif ours in REQUIRED:
            raise DataError(
                f"required column {ours!r} is missing; the file has {table.names}",
                file=table.file,
                column=ours,
                fix=_missing_column_fix(table, ours),
            )
    return where


def _missing_column_fix(table: Table, name: str) -> str:
    if len(table.names) == 1:
        for separator in (";", "\t", "|", ","):
            if name in (n.strip() for n in table.names[0].split(separator)):
                shown = "\\t" if separator == "\t" else separator
                kind = "tab" if separator == "\t" else repr(separator)
                return f"the file looks {kind}-separated: pass --set 'data.separator=\"{shown}\"'"
    return (
        f"the first line must name the columns ({', '.join(REQUIRED)}); "
        f"add a {name} column, or map yours with --map {name}=YOUR_COLUMN"
    )


def drop_bad_rows(
    frame: pl.DataFrame, table: Table, config: DataConfig, report: LoadReport, columns: dict[str, str]
) -> pl.DataFrame:
    """Stop at the first row with a ``_reason``, or skip every such row (``data.skip_bad_rows``).

    ``_field`` names the cell at fault (our name; ``columns`` maps it to the file's), null for the whole row."""
    bad = frame.filter(pl.col("_reason").is_not_null()).sort("_number")
    if bad.height == 0:
        return frame
    if not config.skip_bad_rows:
        first = bad.row(0, named=True)
        field = first["_field"]
        column = columns.get(field, field) if field is not None else None
        value = first[field] if field is not None else first.get("_text")
        also = f"; {bad.height - 1:,} more row(s) have problems" if bad.height > 1 else ""
        shown = f" ({'value' if field else 'text'} {value!r})" if value is not None else ""
        raise DataError(
            f"{first['_reason']}{shown}{also}",
            file=table.file,
            row=first["_number"],
            column=column,
            fix=_row_fix(first["_reason"], column, table.quoting),
            row_label=table.unit,
        )
    for number, reason, text in zip(bad["_number"], bad["_reason"], table.texts(bad), strict=True):
        report.skip(SkippedRow(table.file, table.unit, number, reason, text))
    check_skip_share(report, table.file, config.max_skip_share)
    frame = frame.filter(pl.col("_reason").is_null())
    if frame.height == 0:
        raise DataError("no valid rows are left", file=table.file, fix="see the reasons above; correct the file")
    return frame


def _row_fix(reason: str, column: str | None, quoting: bool) -> str:
    if " fields, expected " in reason:
        quote = ' (a value that holds the separator must be quoted: "a,b")' if quoting else ""
        return f"correct the line{quote}, or {SKIP_FIX}"
    if "not UTF-8" in reason:
        return f"save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or {SKIP_FIX}"
    if "the column's other timestamps are" in reason:
        return f"correct the value, name the file's format with --set 'data.time_format=\"...\"', or {SKIP_FIX}"
    if "data.time_format" in reason:
        return f"correct the value or data.time_format, or {SKIP_FIX}"
    return f"correct the {'value' if column else 'line'}, or {SKIP_FIX}"


def check_skip_share(report: LoadReport, file: str, max_share: float) -> None:
    share = report.rows_skipped / max(report.rows_read, 1)
    if share > max_share:
        reasons = "; ".join(f"{n:,} x {r}" for r, n in sorted(report.reasons.items(), key=lambda kv: -kv[1]))
        first = next(row for row in report.skipped if row.reason in report.reasons)
        raise DataError(
            f"{report.rows_skipped:,} of {report.rows_read:,} rows ({share:.1%}) are bad, more than "
            f"data.max_skip_share={max_share:g} allows: {reasons} (first at {first.unit} {first.number})",
            file=file,
            fix=f"correct the file, or allow it with --set data.max_skip_share={math.ceil(share * 100) / 100:g}",
        )
    report.notes.append(
        f"skipped {report.rows_skipped:,} of {report.rows_read:,} rows ({share:.1%}) of {file}; "
        "each is listed with its reason and text in skipped_rows.csv in the run folder"
    )


def handle_duplicates(
    frame: pl.DataFrame, table: Table, config: DataConfig, report: LoadReport, key: list[str]
) -> pl.DataFrame:
    """Rows equal to an earlier row on every ``key`` column present: dropped, kept or an error (``data.duplicates``)."""
    key = [k for k in key if k in frame.columns]
    repeated = frame.filter(pl.struct(key).is_duplicated())  # every copy, the first ones too
    if repeated.height == 0:
        return frame
    dups = (
        repeated.with_columns(pl.col("_number").first().over(key).alias("_first"))
        .filter(~pl.struct(key).is_first_distinct())
        .sort("_number")
    )
    shown = ", ".join("timestamp" if k == "_time" else k for k in key)
    pairs = ", ".join(f"{table.unit} {n} repeats {f}" for n, f in dups.select("_number", "_first").head(3).rows())
    pairs = pairs.replace(" repeats ", f" repeats {table.unit} ")
    pairs += ", ..." if dups.height > 3 else ""
    if config.duplicates == "error":
        raise DataError(
            f"{table.unit} {dups['_number'][0]} repeats {table.unit} {dups['_first'][0]} exactly "
            f"(same {shown}); {dups.height:,} row(s) repeat an earlier one",
            file=table.file,
            row=dups["_number"][0],
            row_label=table.unit,
            fix="remove the repeats, or --set data.duplicates=drop to drop them (they are listed) or =keep",
        )
    if config.duplicates == "keep":
        report.notes.append(
            f"{dups.height:,} row(s) of {table.file} repeat an earlier row exactly (same {shown}) and are kept "
            f"as separate events (data.duplicates=keep): {pairs}"
        )
        return frame
    for number, first, text in zip(dups["_number"], dups["_first"], table.texts(dups), strict=True):
        reason = f"exact duplicate of {table.unit} {first}"
        report.skipped.append(SkippedRow(table.file, table.unit, number, reason, text))
    report.duplicates_dropped = dups.height
    report.notes.append(
        f"dropped {dups.height:,} row(s) of {table.file} that repeat an earlier row exactly (same {shown}): "
        f"{pairs}; they are listed in skipped_rows.csv; keep them with --set data.duplicates=keep"
    )
    return frame.filter(~pl.col("_number").is_in(dups["_number"].implode()))


def _note_padded_ids(frame: pl.DataFrame, report: LoadReport) -> None:
    for name in ("user_id", "item_id"):
        padded = frame[name].filter(frame[name] != frame[name].str.strip_chars()).unique(maintain_order=True)
        if len(padded):
            report.notes.append(
                f"{len(padded):,} {name}(s) begin or end with spaces, e.g. {padded[0]!r}; "
                "ids are kept exactly as written, so 'a' and ' a' are different"
            )


# ---------------------------------------------------------------------- timestamps
ISO = (
    r"^(\d{4}-\d{2}-\d{2})"  # date
    r"(?:[T ](\d{2}:\d{2})(:\d{2}(?:[.,]\d{1,9})?)?"  # time: hours and minutes; seconds and fraction
    r"(Z|[+-]\d{2}(?::?\d{2})?)?)?$"  # UTC offset
)
# Epoch units by size: seconds reach 1e11 only in the year 5138, milliseconds 1e14 in 5138, ...
UNITS = [("seconds", 1.0), ("milliseconds", 1e-3), ("microseconds", 1e-6), ("nanoseconds", 1e-9)]
UNIT_EDGES = (1e11, 1e14, 1e17)
DATE_LIKE = 1e8  # smaller numbers (before 1973 in seconds) may be positions: they say nothing of the unit


@dataclass
class Times:
    values: pl.Series  # Int64 (compared exactly) or Float64; null where the row is bad
    problem: pl.Series  # String: why the row's timestamp is bad, or null
    scale: float  # seconds per unit of ``values``
    note: str  # "timestamps in FILE: ..." for the load report


def parse_times(frame: pl.DataFrame, table: Table, time_format: str, name: str) -> Times:
    """Read ``frame["timestamp"]`` in one format; a row that does not fit it is a bad row, never a guess.

    The format is the parquet column's type, ``data.time_format``, or whichever of epoch numbers
    and ISO-8601 most rows hold (a tie, or most rows holding neither, is an error)."""
    raw = frame["timestamp"]
    t = frame.select("_number", "timestamp", usable=pl.col("_problem").is_null())
    said = f"timestamps in {table.file}:"
    if raw.dtype in (pl.Datetime, pl.Date):
        zone = getattr(raw.dtype, "time_zone", None)
        values = raw.cast(pl.Datetime("us", zone)).dt.epoch("us")
        kind = "date" if raw.dtype == pl.Date else "date/time"
        return Times(
            values,
            _reasons(t.height, (values.is_null(), "empty timestamp")),
            1e-6,
            f"{said} a parquet {kind} column " + (f"in {zone}" if zone else "without time zone (read as UTC)"),
        )
    if raw.dtype.is_numeric():
        t = t.with_columns(
            number=raw.cast(pl.Float64),
            integer=raw.cast(pl.Int64, strict=False) if raw.dtype.is_integer() else pl.lit(None, pl.Int64),
        )
        return _epoch(t.with_columns(problem=_reasons(t.height, (raw.is_null(), "empty timestamp"))), table, name)
    if raw.dtype not in (pl.String, pl.Categorical, pl.Enum, pl.Null):
        raise DataError(
            f"holds {raw.dtype} values, not times",
            file=table.file,
            column=name,
            fix="write epoch numbers, ISO-8601 date/times or parquet timestamps",
        )
    text = raw.cast(pl.String).str.strip_chars()
    t = t.with_columns(text=text, empty=text.is_null() | (text == ""))
    if time_format:
        return _formatted(t, time_format, table)
    t = t.with_columns(number=text.cast(pl.Float64, strict=False))
    t = t.with_columns(
        iso=pl.when(pl.col("number").is_null()).then(text).str.extract_groups(ISO),
        is_number=pl.col("number").is_not_null(),
        counted=pl.col("usable") & ~pl.col("empty"),
    ).with_columns(is_iso=pl.col("iso").struct.field("1").is_not_null())
    n_number, n_iso, n_counted = (int((t[c] & t["counted"]).sum()) for c in ("is_number", "is_iso", "counted"))
    n_other = n_counted - n_number - n_iso
    if n_other and n_other >= max(n_number, n_iso):
        first = t.filter("counted", ~pl.col("is_number"), ~pl.col("is_iso")).row(0, named=True)
        raise DataError(
            f"timestamp {first['timestamp']!r} is neither an epoch number nor an ISO-8601 date/time "
            "(like 2020-12-31 or 2020-12-31T23:59:00Z), so reading it would be a guess",
            file=table.file,
            row=first["_number"],
            column=name,
            fix=_format_hint(first["text"]),
            row_label=table.unit,
        )
    if n_number and n_number == n_iso:
        a, b = (t.filter("counted", c).row(0, named=True) for c in ("is_number", "is_iso"))
        raise DataError(
            f"the timestamps mix epoch numbers ({table.unit} {a['_number']}: {a['text']!r}) and as many ISO-8601 "
            f"date/times ({table.unit} {b['_number']}: {b['text']!r})",
            file=table.file,
            column=name,
            fix="write every timestamp in one format",
        )
    if n_number > n_iso or not n_iso:
        t = t.with_columns(
            integer=pl.col("text").str.to_integer(strict=False),
            problem=_reasons(
                t.height,
                (t["empty"], "empty timestamp"),
                (~t["is_number"], "timestamp is not an epoch number (the column's other timestamps are)"),
            ),
        )
        return _epoch(t, table, name)
    return _iso(t, table)


def _reasons(n: int, *checks: tuple[pl.Series, str]) -> pl.Series:
    """Per row, the reason of the first check that holds (null where none does)."""
    out = pl.repeat(None, n, dtype=pl.String, eager=True)
    for check, reason in reversed(checks):
        out = pl.repeat(reason, n, dtype=pl.String, eager=True).zip_with(check.fill_null(False), out)
    return out


def _epoch(t: pl.DataFrame, table: Table, name: str) -> Times:
    """Numbers as epoch times: their size gives the unit, and one column holds one unit.

    ``t`` has ``number`` (Float64), ``integer`` (Int64 where the number is a whole one) and ``problem``."""
    t = t.with_columns(
        problem=pl.when(pl.col("problem").is_null() & ~pl.col("number").is_finite())
        .then(pl.lit("timestamp is not a finite number"))
        .otherwise("problem")
    )
    t = t.with_columns(ok=pl.col("problem").is_null() & pl.col("usable"))
    size = pl.col("number").abs()
    t = t.with_columns(
        unit=pl.sum_horizontal(*(size >= edge for edge in UNIT_EDGES)), dated=pl.col("ok") & (size >= DATE_LIKE)
    )
    units = t.filter("dated")["unit"].unique().sort().to_list()
    if len(units) > 1:
        a, b = (t.filter("dated", pl.col("unit") == u).row(0, named=True) for u in units[:2])
        raise DataError(
            f"the timestamps mix units: {table.unit} {a['_number']} ({a['timestamp']!r}) looks like epoch "
            f"{UNITS[units[0]][0]}, {table.unit} {b['_number']} ({b['timestamp']!r}) like epoch {UNITS[units[1]][0]}",
            file=table.file,
            column=name,
            fix="write every timestamp in the same unit",
        )
    exact = t.filter("ok")["integer"].null_count() == 0
    values = t.select(pl.when("ok").then("integer" if exact else "number")).to_series()
    said = f"timestamps in {table.file}:"
    if units:
        unit, scale = UNITS[units[0]]
        note = f"{said} epoch {unit}" + ("" if scale == 1.0 else " (stored as seconds)")
    else:
        largest = t.filter("ok")["number"].abs().max()
        scale = 1.0
        note = f"{said} none readable"
        if largest is not None:
            note = f"{said} plain numbers, used for order (all within ±{largest:g}: too small for epochs after 1973)"
    return Times(values, t["problem"], scale, note)


def _iso(t: pl.DataFrame, table: Table) -> Times:
    part = pl.col("iso").struct.field
    offset = part("4").str.replace(":", "", literal=True)
    offset = (
        pl.when(part("4").is_null() | (part("4") == "Z"))
        .then(pl.lit("+0000"))
        .otherwise(pl.when(offset.str.len_chars() == 3).then(offset + "00").otherwise(offset))
    )
    full = pl.concat_str(
        part("1"),
        pl.lit("T"),
        part("2").fill_null("00:00"),
        part("3").str.replace(",", ".", literal=True).fill_null(":00"),
        offset,
    )
    t = t.with_columns(value=full.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us"))
    t = t.with_columns(value=pl.col("value").dt.epoch("us"))
    problem = _reasons(
        t.height,
        (t["empty"], "empty timestamp"),
        (~t["is_iso"], "timestamp is not an ISO-8601 date/time (the column's other timestamps are)"),
        (t["value"].is_null(), "timestamp is not a real date/time (e.g. a 13th month or February 30)"),
    )
    kept = t.filter(pl.col("usable") & problem.is_null())
    with_offset = int(kept.select(part("4").is_not_null().sum()).item())
    if with_offset == kept.height:
        zones = "with UTC offsets"
    elif with_offset == 0:
        zones = "without UTC offset (read as UTC)"
    else:
        zones = f"{with_offset:,} with a UTC offset, {kept.height - with_offset:,} without (those read as UTC)"
    return Times(t["value"], problem, 1e-6, f"timestamps in {table.file}: ISO-8601 date/times, {zones}")


def _formatted(t: pl.DataFrame, time_format: str, table: Table) -> Times:
    try:
        parsed = t["text"].str.to_datetime(time_format, strict=False, time_unit="us")
    except pl.exceptions.PolarsError as e:
        raise ConfigError(
            f"data.time_format={time_format!r} cannot be used: {str(e).splitlines()[0]}",
            fix="""use strftime codes, e.g. --set 'data.time_format="%m/%d/%Y"'""",
        ) from None
    values = parsed.dt.epoch("us")
    problem = _reasons(
        t.height,
        (t["empty"], "empty timestamp"),
        (values.is_null(), f"timestamp does not match data.time_format {time_format!r}"),
    )
    return Times(values, problem, 1e-6, f"timestamps in {table.file}: {time_format!r} (data.time_format)")


def _format_hint(value: str) -> str:
    """How to name the format of ``value`` (quoted: YAML reads a bare % as a directive)."""
    numeric_date = re.fullmatch(r"\d{1,2}([/.-])\d{1,2}\1\d{4}", value)
    if numeric_date:
        s = numeric_date.group(1)
        return (
            f"name the format (strftime codes): --set 'data.time_format=\"%m{s}%d{s}%Y\"' if 12{s}31{s}2020 is "
            f'how the file writes December 31 (month first), or "%d{s}%m{s}%Y" if it writes 31{s}12{s}2020'
        )
    return "name the format (strftime codes), e.g. --set 'data.time_format=\"%m/%d/%Y %H:%M\"' for 12/31/2020 23:59"
