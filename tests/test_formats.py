"""Every data spec loads into one Dataset; every malformed input names file, line, column and a fix."""

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recscope.config import DataConfig
from recscope.data import Dataset, load_dataset
from recscope.data.dataset import SkippedRow
from recscope.data.synthetic import MECHANISMS
from recscope.errors import DataError, RecscopeError

SKIP_BAD = DataConfig(skip_bad_rows=True, max_skip_share=1.0)  # these small files are mostly bad rows


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def own_sequence(data: Dataset, user_id: str) -> list[str]:
    """The user's items in time order, as the user's own ids."""
    return [data.item_ids[i] for i in data.sequence(data.user_index(user_id))]


def field(data: Dataset, name: str):
    return next(f for f in data.fields if f.name == name)


def assert_located(
    err: DataError, file: Path, row: int | None = None, column: str | None = None, unit: str = "line"
) -> None:
    """The message names the file, the line (parquet: the row) and the column, as attributes and as text."""
    message = str(err)
    assert err.file == str(file) and str(file) in message
    if row is not None:
        assert err.row == row and f"{unit} {row}" in message
    if column is not None:
        assert err.column == column and repr(column) in message


# ---------------------------------------------------------------------- s3rec
@pytest.fixture
def s3rec_dir(tmp_path: Path) -> Path:
    write(tmp_path / "Shop.txt", "u7 3 1 2\nu2 2 5\n\nu9 4 3 1 5\n")  # a blank line is not a user
    write(tmp_path / "Shop_item2attributes.json", json.dumps({"1": [10, 11], "2": [11], "3": [12], "5": []}))
    write(
        tmp_path / "Shop_item2title.json",
        json.dumps({"1": {"asin": "A1", "title": "Lipstick"}, "2": "Mascara", "3": {"title": "Serum"}}),
    )
    write(tmp_path / "Shop_sample.txt", "not read\n")  # *_sample.txt beside the data is ignored
    return tmp_path


def test_s3rec_file_keeps_ids_order_titles_and_attributes(s3rec_dir):
    data = load_dataset(f"s3rec:{s3rec_dir / 'Shop.txt'}")
    assert data.name == "Shop"
    assert (data.n_users, data.n_items, data.n_events) == (3, 5, 9)
    assert data.user_ids == ["u7", "u2", "u9"]
    assert own_sequence(data, "u7") == ["3", "1", "2"]  # line order is time order
    assert own_sequence(data, "u9") == ["4", "3", "1", "5"]
    assert data.timestamps[data.offsets[2] : data.offsets[3]].tolist() == [0, 1, 2, 3]  # position in the line
    assert data.title(data.item_index("1")) == "Lipstick"
    assert data.title(data.item_index("2")) == "Mascara"
    assert data.title(data.item_index("4")) == "4", "an item without a title shows its id"
    attribute = field(data, "attribute")
    assert attribute.labels(data.item_index("1")) == ["10", "11"]
    assert attribute.labels(data.item_index("5")) == []
    assert attribute.labels(data.item_index("4")) == []
    assert data.report.rows_read == 3 and data.report.rows_skipped == 0


def test_s3rec_dir_is_the_same_as_its_file(s3rec_dir):
    from_dir = load_dataset(f"s3rec:{s3rec_dir}")
    from_file = load_dataset(f"s3rec:{s3rec_dir / 'Shop.txt'}")
    assert from_dir.item_ids == from_file.item_ids and from_dir.user_ids == from_file.user_ids
    np.testing.assert_array_equal(from_dir.items, from_file.items)


def test_s3rec_dir_with_two_sequence_files_asks_for_the_file(s3rec_dir):
    write(s3rec_dir / "Other.txt", "1 1 2\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"s3rec:{s3rec_dir}")
    assert_located(e.value, s3rec_dir)
    assert "Other.txt" in str(e.value) and "s3rec:DIR/Name.txt" in str(e.value)


@pytest.mark.parametrize(
    ("lines", "row", "column", "says"),
    [
        ("1 1 2\n2 4 x 5\n", 2, "token 3", "'x'"),
        ("1 1 2\n2 4 5\n3 0 7\n", 3, "token 2", "'0'"),  # 0 is the padding index, not an item
        ("1 1 2\n2\n", 2, "items", "no items"),
    ],
)
def test_s3rec_bad_line_names_file_line_and_token(tmp_path, lines, row, column, says):
    path = write(tmp_path / "Bad.txt", lines)
    with pytest.raises(DataError) as e:
        load_dataset(f"s3rec:{path}")
    assert_located(e.value, path, row, column)
    assert says in str(e.value) and "how to fix" in str(e.value) and "skip_bad_rows" in str(e.value)


def test_s3rec_skip_bad_rows_counts_what_it_skipped_and_keeps_the_rest(tmp_path):
    path = write(tmp_path / "Bad.txt", "1 1 2\n2 4 x 5\n3 3 1\n4\n")
    data = load_dataset(f"s3rec:{path}", config=SKIP_BAD)
    assert data.user_ids == ["1", "3"]
    assert own_sequence(data, "1") == ["1", "2"] and own_sequence(data, "3") == ["3", "1"]
    report = data.report
    assert (report.rows_read, report.rows_skipped) == (4, 2)
    assert report.reasons == {"token 'x' is not a positive integer item id": 1, "the line has a user but no items": 1}
    assert report.examples[0].startswith(f"{path}, line 2:") and report.examples[1].startswith(f"{path}, line 4:")


def test_s3rec_empty_file(tmp_path):
    path = write(tmp_path / "Empty.txt", "\n\n")
    with pytest.raises(DataError, match="no interactions") as e:
        load_dataset(f"s3rec:{path}")
    assert_located(e.value, path)


@pytest.mark.parametrize(
    ("text", "row", "column", "says"),
    [
        ('{"1": [1, 2],', 1, None, "not valid JSON"),
        ('{\n"1": [1, 2],\n"2": [3]\n"3": [4]\n}', 4, None, "not valid JSON"),  # missing comma on line 3
        ('{"1": [1, 2], "2": 7}', None, "2", "not a list"),
        ("[1, 2]", None, None, "JSON object keyed by item id"),
    ],
)
def test_s3rec_bad_item2attributes(tmp_path, text, row, column, says):
    write(tmp_path / "Shop.txt", "1 1 2\n")
    attrs = write(tmp_path / "Shop_item2attributes.json", text)
    with pytest.raises(DataError, match=says) as e:
        load_dataset(f"s3rec:{tmp_path / 'Shop.txt'}")
    assert_located(e.value, attrs, row, column)


def test_s3rec_title_that_is_not_text(tmp_path):
    write(tmp_path / "Shop.txt", "1 1 2\n")
    titles = write(tmp_path / "Shop_item2title.json", '{"1": {"title": 5}}')
    with pytest.raises(DataError, match="not text") as e:
        load_dataset(f"s3rec:{tmp_path / 'Shop.txt'}")
    assert_located(e.value, titles, column="1")


def test_s3rec_refuses_a_separate_catalog(s3rec_dir, tmp_path):
    with pytest.raises(DataError, match="--catalog is for csv/parquet"):
        load_dataset(f"s3rec:{s3rec_dir}", catalog=tmp_path / "catalog.csv")


# ---------------------------------------------------------------------- movielens
GENRES = "unknown|0\nAction|1\nComedy|2\n\n"


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    root = tmp_path / "ml-100k"
    root.mkdir()
    # user item rating timestamp, not in time order
    write(root / "u.data", "1\t20\t4\t300\n1\t10\t5\t100\n2\t10\t3\t150\n1\t30\t2\t200\n")
    write(
        root / "u.item",
        "10|Toy Story (1995)|01-Jan-1995||http://x/10|0|1|1\n"
        "20|Café Society (1994)|01-Jan-1994||http://x/20|0|0|1\n"  # latin-1, as the real file
        "30|Heat (1995)|01-Jan-1995||http://x/30|0|1|0\n",
        encoding="latin-1",
    )
    write(root / "u.genre", GENRES)
    write(root / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    return root


def test_movielens_100k(ml100k):
    data = load_dataset(f"movielens:{ml100k}")
    assert data.name == "ml-100k"
    assert (data.n_users, data.n_items, data.n_events) == (2, 3, 4)
    assert data.user_ids == ["1", "2"]
    assert own_sequence(data, "1") == ["10", "30", "20"]  # sorted by timestamp 100, 200, 300
    assert data.timestamps[:3].tolist() == [100.0, 200.0, 300.0]
    assert data.title(data.item_index("20")) == "Café Society (1994)"
    genre = field(data, "genre")
    assert genre.labels(data.item_index("10")) == ["Action", "Comedy"]
    assert genre.labels(data.item_index("30")) == ["Action"]
    assert field(data, "year").kind == "numeric"
    assert data.report.rows_read == 4


def test_movielens_100k_bad_timestamp_names_u_data(ml100k):
    write(ml100k / "u.data", "1\t20\t4\t300\n1\t10\t5\t100\n2\t10\t3\tsoon\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"movielens:{ml100k}")
    assert_located(e.value, ml100k / "u.data", 3, "timestamp")
    assert "'soon'" in str(e.value) and "how to fix" in str(e.value)


def test_movielens_100k_without_u_genre(ml100k):
    (ml100k / "u.genre").unlink()
    with pytest.raises(DataError, match="missing") as e:
        load_dataset(f"movielens:{ml100k}")
    assert_located(e.value, ml100k / "u.genre")


def test_movielens_100k_u_item_with_the_wrong_number_of_genre_columns(ml100k):
    write(ml100k / "u.genre", GENRES + "Drama|3\nHorror|4\nWar|5\n")
    with pytest.raises(DataError, match="expected 11") as e:
        load_dataset(f"movielens:{ml100k}")
    assert_located(e.value, ml100k / "u.item")


@pytest.fixture
def ml1m(tmp_path: Path) -> Path:
    root = tmp_path / "ml-1m"
    root.mkdir()
    write(root / "ratings.dat", "1::10::5::978300760\n1::20::3::978300700\n2::10::4::978300800\n")
    write(
        root / "movies.dat",
        "10::Toy Story (1995)::Animation|Children's\n20::Amélie (2001)::Comedy|Romance\n",
        encoding="latin-1",
    )
    write(root / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return root


def test_movielens_1m(ml1m):
    data = load_dataset(f"movielens:{ml1m}")
    assert (data.n_users, data.n_items, data.n_events) == (2, 2, 3)
    assert own_sequence(data, "1") == ["20", "10"]  # 978300700 before 978300760
    assert data.title(data.item_index("20")) == "Amélie (2001)"
    assert field(data, "genre").labels(data.item_index("10")) == ["Animation", "Children's"]
    year = field(data, "year")
    assert year.kind == "numeric"
    # 1995 and 2001 fall into different bands: the year was read from the title
    assert year.values[data.item_index("10"), 0] != year.values[data.item_index("20"), 0]


def test_movielens_1m_line_with_the_wrong_number_of_fields(ml1m):
    write(ml1m / "ratings.dat", "1::10::5::978300760\n1::20::3\n")
    with pytest.raises(DataError, match=r"3 fields, expected 4 \(UserID::MovieID::Rating::Timestamp\)") as e:
        load_dataset(f"movielens:{ml1m}")
    assert_located(e.value, ml1m / "ratings.dat", 2)


def test_movielens_1m_blank_lines_do_not_shift_line_numbers(ml1m):
    write(ml1m / "ratings.dat", "1::10::5::978300760\n\n\n1::20::3::978300700\n2::10::4::soon\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"movielens:{ml1m}")
    assert_located(e.value, ml1m / "ratings.dat", 5, "timestamp")
    write(ml1m / "ratings.dat", "1::10::5::978300760\n\n1::20::3\n")
    with pytest.raises(DataError, match="3 fields, expected 4") as e:
        load_dataset(f"movielens:{ml1m}")
    assert_located(e.value, ml1m / "ratings.dat", 3)


def test_movielens_folder_without_ratings(tmp_path):
    with pytest.raises(DataError, match="no u.data") as e:
        load_dataset(f"movielens:{tmp_path}")
    assert_located(e.value, tmp_path)
    file = write(tmp_path / "u.data", "1\t1\t1\t1\n")
    with pytest.raises(DataError, match="unpacked folder"):
        load_dataset(f"movielens:{file}")


# ---------------------------------------------------------------------- csv / parquet
EVENTS = "user_id,item_id,timestamp\nalice,P2,2020-01-03\nbob,P1,2020-01-01\nalice,P1,2020-01-02\nalice,P9,2020-01-05\n"
CATALOG = (
    "item_id,title,brand,category,price,description\n"
    "P1,Red Lipstick,Glow,Makeup|Lips,12.5,a red one\n"
    "P2,Night Serum,Petal,Skincare,40,\n"
    "P3,Day Cream,Glow,Skincare|Face,25,never bought\n"
)


def epoch(day: int) -> float:
    return datetime(2020, 1, day, tzinfo=UTC).timestamp()


def test_csv_with_catalog(tmp_path):
    events = write(tmp_path / "events.csv", EVENTS)
    catalog = write(tmp_path / "catalog.csv", CATALOG)
    data = load_dataset(f"csv:{events}", catalog=catalog)
    assert data.name == "events"
    assert data.user_ids == ["alice", "bob"]
    assert own_sequence(data, "alice") == ["P1", "P2", "P9"]  # by date, not by file order
    assert data.timestamps[:3].tolist() == [epoch(2), epoch(3), epoch(5)]
    # Catalog items come first and keep their place even if nobody bought them (P3);
    # P9 is bought but not in the catalog.
    assert data.item_ids == ["", "P1", "P2", "P3", "P9"]
    assert data.titles == ["", "Red Lipstick", "Night Serum", "Day Cream", ""]
    assert [f.name for f in data.fields] == ["brand", "category", "price"], "title/description are text, not fields"
    brand, category, price = (field(data, n) for n in ("brand", "category", "price"))
    assert brand.kind == "categorical" and brand.labels(1) == ["Glow"] and brand.labels(3) == ["Glow"]
    assert category.kind == "multi" and category.labels(1) == ["Makeup", "Lips"] and category.labels(2) == ["Skincare"]
    assert price.kind == "numeric"
    assert price.values[1, 0] < price.values[3, 0] < price.values[2, 0], "bands follow the price order"
    assert brand.labels(4) == [] and price.values[4, 0] == 0, "an item outside the catalog has no attributes"
    assert any("'P9'" in note for note in data.report.notes), "items missing from the catalog are reported"


def test_csv_column_mapping(tmp_path):
    events = write(tmp_path / "orders.csv", "customer,sku,when,extra\nc1,s1,5,x\nc1,s2,3,y\nc2,s1,4,z\n")
    catalog = write(tmp_path / "products.csv", "sku,name\ns1,Kettle\ns2,Lamp\n")
    data = load_dataset(
        f"csv:{events}", catalog=catalog, columns={"user_id": "customer", "item_id": "sku", "timestamp": "when"}
    )
    assert own_sequence(data, "c1") == ["s2", "s1"]
    assert data.title(data.item_index("s1")) == "Kettle"
    with pytest.raises(DataError, match="mapped to user_id") as e:
        load_dataset(f"csv:{events}", columns={"user_id": "client", "item_id": "sku", "timestamp": "when"})
    assert_located(e.value, events, column="client")
    with pytest.raises(DataError, match="cannot map unknown column"):
        load_dataset(f"csv:{events}", columns={"shopper": "customer"})


def test_user_and_item_ids_round_trip(tmp_path):
    events = write(tmp_path / "events.csv", "user_id,item_id,timestamp\n007,0042,1\n7,42,2\n007,42,3\n")
    data = load_dataset(f"csv:{events}")
    assert data.user_ids == ["007", "7"], "ids are strings: leading zeros are kept"
    assert data.item_ids == ["", "0042", "42"]
    for i, user in enumerate(data.user_ids):
        assert data.user_index(user) == i
    for i, item in enumerate(data.item_ids[1:], start=1):
        assert data.item_index(item) == i
    with pytest.raises(DataError, match="unknown user '8'") as e:
        data.user_index("8")
    assert "007" in str(e.value), "the fix shows real user ids"
    with pytest.raises(DataError, match="unknown item"):
        data.item_index("")  # the padding slot is not an item


def test_equal_timestamps_keep_file_order(tmp_path):
    events = write(tmp_path / "events.csv", "user_id,item_id,timestamp\nu,c,1\nu,a,1\nu,b,0\nu,d,1\n")
    assert own_sequence(load_dataset(f"csv:{events}"), "u") == ["b", "c", "a", "d"]


def test_parquet_with_parquet_catalog(tmp_path):
    events = tmp_path / "events.parquet"
    pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["a", "b", "a"],
            "timestamp": [datetime(2021, 5, 2), datetime(2021, 5, 1), datetime(2021, 5, 3)],
        }
    ).write_parquet(events)
    catalog = tmp_path / "catalog.parquet"
    pl.DataFrame(
        {
            "item_id": ["a", "b"],
            "title": ["Alpha", "Beta"],
            "tags": [["x", "y"], ["y"]],
            "attribute_ids": [[3, 1], [2]],  # a list of numbers, as s3rec-style attribute ids
            "price": [1.5, 20.0],
        }
    ).write_parquet(catalog)
    data = load_dataset(f"parquet:{events}", catalog=catalog)
    assert own_sequence(data, "u1") == ["b", "a"]
    assert data.titles == ["", "Alpha", "Beta"]
    assert field(data, "tags").labels(1) == ["x", "y"]
    assert field(data, "attribute_ids").labels(1) == ["3", "1"]
    assert field(data, "price").kind == "numeric"


def test_parquet_bad_timestamp_row_is_one_based(tmp_path):
    events = tmp_path / "events.parquet"
    pl.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": ["1", "x"]}).write_parquet(events)
    with pytest.raises(DataError) as e:
        load_dataset(f"parquet:{events}")
    assert_located(e.value, events, 2, "timestamp", unit="row")


def test_parquet_catalog_blank_item_id_row_is_one_based(tmp_path):
    events = write(tmp_path / "events.csv", "user_id,item_id,timestamp\nu,a,1\n")
    catalog = tmp_path / "catalog.parquet"
    pl.DataFrame({"item_id": ["a", None], "title": ["A", "B"]}).write_parquet(catalog)
    with pytest.raises(DataError, match="empty item_id") as e:
        load_dataset(f"csv:{events}", catalog=catalog)
    assert_located(e.value, catalog, 2, "item_id", unit="row")


@pytest.mark.parametrize(
    ("content", "row", "column", "says"),
    [
        ("", None, None, "the file is empty"),
        ("user_id,item_id,timestamp\n", None, None, "header but no rows"),
        ("user_id,item_id\nu,a\n", None, "timestamp", "required column 'timestamp' is missing"),
        ("user_id,item_id,timestamp\nu,a,1\nu,b,2\nv,a,abc\n", 4, "timestamp", "(value 'abc')"),
        ("user_id,item_id,timestamp\nu,a,1\n,b,2\n", 3, "user_id", "empty user_id"),
        ("user_id,item_id,timestamp\nu,a,1\nu,,2\nu,c,3\n", 3, "item_id", "empty item_id"),
    ],
)
def test_malformed_csv_names_file_line_and_column(tmp_path, content, row, column, says):
    path = write(tmp_path / "events.csv", content)
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{path}")
    assert says in str(e.value)
    assert "how to fix" in str(e.value)
    assert_located(e.value, path, row, column)


def test_iso_and_numeric_timestamp_errors_name_the_first_bad_row(tmp_path):
    path = write(tmp_path / "events.csv", "user_id,item_id,timestamp\nu,a,2020-01-01\nu,b,2020-01-02\nu,c,never\n")
    with pytest.raises(DataError, match=r"not an ISO-8601 date/time .*\(value 'never'\)") as e:
        load_dataset(f"csv:{path}")
    assert_located(e.value, path, 4, "timestamp")
    # Most timestamps neither numbers nor ISO: the format is asked for, not guessed.
    path = write(tmp_path / "events.csv", "user_id,item_id,timestamp\nu,a,2020-01-01\nu,b,yesterday\nu,c,never\n")
    with pytest.raises(DataError, match=r"'yesterday' is neither an epoch number nor an ISO-8601") as e:
        load_dataset(f"csv:{path}")
    assert_located(e.value, path, 3, "timestamp")


def test_skip_bad_rows_reports_every_skip_and_keeps_every_good_row(tmp_path):
    path = write(
        tmp_path / "events.csv",
        "user_id,item_id,timestamp\nu,a,1\nu,b,abc\nv,a,2\n,c,3\nu,c,4\nv,,5\n",
    )
    data = load_dataset(f"csv:{path}", config=SKIP_BAD)
    assert own_sequence(data, "u") == ["a", "c"] and own_sequence(data, "v") == ["a"]
    report = data.report
    assert (report.rows_read, report.rows_skipped) == (6, 3)
    assert report.rows_read - report.rows_skipped == data.n_events, "nothing is dropped silently"
    not_a_number = "timestamp is not an epoch number (the column's other timestamps are)"
    assert report.reasons == {not_a_number: 1, "empty user_id": 1, "empty item_id": 1}
    assert report.examples == [
        f"{path}, line 3: {not_a_number}",
        f"{path}, line 5: empty user_id",
        f"{path}, line 7: empty item_id",
    ]
    assert [(r.number, r.text) for r in report.skipped] == [(3, "u,b,abc"), (5, ",c,3"), (7, "v,,5")]


def test_skip_bad_rows_with_nothing_left_still_fails(tmp_path):
    path = write(tmp_path / "events.csv", "user_id,item_id,timestamp\n,a,1\n")
    with pytest.raises(DataError, match="no valid rows") as e:
        load_dataset(f"csv:{path}", config=SKIP_BAD)
    assert_located(e.value, path)


@pytest.mark.parametrize(
    ("content", "row", "says"),
    [
        ("item_id,title\nP1,x\n,y\n", 3, "empty item_id"),
        ("item_id,title\nP1,x\nP2,y\nP2,z\nP1,w\n", 4, "item 'P2' appears more than once"),
        ("sku,title\nP1,x\n", None, "required column 'item_id' is missing"),
    ],
)
def test_malformed_catalog(tmp_path, content, row, says):
    events = write(tmp_path / "events.csv", "user_id,item_id,timestamp\nu,P1,1\n")
    catalog = write(tmp_path / "catalog.csv", content)
    with pytest.raises(DataError, match=says) as e:
        load_dataset(f"csv:{events}", catalog=catalog)
    assert_located(e.value, catalog, row, "item_id")


def test_catalog_mapping_to_a_column_it_lacks(tmp_path):
    events = write(tmp_path / "events.csv", "user_id,sku,timestamp\nu,P1,1\n")
    catalog = write(tmp_path / "catalog.csv", "product,title\nP1,x\n")
    with pytest.raises(DataError, match="required column 'item_id' is missing") as e:
        load_dataset(f"csv:{events}", catalog=catalog, columns={"item_id": "sku"})
    assert_located(e.value, catalog, column="item_id")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("json:events.json", "unknown data format 'json'"),
        ("events.csv", "unknown data format 'events.csv'"),
        ("csv:", "names no path"),
    ],
)
def test_bad_specs(spec, says):
    with pytest.raises(DataError, match=says) as e:
        load_dataset(spec)
    assert "how to fix" in str(e.value)


def test_missing_files(tmp_path):
    for kind in ("csv", "parquet", "s3rec", "movielens"):
        missing = tmp_path / f"nope.{kind}"
        with pytest.raises(DataError, match="does not exist") as e:
            load_dataset(f"{kind}:{missing}")
        assert_located(e.value, missing)
    events = write(tmp_path / "events.csv", "user_id,item_id,timestamp\nu,a,1\n")
    with pytest.raises(DataError, match="catalog file does not exist") as e:
        load_dataset(f"csv:{events}", catalog=tmp_path / "catalog.csv")
    assert_located(e.value, tmp_path / "catalog.csv")


def test_unreadable_parquet(tmp_path):
    path = write(tmp_path / "events.parquet", "this is not parquet")
    with pytest.raises(DataError, match="could not be parsed as parquet") as e:
        load_dataset(f"parquet:{path}")
    assert_located(e.value, path)


# ---------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_from_its_seed():
    a = load_dataset("synthetic:users=60,items=80,seed=5")
    b = load_dataset("synthetic:users=60,items=80,seed=5")
    c = load_dataset("synthetic:users=60,items=80,seed=6")
    assert a.name == "synthetic-users60-items80-seed5"
    assert a.item_ids == b.item_ids and a.titles == b.titles and a.user_ids == b.user_ids
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    for name in ("mechanism", "cause"):
        np.testing.assert_array_equal(a.extras[name], b.extras[name])
    assert not np.array_equal(a.items[:200], c.items[:200])


def test_synthetic_planted_causes_are_consistent():
    data = load_dataset("synthetic:users=150,items=120,seed=2")
    assert data.n_users == 150 and [f.name for f in data.fields] == ["brand", "category", "price"]
    mechanism, cause = data.extras["mechanism"], data.extras["cause"]
    assert mechanism.shape == cause.shape == (data.n_events,)
    assert data.extra_labels == {"mechanism": MECHANISMS}
    assert set(np.unique(mechanism)) <= set(range(len(MECHANISMS)))
    brand = field(data, "brand")
    caused = {m: 0 for m in MECHANISMS}
    for u in range(data.n_users):
        start, seq = data.offsets[u], data.sequence(u)
        assert np.all(np.diff(data.timestamps[start : start + len(seq)]) > 0), "purchases are in time order"
        assert len(set(seq.tolist())) == len(seq), "nobody buys the same item twice"
        for p, item in enumerate(seq):
            c, m = int(cause[start + p]), MECHANISMS[mechanism[start + p]]
            if c < 0:
                continue
            caused[m] += 1
            assert 0 <= c < p, "a cause lies in the user's earlier history"
            source = seq[c]
            assert brand.labels(item) == brand.labels(source)
            if m == "accessory_after_device":
                model = data.titles[item].split(" for ", 1)[1]  # "<Brand> <Accessory> for <model>"
                assert data.titles[source].endswith(model)
            elif m == "brand_loyalty":
                earlier_brands = [brand.labels(i)[0] for i in seq[:p]]
                assert earlier_brands.count(brand.labels(source)[0]) == 1, "the cause is the only item of its brand"
    assert caused["category_interest"] == caused["popularity"] == 0, "these mechanisms have no single cause"
    assert caused["accessory_after_device"] > 50 and caused["brand_loyalty"] > 10


@pytest.mark.parametrize(
    ("spec", "says"), [("synthetic:users=abc", "not a whole number"), ("synthetic:colour=3", "known")]
)
def test_synthetic_bad_options(spec, says):
    with pytest.raises(RecscopeError, match=says):
        load_dataset(spec)


# ---------------------------------------------------------------------- persistence
def test_dataset_save_and_load_round_trip(tmp_path):
    data = load_dataset("synthetic:users=40,items=60,seed=1")
    data.report.skip(SkippedRow("somewhere.csv", "line", 3, "a reason", 'u,"a, b",x'))
    data.save(tmp_path / "saved")
    saved = ["data.json", "data.safetensors", "skipped_rows.csv"]
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == saved
    back = Dataset.load(tmp_path / "saved")
    assert (back.name, back.user_ids, back.item_ids, back.titles) == (
        data.name,
        data.user_ids,
        data.item_ids,
        data.titles,
    )
    for name in ("offsets", "items", "timestamps"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    assert [(f.name, f.kind, f.vocab, f.band_edges) for f in back.fields] == [
        (f.name, f.kind, f.vocab, f.band_edges) for f in data.fields
    ]
    for f, g in zip(back.fields, data.fields, strict=True):
        np.testing.assert_array_equal(f.values, g.values)
    assert set(back.extras) == {"mechanism", "cause"} and back.extra_labels == data.extra_labels
    for name in back.extras:
        np.testing.assert_array_equal(back.extras[name], data.extras[name])
    assert back.report == data.report
    assert back.user_index(data.user_ids[7]) == 7


# ---------------------------------------------------------------------- real data
def test_real_beauty(shared_data):
    data = load_dataset(f"s3rec:{shared_data / 'beauty'}")
    assert (data.n_users, data.n_items, data.n_events) == (22_363, 12_101, 198_502)
    assert data.lengths.min() == 5 and data.lengths.max() == 204
    assert field(data, "attribute").vocab_size - 1 == 637
    assert data.title(data.item_index("1")) == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"
    assert own_sequence(data, "1") == ["1", "2", "3", "4", "5"]  # Beauty.txt line 1
    assert data.report.rows_skipped == 0


def test_real_movielens_100k(shared_data):
    data = load_dataset(f"movielens:{shared_data / 'ml-100k'}")
    assert (data.n_users, data.n_items, data.n_events) == (943, 1_682, 100_000)
    assert field(data, "genre").vocab_size - 1 == 19
    assert data.title(data.item_index("1")) == "Toy Story (1995)"
    assert np.all(np.diff(data.timestamps[data.offsets[0] : data.offsets[1]]) >= 0)
