"""The shop at any size (recscope.data.scale) and prepared data sets (recscope.data.prepare)."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import TINY
from recscope.cli import app
from recscope.config import DataConfig
from recscope.data import Dataset, load_dataset
from recscope.data.prepare import prepare
from recscope.data.scale import frames
from recscope.data.synthetic import MECHANISMS, ShopConfig
from recscope.errors import DataError

SMALL = ShopConfig(users=300, items=240, events=4_000, seed=3)
SMALL_SPEC = "synthetic:users=300,items=240,events=4000,seed=3"


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


# ---------------------------------------------------------------------- the generator
def test_generator_has_the_asked_sizes_and_is_deterministic_by_seed(tmp_path):
    events, catalog = frames(SMALL)
    assert events.height == 4_000 and catalog.height == 240
    assert events["user_id"].n_unique() == 300 and catalog["item_id"].n_unique() == 240
    assert catalog["title"].n_unique() == 240  # people tell items apart by title
    assert events["item_id"].is_in(catalog["item_id"].implode()).all()
    again, catalog_again = frames(SMALL)
    assert events.equals(again) and catalog.equals(catalog_again)
    other, _ = frames(ShopConfig(users=300, items=240, events=4_000, seed=4))
    assert not other.equals(events)

    # The streamed files hold exactly what the in-memory spec path makes.
    result = cli("data", "generate", "--users", "300", "--items", "240", "--events", "4000", "--seed", "3")
    assert result.exit_code != 0  # --out is required
    result = cli("data", "generate", "--users", "300", "--items", "240", "--events", "4000", "--seed", "3",
                 "--out", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "interactions.parquet").equals(events)
    assert pl.read_parquet(tmp_path / "catalog.parquet").equals(catalog)


def test_generator_plants_its_causes():
    events, catalog = frames(SMALL)
    titles = dict(zip(catalog["item_id"], catalog["title"], strict=True))
    brands = dict(zip(catalog["item_id"], catalog["brand"], strict=True))
    counts = events["mechanism"].value_counts()
    shares = dict(zip(counts["mechanism"], counts["count"] / events.height, strict=True))
    assert set(shares) == set(range(len(MECHANISMS))) and min(shares.values()) > 0.05
    checked = {"accessory_after_device": 0, "brand_loyalty": 0}
    for (_,), rows in events.group_by(["user_id"], maintain_order=True):
        items = rows["item_id"].to_list()
        assert len(set(items)) == len(items)  # nobody buys an item twice
        assert rows["timestamp"].is_sorted() and rows["timestamp"].min() > 1_600_000_000  # epoch seconds
        for pos, (item, mech, cause) in enumerate(rows.select("item_id", "mechanism", "cause").iter_rows()):
            name = MECHANISMS[mech]
            if name == "accessory_after_device":
                # The device at the cause names the model the accessory is for, same brand, bought earlier.
                device = items[cause]
                assert 0 <= cause < pos and pos - cause <= 12  # one of the last 12 purchases
                assert titles[item].endswith(" for " + titles[device].split(" ", 1)[1]), (titles[item], titles[device])
                assert brands[item] == brands[device]
            elif name == "brand_loyalty" and cause >= 0:
                assert cause < pos and brands[items[cause]] == brands[item]
                assert [brands[i] for i in items[:pos]].count(brands[item]) == 1  # the only one of its brand
            else:
                assert cause == -1  # category interest, popularity noise: no single cause
            if cause >= 0:
                checked[name] += 1
            assert " for " not in titles[item] or name == "accessory_after_device"  # accessories come only so
    assert min(checked.values()) > 100


def test_the_scale_spec_is_a_dataset_with_causes_and_the_small_shop_is_unchanged():
    data = load_dataset(SMALL_SPEC)
    assert (data.n_users, data.n_items, data.n_events) == (300, 240, 4_000)
    assert set(data.extras) == {"mechanism", "cause"}
    assert data.extra_labels == {"mechanism": MECHANISMS}
    # The small shop without events= gives exactly what it gave before the scale generator existed
    # (the demo, the tiny runs and their recorded numbers depend on it).
    from recscope.run import fingerprint

    small = load_dataset("synthetic:users=200,items=120,seed=5")
    assert fingerprint(small) == "sha256:055ae7f05c93748507b490d025d6d5b4f876d02f8ecf36370d49d3b7d1748942"
    assert small.report.rows_read == small.n_events


@pytest.mark.parametrize(
    "spec, message",
    [
        ("synthetic:users=10,items=50,events=100", "items=50 is too small"),
        ("synthetic:users=100,items=200,events=50", "fewer than users=100"),
        ("synthetic:users=10,items=200,events=100,impressions=3", "impressions= is not available"),
        ("synthetic:users=10,items=200,events=100,max_len=9", "max_len= does not apply"),
        ("synthetic:users=2,items=100,events=400", "more than the 100 items allow"),
        ("synthetic:events=-1", "events=-1 must be"),
    ],
)
def test_scale_sizes_it_cannot_honour_are_named(spec, message):
    with pytest.raises(DataError, match=message):
        load_dataset(spec)


# ---------------------------------------------------------------------- prepared data sets
def assert_same(a: Dataset, b: Dataset) -> None:
    """Every part of a Dataset: ids, sequences, times, fields, events, values, extras, report."""
    assert (a.name, a.user_ids, a.item_ids, a.titles, a.texts) == (b.name, b.user_ids, b.item_ids, b.titles, b.texts)
    for name in ("offsets", "items", "timestamps", "events"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    assert np.array_equal(a.values, b.values, equal_nan=True) and a.event_types == b.event_types
    assert [(f.name, f.kind, f.vocab, f.band_edges) for f in a.fields] == [
        (f.name, f.kind, f.vocab, f.band_edges) for f in b.fields
    ]
    assert all(np.array_equal(f.values, g.values) for f, g in zip(a.fields, b.fields, strict=True))
    assert a.extras.keys() == b.extras.keys() and all(np.array_equal(a.extras[k], b.extras[k]) for k in a.extras)
    assert a.extra_labels == b.extra_labels
    assert a.report.to_dict() == b.report.to_dict() and a.report.skipped == b.report.skipped


@pytest.fixture
def raw_csv(tmp_path: Path) -> tuple[Path, Path]:
    """A shop with events, values, a repeated row, a bad row and a catalog with text, lists and numbers."""
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, size=600)
    lines = ["user_id,item_id,timestamp,event,value"]
    for k, u in enumerate(users):
        event = ["view", "cart", "buy", ""][k % 4]
        value = "" if k % 5 == 0 else f"{rng.integers(1, 6)}"
        lines.append(f"c{u},i{rng.integers(0, 70)},{1_700_000_000 + k * 37 % 5000},{event},{value}")
    lines.insert(50, lines[49])  # an exact repeat: dropped and counted
    lines.insert(89, "c3,i4,yesterday,view,1")  # a bad row at line 90 (index 0 is line 1)
    events = tmp_path / "events.csv"
    events.write_text("\n".join(lines) + "\n")
    catalog = tmp_path / "items.csv"
    rows = ["item_id,title,brand,tags,price"] + [
        f"i{i},Item number {i},B{i % 4},{'a|b' if i % 3 else 'c'},{10 + i * 1.5:.2f}" for i in range(75)
    ]
    catalog.write_text("\n".join(rows) + "\n")
    return events, catalog


def test_a_prepared_csv_is_the_same_dataset_as_the_raw_csv(raw_csv, tmp_path):
    events, catalog = raw_csv
    config = DataConfig(skip_bad_rows=True)
    raw = load_dataset(f"csv:{events}", catalog, config)
    assert raw.report.rows_skipped == 1 and raw.report.duplicates_dropped == 1 and raw.n_event_types == 3
    done = prepare(f"csv:{events}", tmp_path / "prepared", catalog, config)
    assert done.data.n_events == raw.n_events
    events.unlink()  # the prepared set never reads the raw files again
    catalog.unlink()
    again = load_dataset(f"prepared:{tmp_path / 'prepared'}", config=config)
    assert_same(again, raw)
    assert (tmp_path / "prepared" / "skipped_rows.csv").exists()


def test_a_prepared_scale_shop_keeps_its_causes(tmp_path):
    prepare(SMALL_SPEC, tmp_path / "p")
    assert_same(load_dataset(f"prepared:{tmp_path / 'p'}"), load_dataset(SMALL_SPEC))


def test_a_bad_csv_row_is_located_through_prepare(raw_csv, tmp_path):
    events, catalog = raw_csv
    result = cli("data", "prepare", f"csv:{events}", "--catalog", str(catalog), "--out", str(tmp_path / "p"))
    assert result.exit_code != 0
    with pytest.raises(DataError) as err:
        prepare(f"csv:{events}", tmp_path / "p", catalog)
    assert err.value.file == str(events) and err.value.row == 90 and err.value.column == "timestamp"
    assert "line 90" in str(err.value) and "'yesterday'" in str(err.value)
    assert not (tmp_path / "p" / "prepared.json").exists()  # nothing half-prepared to train on

    result = cli("data", "prepare", f"csv:{events}", "--catalog", str(catalog), "--out", str(tmp_path / "p"),
                 "--set", "data.skip_bad_rows=true")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad row(s)" in result.output and "line 90" in result.output
    data = load_dataset(f"prepared:{tmp_path / 'p'}", config=DataConfig(skip_bad_rows=True))
    assert data.report.rows_skipped == 1 and data.report.skipped[0].number == 90
    assert data.report.rows_read == data.report.rows_kept + 1 + data.report.duplicates_dropped


def test_a_prepared_set_refuses_other_loading_settings_and_damage(raw_csv, tmp_path):
    events, catalog = raw_csv
    out = tmp_path / "p"
    prepare(f"csv:{events}", out, catalog, DataConfig(skip_bad_rows=True))
    with pytest.raises(DataError, match=r"data.skip_bad_rows is False here, True when prepared"):
        load_dataset(f"prepared:{out}")
    # Split keys cut the loaded data: any of them reuses the same prepared set.
    load_dataset(f"prepared:{out}", config=DataConfig(skip_bad_rows=True, split="temporal"))
    with pytest.raises(DataError, match="--catalog and --map are for raw data"):
        load_dataset(f"prepared:{out}", catalog, DataConfig(skip_bad_rows=True))
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f"prepared:{tmp_path / 'nothing'}")
    (out / "data.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="damaged or missing"):
        load_dataset(f"prepared:{out}", config=DataConfig(skip_bad_rows=True))
    (out / "prepared.json").unlink()
    with pytest.raises(DataError, match="has no prepared.json"):
        load_dataset(f"prepared:{out}")
    # An unrelated folder is never written into.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="holds other files"):
        prepare(f"csv:{events}", tmp_path / "mine", catalog, DataConfig(skip_bad_rows=True))


def test_training_from_a_prepared_set_matches_training_from_the_raw_files(raw_csv, tmp_path):
    events, catalog = raw_csv
    skip = ["--set", "data.skip_bad_rows=true", "--set", "train.epochs=2"]
    result = cli("data", "prepare", f"csv:{events}", "--catalog", str(catalog), "--out", str(tmp_path / "p"), *skip)
    assert result.exit_code == 0, result.output
    valid = {}
    for name, data in (("raw", ["--data", f"csv:{events}", "--catalog", str(catalog)]),
                       ("prepared", ["--data", f"prepared:{tmp_path / 'p'}"])):  # fmt: skip
        result = cli("train", *data, "--out", str(tmp_path / name), "--config", str(TINY), *skip)
        assert result.exit_code == 0, result.output
        info = json.loads((tmp_path / name / "run.json").read_text())
        valid[name] = (info["state"]["best_valid"], info["data_fingerprint"])
    assert valid["raw"] == valid["prepared"] and valid["raw"][0]["NDCG@10"] > 0
    # The run of the prepared set evaluates and recommends from its own folder, as any run.
    result = cli("recommend", str(tmp_path / "prepared"), "--user", "c3", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
