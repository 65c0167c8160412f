"""Random loader inputs and the property every loader keeps (used by test_fuzz_loaders.py and bench/fuzz_loaders.py).

Inputs are valid rows mixed with corrupted cells, ragged rows, exact duplicates, repeated
users, odd bytes and blank lines, in every format. The property: a load either succeeds, and
then every row read is kept, skipped or dropped as a duplicate (each counted, the skipped and
dropped ones listed) and each user's events follow their timestamps with ties in file order;
or it stops with a DataError that names the file and a row or a column. Nothing else.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import strategies as st

from recscope.config import DataConfig
from recscope.data import Dataset, load_dataset
from recscope.data.synthetic import ShopConfig
from recscope.errors import DataError

USERS = ["u1", "u2", " u3", "[bold]u4", "u5[/]", "007"]
JUNK = [
    "", " ", "nan", "inf", "-inf", "1e400", "x", "2020-02-30", "2020-13-01", "a\x00b", "é", '"', '"a', ",", ";",
    "01/02/2020", "99999999999999999999999", "-5", "0", "1.5", "\t", "2020-01-01T00:00:00+25:00", "1577836800000",
]  # fmt: skip
ODD_LINES = [b"\xff\xfe,\xfd,1", b"\x00\x00\x00", b"caf\xe9,i0,1", b"   ", b"", b"\xef\xbb\xbf", b'"', b"\r"]
# Timestamps by family: k (a small integer, so ties happen) -> text
TIMES: dict[str, Callable[[int], str]] = {
    "plain": str,
    "seconds": lambda k: str(1_577_836_800 + 60 * k),
    "milliseconds": lambda k: str((1_577_836_800 + 60 * k) * 1000),
    "float": lambda k: f"{1_577_836_800 + 60 * k + 0.25}",
    "iso_date": lambda k: (date(2020, 1, 1) + timedelta(days=k)).isoformat(),
    "iso_time": lambda k: (datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=7 * k)).isoformat(),
    "iso_offset": lambda k: f"2020-01-01T{k % 24:02d}:00:00+0{k % 3}:00",
    "us": lambda k: (date(2020, 1, 1) + timedelta(days=k)).strftime("%m/%d/%Y"),
}
FILE_LEVEL = (  # problems of a whole file, not of one row or column
    "the file is empty",
    "header but no rows",
    "is UTF-16",
    "no valid rows",
    "max_skip_share",
    "holds no interactions",
)

configs = st.builds(  # leaning to configs under which junk is skipped, so that many cases load
    DataConfig,
    skip_bad_rows=st.sampled_from([True, True, False]),
    max_skip_share=st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.0]),
    duplicates=st.sampled_from(["drop", "keep", "error"]),
    time_format=st.sampled_from(["", "", "", "%m/%d/%Y"]),
)


@st.composite
def csv_rows(draw, header: bool = True, separator: str = ",", rating: bool = False) -> bytes:
    """A csv file: a header, then valid rows (item i<n> for row n), junk cells, ragged, duplicate and odd lines.

    ``rating``: movielens u.data (no header, a rating before the timestamp)."""
    times = TIMES[draw(st.sampled_from(sorted(TIMES)))]
    lines: list[bytes] = [separator.join(["user_id", "item_id", "timestamp"]).encode()] if header else []
    for n in range(draw(st.integers(0, 14))):
        cells = [draw(st.sampled_from(USERS)), f"i{n}", times(draw(st.integers(0, 5)))]
        if rating:
            cells.insert(2, str(draw(st.integers(1, 5))))
        kind = draw(st.sampled_from(["valid"] * 6 + ["junk", "ragged", "duplicate", "odd", "quoted"]))
        if kind == "junk":
            cells[draw(st.integers(0, len(cells) - 1))] = draw(st.sampled_from(JUNK))
        elif kind == "ragged":
            cells = cells[:-1] if draw(st.booleans()) else [*cells, draw(st.sampled_from(JUNK))]
        elif kind == "quoted":
            cells = [f'"{c}"' for c in cells]
        if kind == "duplicate" and len(lines) > header:
            lines.append(draw(st.sampled_from(lines[int(header) :])))
        elif kind == "odd":
            lines.append(draw(st.sampled_from(ODD_LINES)))
        else:
            lines.append(separator.join(cells).encode())
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    return end.join(lines) + (end if draw(st.booleans()) else b"")


@st.composite
def parquet_frames(draw) -> pl.DataFrame:
    n = draw(st.integers(0, 10))
    users = [draw(st.sampled_from([*USERS, None])) for _ in range(n)]
    items = [f"i{k}" if draw(st.integers(0, 9)) else None for k in range(n)]
    kind = draw(st.sampled_from(["int", "float", "text", "datetime", "list"]))
    ks = [draw(st.integers(0, 5)) for _ in range(n)]
    if kind == "int":
        times = pl.Series([1_577_836_800 + k if draw(st.integers(0, 9)) else None for k in ks], dtype=pl.Int64)
    elif kind == "float":
        times = pl.Series([draw(st.sampled_from([float(k), float("nan"), float("inf"), 1e300])) for k in ks])
    elif kind == "text":
        family = TIMES[draw(st.sampled_from(sorted(TIMES)))]
        times = pl.Series([family(k) if draw(st.integers(0, 5)) else draw(st.sampled_from(JUNK)) for k in ks])
    else:
        times = pl.Series([datetime(2020, 1, 1) + timedelta(hours=k) for k in ks], dtype=pl.Datetime("us"))
    frame = pl.DataFrame({"user_id": pl.Series(users, dtype=pl.String), "item_id": items, "timestamp": times})
    if kind == "list":
        frame = frame.with_columns(pl.concat_list("item_id"))
    repeats = draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=3)) if n else []
    return pl.concat([frame, frame[repeats]]) if repeats else frame


@st.composite
def s3rec_lines(draw) -> bytes:
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["valid"] * 5 + ["junk", "repeat", "odd", "user only"]))
        tokens = [draw(st.sampled_from(USERS)).strip() or "u"]
        tokens += [str(draw(st.integers(1, 9))) for _ in range(draw(st.integers(1, 5)))]
        if kind == "junk":
            tokens[draw(st.integers(1, len(tokens) - 1))] = draw(
                st.sampled_from(["0", "00", "x", "-1", "\u0661", "1.5"])
            )
        if kind == "repeat" and lines:
            lines.append(draw(st.sampled_from(lines)))
        elif kind == "odd":
            lines.append(draw(st.sampled_from(ODD_LINES)))
        else:
            lines.append(" ".join(tokens[:1] if kind == "user only" else tokens).encode())
    return b"\n".join(lines) + b"\n"


catalogs = st.lists(
    st.tuples(
        st.sampled_from(["i0", "i1", "i2", "c9", "", " ", "i1"]), st.sampled_from(["A", "B|C", "1.5", "", "x,y"])
    ),
    max_size=6,
)


def _small_shop(parts: list[tuple[str, str]]) -> str:
    """A spec of the drawn options, small unless they say otherwise (the default shop takes seconds)."""
    keys = [k for k, _ in parts]
    parts = [*parts, *(() if "users" in keys else [("users", "5")]), *(() if "items" in keys else [("items", "30")])]
    return "synthetic:" + ",".join(f"{k}={v}" for k, v in parts)


synthetic_specs = st.lists(
    st.tuples(
        st.sampled_from([f.name for f in ShopConfig.__dataclass_fields__.values()] + ["foo", ""]),
        st.sampled_from(["-1", "0", "1", "2", "5", "abc", "1e3", "nan", "0.5", "1.5", "", "="]),
    ),
    max_size=3,
).map(_small_shop)


# ---------------------------------------------------------------------- the property
def check(load: Callable[[], Dataset], file: str | None) -> str:
    """Run one load; "loaded" or "error" if it kept the property, else an AssertionError.

    ``file``: what a DataError must name (a path it starts with), None for data made from a spec."""
    try:
        data = load()
    except DataError as e:
        if file is not None:
            assert e.file is not None and e.file.startswith(file), f"the error names no file of the case: {e}"
            assert e.row is not None or e.column is not None or any(f in e.problem for f in FILE_LEVEL), (
                f"the error names no row or column: {e}"
            )
        return "error"
    report = data.report
    assert report.rows_read == report.rows_kept + report.rows_skipped + report.duplicates_dropped, report
    assert len(report.skipped) == report.rows_skipped + report.duplicates_dropped, report
    assert sum(report.reasons.values()) == report.rows_skipped, report
    assert np.all(np.isfinite(data.timestamps))
    for u in range(data.n_users):
        start, end = data.offsets[u], data.offsets[u + 1]
        times = data.timestamps[start:end]
        assert np.all(np.diff(times) >= 0), f"user {data.user_ids[u]!r}: events out of time order {times}"
        rows = np.array([_row_of(data.item_ids[i]) for i in data.items[start:end]])
        for t in np.unique(times):  # within a tie, the rows we can tell apart keep file order
            tied = [r for r in rows[times == t] if r >= 0]
            once = [r for r in tied if tied.count(r) == 1]  # a kept duplicate repeats its row
            assert once == sorted(once), f"user {data.user_ids[u]!r}: a tie at {t} left file order: {tied}"
    return "loaded"


def _row_of(item: str) -> int:
    """Generated items are i<row>: the row they were written in (-1 for an item from junk)."""
    match = re.fullmatch(r"i(\d+)", item)
    return int(match.group(1)) if match else -1


def run_case(kind: str, case, config: DataConfig) -> str:
    """Write ``case`` (drawn from the strategy for ``kind``) to a fresh folder and check its load."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if kind == "csv":
            path = root / "events.csv"
            path.write_bytes(case)
            return check(lambda: load_dataset(f"csv:{path}", config=config), str(path))
        if kind == "parquet":
            path = root / "events.parquet"
            case.write_parquet(path)
            return check(lambda: load_dataset(f"parquet:{path}", config=config), str(path))
        if kind == "s3rec":
            path = root / "Shop.txt"
            path.write_bytes(case)
            return check(lambda: load_dataset(f"s3rec:{path}", config=config), str(path))
        if kind == "movielens":
            (root / "u.genre").write_text("unknown|0\nAction|1\n")
            (root / "u.item").write_text("i1|A (1995)|01-Jan-1995||u|0|1\ni2|B|||u|1|0\n")
            (root / "u.data").write_bytes(case)
            return check(lambda: load_dataset(f"movielens:{root}", config=config), str(root))
        if kind == "catalog":
            events = root / "events.csv"
            events.write_text("user_id,item_id,timestamp\nu1,i0,1\nu1,i1,2\nu2,i2,3\n")
            catalog = root / "catalog.csv"
            catalog.write_text("item_id,tags\n" + "".join(f"{i},{t}\n" for i, t in case))
            return check(lambda: load_dataset(f"csv:{events}", catalog=catalog, config=config), tmp)
        if kind == "synthetic":
            return check(lambda: load_dataset(case, config=config), None)
    raise ValueError(kind)


STRATEGIES = {
    "csv": csv_rows(),
    "parquet": parquet_frames(),
    "s3rec": s3rec_lines(),
    "movielens": csv_rows(header=False, separator="\t", rating=True),
    "catalog": catalogs,
    "synthetic": synthetic_specs,
}
