"""What recscope does with bad input: each case loads (and says what it did) or stops with a located DataError.

Nothing a user gave us is lost or silently dropped: every row read is kept, skipped or dropped as
a duplicate, each counted, and the skipped and dropped ones are listed with their text.
"""

import csv
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recscope.config import DataConfig
from recscope.data import Dataset, load_dataset
from recscope.errors import ConfigError, DataError

HEADER = "user_id,item_id,timestamp\n"
SKIP_FIX = "--set data.skip_bad_rows=true"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def events(tmp_path: Path, rows: str, name: str = "events.csv") -> Path:
    return write(tmp_path / name, HEADER + rows)


def sequence(data: Dataset, user: str) -> list[str]:
    return [data.item_ids[i] for i in data.sequence(data.user_index(user))]


def fails(spec: str, **kwargs) -> DataError:
    with pytest.raises(DataError) as e:
        load_dataset(spec, **kwargs)
    return e.value


def located(err: DataError, file: Path, row: int | None = None, column: str | None = None) -> str:
    """The message, after checking it names the file (and the row and column when given)."""
    message = str(err)
    assert err.file == str(file) and message.startswith(str(file)), message
    if row is not None:
        assert err.row == row, message
    if column is not None:
        assert err.column == column and f"column {column!r}" in message, message
    return message


def accounted(data: Dataset) -> None:
    r = data.report
    assert r.rows_read == r.rows_kept + r.rows_skipped + r.duplicates_dropped
    assert len(r.skipped) == r.rows_skipped + r.duplicates_dropped


# ---------------------------------------------------------------------- 1. dates
US = "u,late,12/31/2019\nu,early,01/02/2020\nu,mid,01/01/2020\n"


def test_us_dates_are_not_guessed(tmp_path):
    path = events(tmp_path, US)
    message = located(fails(f"csv:{path}"), path, 2, "timestamp")
    assert "'12/31/2019' is neither an epoch number nor an ISO-8601 date/time" in message
    assert """--set 'data.time_format="%m/%d/%Y"'""" in message and '"%d/%m/%Y"' in message


def test_time_format_reads_us_dates_in_order_and_says_so(tmp_path):
    path = events(tmp_path, US)
    data = load_dataset(f"csv:{path}", config=DataConfig(time_format="%m/%d/%Y"))
    assert sequence(data, "u") == ["late", "mid", "early"]
    assert f"timestamps in {path}: '%m/%d/%Y' (data.time_format)" in data.report.notes


def test_a_value_that_does_not_match_time_format_is_located_or_skipped(tmp_path):
    path = events(tmp_path, US + "u,odd,2020-01-05\n")
    config = DataConfig(time_format="%m/%d/%Y")
    message = located(fails(f"csv:{path}", config=config), path, 5, "timestamp")
    assert "does not match data.time_format '%m/%d/%Y' (value '2020-01-05')" in message
    skipping = DataConfig(time_format="%m/%d/%Y", skip_bad_rows=True, max_skip_share=0.5)
    data = load_dataset(f"csv:{path}", config=skipping)
    assert data.report.reasons == {"timestamp does not match data.time_format '%m/%d/%Y'": 1}
    assert [(r.number, r.text) for r in data.report.skipped] == [(5, "u,odd,2020-01-05")]


@pytest.mark.parametrize(
    ("rows", "order", "note"),
    [
        ("u,b,1577836900\nu,a,1577836800\n", ["a", "b"], "epoch seconds"),
        ("u,b,1577836900000\nu,a,1577836800000\n", ["a", "b"], "epoch milliseconds (stored as seconds)"),
        ("u,b,3\nu,a,-2\n", ["a", "b"], "plain numbers, used for order"),
        (
            "u,b,2020-01-01T10:00:00Z\nu,a,2020-01-01T11:00:00+02:00\n",
            ["a", "b"],
            "ISO-8601 date/times, with UTC offsets",
        ),
        ("u,b,2020-01-02\nu,a,2020-01-01 23:59:59.5\n", ["a", "b"], "ISO-8601 date/times, without UTC offset"),
        ("u,a,5\nu,b,5\nu,c,4\n", ["c", "a", "b"], "plain numbers"),  # ties keep file order
    ],
)
def test_every_load_says_which_time_format_it_used(tmp_path, rows, order, note):
    path = events(tmp_path, rows)
    data = load_dataset(f"csv:{path}")
    assert sequence(data, "u") == order
    assert any(n.startswith(f"timestamps in {path}: {note}") for n in data.report.notes), data.report.notes


def test_milliseconds_become_seconds_and_mixed_units_stop(tmp_path):
    path = events(tmp_path, "u,a,1577836800000\n")
    assert load_dataset(f"csv:{path}").timestamps.tolist() == [1577836800.0]
    path = events(tmp_path, "u,a,1577836800\nu,b,1577836800000\n")
    message = located(fails(f"csv:{path}"), path, column="timestamp")
    assert "line 2 ('1577836800') looks like epoch seconds, line 3 ('1577836800000') like epoch milliseconds" in message


def test_parquet_datetimes_are_used_as_they_are(tmp_path):
    path = tmp_path / "events.parquet"
    when = [datetime(2021, 5, 2, tzinfo=UTC), datetime(2021, 5, 1, tzinfo=UTC)]
    pl.DataFrame({"user_id": ["u", "u"], "item_id": ["b", "a"], "timestamp": when}).write_parquet(path)
    data = load_dataset(f"parquet:{path}")
    assert sequence(data, "u") == ["a", "b"] and data.timestamps[0] == when[1].timestamp()
    assert f"timestamps in {path}: a parquet date/time column in UTC" in data.report.notes


# ---------------------------------------------------------------------- 2. duplicates
DUPS = "u,a,1\nu,a,1\nu,b,2\nv,a,1\nu,a,1\n"


def test_exact_duplicates_are_dropped_reported_and_listed(tmp_path):
    path = events(tmp_path, DUPS)
    data = load_dataset(f"csv:{path}")
    assert sequence(data, "u") == ["a", "b"] and sequence(data, "v") == ["a"]
    report = data.report
    assert (report.rows_read, report.rows_kept, report.duplicates_dropped, report.rows_skipped) == (5, 3, 2, 0)
    assert any("dropped 2 row(s)" in n and "line 3 repeats line 2, line 6 repeats line 2" in n for n in report.notes)
    assert [(r.number, r.reason) for r in report.skipped] == [
        (3, "exact duplicate of line 2"),
        (6, "exact duplicate of line 2"),
    ]
    accounted(data)


def test_duplicates_keep_and_error(tmp_path):
    path = events(tmp_path, DUPS)
    kept = load_dataset(f"csv:{path}", config=DataConfig(duplicates="keep"))
    assert sequence(kept, "u") == ["a", "a", "a", "b"] and kept.report.duplicates_dropped == 0
    assert any("kept as separate events (data.duplicates=keep)" in n for n in kept.report.notes)
    message = located(fails(f"csv:{path}", config=DataConfig(duplicates="error")), path, 3)
    assert "line 3 repeats line 2 exactly (same user_id, item_id, timestamp); 2 row(s)" in message
    with pytest.raises(ConfigError, match="data.duplicates='maybe'"):
        load_dataset(f"csv:{path}", config=DataConfig(duplicates="maybe"))


def test_rows_that_differ_in_event_or_value_are_not_duplicates(tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,timestamp,event\nu,a,1,view\nu,a,1,buy\nu,a,1,buy\n")
    data = load_dataset(f"csv:{path}")
    assert data.n_events == 2 and data.report.duplicates_dropped == 1


# ---------------------------------------------------------------------- 3. catalog items nobody bought
def test_catalog_items_never_seen_are_kept_and_reported(tmp_path):
    path = events(tmp_path, "u,a,1\nu,b,2\n")
    catalog = write(tmp_path / "catalog.csv", "item_id,title\na,A\nb,B\nc,C\nd,D\n")
    data = load_dataset(f"csv:{path}", catalog=catalog)
    assert data.item_ids == ["", "a", "b", "c", "d"], "unbought items stay recommendable"
    assert "2 catalog item(s) never appear in the interactions (e.g. 'c', 'd')" in " ".join(data.report.notes)


# ---------------------------------------------------------------------- 4. skipped rows
MOSTLY_BAD = "u,a,1\nu,b,x\n,c,3\nu,d,4,extra\nu,e,5\nu,,6\n"


def test_skipping_more_than_max_skip_share_stops_and_says_how_to_allow_it(tmp_path):
    path = events(tmp_path, MOSTLY_BAD)
    message = located(fails(f"csv:{path}", config=DataConfig(skip_bad_rows=True)), path)
    assert "4 of 6 rows (66.7%) are bad, more than data.max_skip_share=0.1 allows" in message
    assert "1 x empty user_id" in message and "(first at line 3)" in message
    assert "--set data.max_skip_share=0.67" in message


def test_skipped_rows_are_counted_by_reason_and_saved_with_their_text(tmp_path):
    path = events(tmp_path, MOSTLY_BAD)
    data = load_dataset(f"csv:{path}", config=DataConfig(skip_bad_rows=True, max_skip_share=0.7))
    report = data.report
    assert (report.rows_read, report.rows_kept, report.rows_skipped) == (6, 2, 4)
    assert report.reasons == {
        "timestamp is not an epoch number (the column's other timestamps are)": 1,
        "empty user_id": 1,
        "4 fields, expected 3 (as many as the header: user_id,item_id,timestamp)": 1,
        "empty item_id": 1,
    }
    assert report.examples[0] == f"{path}, line 3: timestamp is not an epoch number (the column's other timestamps are)"
    assert any(f"skipped 4 of 6 rows (66.7%) of {path}" in n for n in report.notes)
    data.save(tmp_path / "run")
    with (tmp_path / "run" / "skipped_rows.csv").open(newline="") as fh:
        saved = list(csv.DictReader(fh))
    assert [(r["number"], r["text"]) for r in saved] == [
        ("3", "u,b,x"),
        ("4", ",c,3"),
        ("5", "u,d,4,extra"),
        ("7", "u,,6"),
    ]
    assert Dataset.load(tmp_path / "run").report == report
    accounted(data)


# ---------------------------------------------------------------------- 5. parquet lists where one value belongs
@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_parquet_list_column_in_interactions(tmp_path, column):
    path = tmp_path / "events.parquet"
    frame = {"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]}
    frame[column] = [["x"], ["y", "z"]]
    pl.DataFrame(frame).write_parquet(path)
    message = located(fails(f"parquet:{path}"), path, column=column)
    assert "holds List(String) values where one id per row is expected" in message and "\n" not in message


@pytest.mark.parametrize(
    ("values", "kind"),
    [([["x"], ["y"]], None), ([[["x"]], [["y"]]], "List(List(String))"), ([{"k": 1}, {"k": 2}], "Struct")],
)
def test_parquet_catalog_lists(tmp_path, values, kind):
    path = events(tmp_path, "u,a,1\n")
    catalog = tmp_path / "catalog.parquet"
    pl.DataFrame({"item_id": ["a", "b"], "tags": values}).write_parquet(catalog)
    if kind is None:  # a list of values is a multi-valued attribute
        data = load_dataset(f"csv:{path}", catalog=catalog)
        assert next(f for f in data.fields if f.name == "tags").labels(1) == ["x"]
        return
    message = located(fails(f"csv:{path}", catalog=catalog), catalog, column="tags")
    assert f"holds {kind}" in message


def test_parquet_catalog_item_id_list(tmp_path):
    path = events(tmp_path, "u,a,1\n")
    catalog = tmp_path / "catalog.parquet"
    pl.DataFrame({"item_id": [["a"], ["b"]]}).write_parquet(catalog)
    assert "holds List(String) values" in located(fails(f"csv:{path}", catalog=catalog), catalog, column="item_id")


# ---------------------------------------------------------------------- 6. ragged csv
@pytest.mark.parametrize(("row", "count"), [("u,b,2,9", 4), ("u,b", 2)])
def test_ragged_row_names_its_line_and_our_option(tmp_path, row, count):
    path = events(tmp_path, f"u,a,1\n{row}\nu,c,3\n")
    message = located(fails(f"csv:{path}"), path, 3)
    assert f"{count} fields, expected 3" in message and SKIP_FIX in message
    assert "truncate_ragged_lines" not in message


def test_quoted_values_keep_their_separators_and_line_numbers(tmp_path):
    path = events(tmp_path, 'u,"a,1",1\nu,"multi\nline",2\nu,b,3,x\n')
    located(fails(f"csv:{path}"), path, 5)  # the row after a two-line value is on line 5
    path = events(tmp_path, 'u,"a,1",1\nu,"multi\nline",2\n')
    assert sequence(load_dataset(f"csv:{path}"), "u") == ["a,1", "multi\nline"]


# ---------------------------------------------------------------------- 7. everything else
@pytest.mark.parametrize(
    ("content", "row", "column", "says"),
    [
        (b"", None, None, "the file is empty"),
        (b"\n \n", None, None, "the file is empty"),
        (HEADER.encode(), None, None, "header but no rows"),
        (b"user_id,item_id\nu,a\n", None, "timestamp", "required column 'timestamp' is missing"),
        (
            b"user_id;item_id;timestamp\nu;a;1\n",
            None,
            "user_id",
            """looks ';'-separated: pass --set 'data.separator=";"'""",
        ),
        (b"u1,i1,1\nu2,i2,2\n", None, "user_id", "the first line must name the columns"),
        (b"user_id,item_id,timestamp,item_id\nu,a,1,b\n", None, "item_id", "names column 'item_id' 2 times"),
        (HEADER.encode() + b"u,caf\xe9,1\n", 2, None, "bytes that are not UTF-8 text (text 'u,caf\\\\xe9,1')"),
        (b"user_id,item_id,timestamp,caf\xe9\nu,a,1,x\n", 1, None, "the header line is not UTF-8 text"),
        ("user_id,item_id,timestamp\nu,a,1\n".encode("utf-16"), None, None, "is UTF-16 text"),
        (HEADER.encode() + b"u,a\x00b,1\n", 2, None, "a NUL byte"),
        (HEADER.encode() + b"u,a,1\nu,b,nan\n", 3, "timestamp", "not a finite number"),
        (HEADER.encode() + b"u,a,1\nu,b,inf\n", 3, "timestamp", "not a finite number"),
        (HEADER.encode() + b"u,a,1\nu,b,\n", 3, "timestamp", "empty timestamp"),
        (HEADER.encode() + b"u,a,2020-02-30\nu,b,2020-01-01\n", 2, "timestamp", "not a real date/time"),
        (HEADER.encode() + b'u,"a,1\nu,b,2\n', 2, None, "a quoted value is not closed"),
        (HEADER.encode() + b"u,a,1\nu,b,2020-01-01\n", None, "timestamp", "mix epoch numbers"),
    ],
)
def test_bad_csv_stops_with_a_located_error(tmp_path, content, row, column, says):
    path = write(tmp_path / "events.csv", content)
    message = located(fails(f"csv:{path}"), path, row, column)
    assert says in message and "how to fix" in message


@pytest.mark.parametrize(
    ("content", "users", "order"),
    [
        (b"\xef\xbb\xbf" + HEADER.encode() + b"u,a,1\n", ["u"], ["a"]),  # a UTF-8 BOM is not part of the header
        (b"user_id,item_id,timestamp\r\nu,b,2\r\nu,a,1\r\n", ["u"], ["a", "b"]),  # Windows line ends
        (HEADER.encode() + b"u,b,-5\nu,a,-10\n", ["u"], ["a", "b"]),  # before 1970
        (HEADER.encode() + b"u,b,1e300\nu,a,99999999999999999999999\n", ["u"], ["a", "b"]),
        (HEADER.encode() + b'[bold]u0,item[/]3,1\n"u,1"," x ",2\n', ["[bold]u0", "u,1"], ["item[/]3"]),
        (b"user_id , item_id,timestamp\nu,a,1\n", ["u"], ["a"]),  # spaces around header names
    ],
)
def test_odd_but_valid_csv_loads_exactly(tmp_path, content, users, order):
    data = load_dataset(f"csv:{write(tmp_path / 'events.csv', content)}")
    assert data.user_ids == users and sequence(data, users[0]) == order
    accounted(data)


def test_ids_with_spaces_are_kept_and_noted(tmp_path):
    path = events(tmp_path, "u,a,1\n u,a,2\n")
    data = load_dataset(f"csv:{path}")
    assert data.user_ids == ["u", " u"]
    assert any("begin or end with spaces, e.g. ' u'" in n for n in data.report.notes)


def test_paths_that_are_not_readable_files(tmp_path):
    for kind in ("csv", "parquet"):
        assert "is a folder, not a file" in located(fails(f"{kind}:{tmp_path}"), tmp_path)
    if os.geteuid() != 0:  # root reads anything
        path = events(tmp_path, "u,a,1\n")
        path.chmod(0)
        assert "permission denied" in located(fails(f"csv:{path}"), path)


@pytest.mark.parametrize(
    ("lines", "row", "says"),
    [
        ("u1 1 2\nu1 3 4\n", 2, "user 'u1' already has a line (line 1)"),
        ("u1 1 \u0661\n", 1, "token '\u0661' is not a positive integer item id"),
        ("u1 00 1\n", 1, "token '00'"),
        ("u1 1\x00 2\n", 1, "a NUL byte"),
    ],
)
def test_s3rec_junk(tmp_path, lines, row, says):
    path = write(tmp_path / "Shop.txt", lines)
    assert says in located(fails(f"s3rec:{path}"), path, row)


def test_s3rec_repeated_line_is_a_duplicate(tmp_path):
    path = write(tmp_path / "Shop.txt", "u1 1 2\nu1 1 2\nu2 3\n")
    data = load_dataset(f"s3rec:{path}")
    assert sequence(data, "u1") == ["1", "2"] and data.report.duplicates_dropped == 1
    accounted(data)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("Shop_item2attributes.json", "[" * 100_000, "nested too deeply"),
        ("Shop_item2attributes.json", '{"1": [1], "1": [2]}', "key '1' appears twice"),
        ("Shop_item2attributes.json", '{"1": [[1]]}', "not a list of attribute ids"),
        ("Shop_item2attributes.json", b'{"1": ["\xe9"]}', "is not UTF-8 text"),
        ("Shop_item2title.json", '{"1": {"title": ["x"]}}', "title that is not text"),
    ],
)
def test_s3rec_bad_metadata(tmp_path, name, content, says):
    write(tmp_path / "Shop.txt", "u1 1 2\n")
    meta = write(tmp_path / name, content)
    assert says in located(fails(f"s3rec:{tmp_path / 'Shop.txt'}"), meta)


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    write(tmp_path / "u.genre", "unknown|0\nAction|1\n")
    write(tmp_path / "u.item", "1|Toy (1995)|01-Jan-1995||http://x|0|1\n2|Heat|||http://x|0|0\n")
    return tmp_path


@pytest.mark.parametrize(
    ("file", "content", "row", "says"),
    [
        ("u.data", "1\t1\t5\t100\n1\t2\t3\n", 2, "3 fields, expected 4 (user, item, rating, timestamp)"),
        ("u.item", "1|Toy (1995)|01-Jan-1995||http://x|0\n", 1, "6 fields, expected 7"),
        ("u.item", "1|Toy (1995)|01-Jan-1995||http://x|0|2\n", 1, "genre flag '2' is not 0 or 1"),
    ],
)
def test_movielens_junk(ml100k, file, content, row, says):
    write(ml100k / "u.data", "1\t1\t5\t100\n")
    path = write(ml100k / file, content)
    assert says in located(fails(f"movielens:{ml100k}"), path, row)


def test_movielens_duplicates_compare_the_rating_too(ml100k):
    write(ml100k / "u.data", "1\t1\t5\t100\n1\t1\t5\t100\n1\t1\t4\t100\n")
    data = load_dataset(f"movielens:{ml100k}")
    assert data.n_events == 2 and data.report.duplicates_dropped == 1


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("synthetic:users=-1", "users=-1 must be at least 1"),
        ("synthetic:foo=1", "'foo=1' is not key=value with a known key"),
        ("synthetic:users=1e3", "is not a whole number"),
        ("synthetic:users=5,users=6", "given twice"),
        ("synthetic:min_len=0", "min_len=0 must be at least 1"),
        ("synthetic:min_len=9,max_len=3", "max_len=3 must be at least min_len (9)"),
        ("synthetic:p_brand=nan", "must be a probability"),
        ("synthetic:p_brand=0.9", "add up to 1.45, more than 1"),
        ("synthetic:seed=-1", "seed=-1 must be 0 or more"),
    ],
)
def test_synthetic_bad_spec(spec, says):
    message = str(fails(spec))
    assert says in message and "how to fix" in message
