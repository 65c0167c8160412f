"""data.attribute_columns: which catalog columns become attribute fields (default: every one).

Real files in tmp_path, loaded the way `recscope train --data csv:... --catalog ...` loads them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recscope import config
from recscope.config import DataConfig
from recscope.data import load_dataset
from recscope.data.prepare import prepare
from recscope.errors import ConfigError, DataError

SCRIPT = Path(sys.executable).parent / "recscope"

EVENTS = "user_id,item_id,timestamp\nu1,p1,1\nu1,p2,2\nu2,p2,3\nu2,p3,4\n"
CATALOG = (
    "item_id,title,brand,category,price,image_url\n"
    "p1,Voltra Phone,Voltra,Electronics|Phones,399,https://img.example/p1.jpg\n"
    "p2,Voltra Case,Voltra,Electronics|Accessories,19,https://img.example/p2.jpg\n"
    "p3,Petal Serum,Petal,Beauty,25,https://img.example/p3.jpg\n"
)


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, Path]:
    events, catalog = tmp_path / "events.csv", tmp_path / "catalog.csv"
    events.write_text(EVENTS)
    catalog.write_text(CATALOG)
    return events, catalog


def load(shop: tuple[Path, Path], **data) -> object:
    events, catalog = shop
    return load_dataset(f"csv:{events}", catalog, DataConfig(**data))


def fields(dataset) -> dict[str, str]:
    return {f.name: f.kind for f in dataset.fields}


def test_by_default_every_column_but_the_id_and_the_text_is_an_attribute(shop):
    data = load(shop)
    # today's behaviour, kept as the default: an image URL is read as a category of its own
    assert fields(data) == {"brand": "categorical", "category": "multi", "price": "numeric", "image_url": "categorical"}
    assert list(data.texts) == ["title"]
    assert config.Config().data.attribute_columns is None


def test_naming_the_attributes_keeps_the_others_out_and_the_text_in(shop):
    data = load(shop, attribute_columns=("price", "brand"))
    assert fields(data) == {"brand": "categorical", "price": "numeric"}  # in the file's order
    assert list(data.texts) == ["title"]  # text columns follow data.text_columns, not this list
    assert data.titles[data.item_index("p3")] == "Petal Serum"
    brand = data.fields[0]
    assert brand.labels(data.item_index("p1")) == ["Voltra"] and brand.labels(data.item_index("p3")) == ["Petal"]


def test_an_empty_list_reads_no_attribute(shop):
    data = load(shop, attribute_columns=())
    assert data.fields == [] and list(data.texts) == ["title"]


def test_an_absent_column_names_the_file_the_column_and_the_columns_present(shop):
    _, catalog = shop
    with pytest.raises(DataError) as caught:
        load(shop, attribute_columns=("brand", "colour"))
    err = caught.value
    assert err.file == str(catalog) and err.column == "colour"
    message = str(err)
    assert str(catalog) in message and "'colour'" in message
    assert "its columns: item_id, title, brand, category, price, image_url" in message


def test_a_name_in_the_wrong_case_is_pointed_at(shop):
    with pytest.raises(DataError, match="column 'Brand'.*write it as 'brand': column names are exact"):
        load(shop, attribute_columns=("Brand",))


def test_the_id_column_keeps_its_mapped_name_in_the_message(tmp_path):
    (tmp_path / "events.csv").write_text(EVENTS.replace("item_id", "sku"))  # --map names both files' column
    (tmp_path / "catalog.csv").write_text("sku,title,brand\np1,A,X\np2,B,Y\np3,C,X\n")
    with pytest.raises(DataError, match=r"its columns: sku, title, brand\)"):
        load_dataset(
            f"csv:{tmp_path / 'events.csv'}",
            tmp_path / "catalog.csv",
            DataConfig(attribute_columns=("size",)),
            {"item_id": "sku"},
        )


def test_attributes_without_a_catalog_are_an_error_and_none_are_not(shop):
    events, _ = shop
    with pytest.raises(DataError, match="no catalog to read them from.*--catalog FILE"):
        load_dataset(f"csv:{events}", None, DataConfig(attribute_columns=("brand",)))
    assert load_dataset(f"csv:{events}", None, DataConfig(attribute_columns=())).fields == []


def test_a_column_left_out_is_not_read_at_all(tmp_path):
    """A parquet column recscope cannot read (a struct) is an error only when it is read."""
    events = tmp_path / "events.csv"
    events.write_text(EVENTS)
    catalog = tmp_path / "catalog.parquet"
    pl.DataFrame(
        {
            "item_id": ["p1", "p2", "p3"],
            "brand": ["Voltra", "Voltra", "Petal"],
            "size": [{"w": 1, "h": 2}, {"w": 3, "h": 4}, {"w": 5, "h": 6}],
        }
    ).write_parquet(catalog)
    with pytest.raises(DataError, match="column 'size'"):
        load_dataset(f"csv:{events}", catalog)
    data = load_dataset(f"csv:{events}", catalog, DataConfig(attribute_columns=("brand",)))
    assert fields(data) == {"brand": "categorical"}


def test_s3rec_metadata_is_chosen_from_too(tmp_path):
    (tmp_path / "Shop.txt").write_text("u1 1 2\nu2 2 3\n")
    attributes = tmp_path / "Shop_item2attributes.json"
    attributes.write_text(json.dumps({"1": [10], "2": [11], "3": [10, 12]}))
    (tmp_path / "Shop_item2title.json").write_text(json.dumps({"1": "A", "2": "B", "3": "C"}))
    spec = f"s3rec:{tmp_path / 'Shop.txt'}"
    assert fields(load_dataset(spec)) == {"attribute": "multi"}
    assert load_dataset(spec, config=DataConfig(attribute_columns=())).fields == []
    with pytest.raises(DataError) as caught:
        load_dataset(spec, config=DataConfig(attribute_columns=("genre",)))
    assert caught.value.file == str(attributes) and "its columns: item_id, attribute, title" in str(caught.value)


def test_the_synthetic_shop_honours_it():
    data = load_dataset("synthetic:users=60,items=100", config=DataConfig(attribute_columns=("category",)))
    assert fields(data) == {"category": "multi"} and list(data.texts) == ["title"]


def test_a_prepared_data_set_remembers_its_choice(shop, tmp_path):
    events, catalog = shop
    prepare(f"csv:{events}", tmp_path / "prep", catalog, DataConfig(attribute_columns=("brand",)))
    assert fields(load_dataset(f"prepared:{tmp_path / 'prep'}", config=DataConfig(attribute_columns=("brand",)))) == {
        "brand": "categorical"
    }
    with pytest.raises(DataError, match=r"data.attribute_columns is None here, \['brand'\] when prepared"):
        load_dataset(f"prepared:{tmp_path / 'prep'}")


@pytest.mark.parametrize(
    ("override", "piece"),
    [
        ("data.attribute_columns=[item_id]", "other than item_id"),
        ("data.attribute_columns=[brand, brand]", "distinct"),
        ("data.attribute_columns=[Title]", "data.attribute_columns and data.text_columns both name 'Title'"),
        ("data.attribute_columns=brand", "must be a list"),
    ],
)
def test_bad_values_are_config_errors(override, piece):
    with pytest.raises(ConfigError, match=piece):
        config.load(None, [override])


def test_set_and_yaml_give_the_same_lists(tmp_path):
    assert config.load(None, ["data.attribute_columns=[brand, price]"]).data.attribute_columns == ("brand", "price")
    assert config.load(None, ["data.attribute_columns=[]"]).data.attribute_columns == ()
    assert config.load(None, ["data.attribute_columns=null"]).data.attribute_columns is None
    path = tmp_path / "shop.yaml"
    path.write_text("data:\n  attribute_columns: [brand]\n")
    loaded = config.load(path)
    assert loaded.data.attribute_columns == ("brand",)
    assert config.Config.from_dict(loaded.to_dict()) == loaded  # as run.json stores it


def test_the_command_line_says_it_in_one_line(shop, tmp_path):
    events, catalog = shop
    env = {**os.environ, "COLUMNS": "400"}
    args = ["data", "prepare", f"csv:{events}", "--catalog", str(catalog), "--out", str(tmp_path / "prep")]
    done = subprocess.run(
        [str(SCRIPT), *args, "--set", "data.attribute_columns=[brand, colour]"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert f"{catalog}, column 'colour'" in lines[0] and "its columns: item_id, title" in lines[0]
