"""The drifting synthetic shop (``synthetic:drift=F``): the planted change and its truth."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest
from tests.conftest import TINY_SPEC

from recscope.data import load_dataset
from recscope.data.synthetic import (
    DRIFT_MECHANISMS,
    MECHANISMS,
    NEW_BRAND,
    generate,
    generate_drifting,
    generate_with_impressions,
    parse_spec,
)
from recscope.errors import DataError

SHOP = TINY_SPEC.partition(":")[2]  # users=200,items=120,seed=5
LAUNCH, FASHION = len(MECHANISMS), len(MECHANISMS) + 1
# sha256 (first 16 hex digits) of the tiny shop's interactions and catalog as CSV, from the
# generator before drift existed: the shop without drift must not move by a byte.
TINY_SHOP_SHA = "2dd623b1a3350d83"


@pytest.fixture(scope="module")
def drifting():
    return generate_drifting(parse_spec(f"{SHOP},drift=0.5"))


@pytest.fixture(scope="module")
def plain():
    return generate(parse_spec(SHOP))


def test_the_shop_without_drift_is_byte_identical(plain):
    interactions, catalog = plain
    digest = hashlib.sha256(interactions.write_csv().encode() + catalog.write_csv().encode()).hexdigest()
    assert digest[:16] == TINY_SHOP_SHA
    again, _, _ = generate_with_impressions(parse_spec(f"{SHOP},drift=0"))
    assert again.equals(interactions)


def test_up_to_the_change_the_drifting_shop_is_the_shop_without_it(drifting, plain):
    interactions, catalog, change = drifting
    before, plain_catalog = plain
    assert catalog.head(plain_catalog.height).equals(plain_catalog)
    assert change.time == pytest.approx(before["timestamp"].quantile(0.5, "linear"))
    early = interactions.filter(pl.col("timestamp") <= change.time)
    assert early.equals(before.filter(pl.col("timestamp") <= change.time))
    # After it, every purchase of the shop without the change is still there, at its time, and
    # its cause (a position that moved with the inserted purchases) still names the same item.
    own = interactions.with_columns(pl.int_range(pl.len()).over("user_id").alias("at"))
    kept = own.filter(pl.col("mechanism") < LAUNCH)
    assert kept.drop("cause", "at").equals(before.drop("cause"))
    items = {(u, p): i for u, p, i in own.select("user_id", "at", "item_id").iter_rows()}
    plain_items = {(u, p): i for u, p, i in before.with_row_index().select("user_id", "index", "item_id").iter_rows()}
    starts = before.with_row_index().group_by("user_id").agg(pl.col("index").min()).rows()
    first = dict(starts)
    for user, cause_now, cause_then in zip(kept["user_id"], kept["cause"], before["cause"], strict=True):
        if cause_then >= 0:
            assert items[(user, cause_now)] == plain_items[(user, first[user] + cause_then)]


def test_the_planted_purchases_follow_the_change_by_their_rules(drifting):
    interactions, catalog, change = drifting
    brand = dict(zip(catalog["item_id"], catalog["brand"], strict=True))
    category = dict(zip(catalog["item_id"], catalog["category"], strict=True))
    assert change.brand == NEW_BRAND
    assert set(change.items) == {i for i, b in brand.items() if b == NEW_BRAND}
    assert len(change.items) == 16  # 8 regular subcategories x 2 (a quarter of the shop's 5, at least 2)
    counts = {m: 0 for m in (LAUNCH, FASHION)}
    for _, rows in interactions.group_by("user_id", maintain_order=True):
        bought = rows["item_id"].to_list()
        assert len(set(bought)) == len(bought)  # nobody buys an item twice
        assert rows["timestamp"].is_sorted()
        planted = rows.select("item_id", "timestamp", "mechanism", "cause").rows()
        for p, (item, t, mechanism, cause) in enumerate(planted):
            assert (item in change.items) <= (t > change.time)  # nobody buys the new brand before it launches
            if mechanism == LAUNCH:
                assert brand[item] == NEW_BRAND and cause == p - 1 >= 0
                assert category[item].split("|")[0] == category[bought[cause]].split("|")[0]
            if mechanism == FASHION:
                assert category[item] == change.category and cause == -1 and t > change.time
            counts[mechanism] = counts.get(mechanism, 0) + 1
    assert counts[LAUNCH] > 300 and counts[FASHION] > 150
    # The fashionable category's share of purchases jumps at the change.
    fashionable = interactions.with_columns(
        pl.col("item_id").replace_strict(category, return_dtype=pl.String).eq(change.category).alias("hot"),
        (pl.col("timestamp") > change.time).alias("after"),
    )
    share = dict(fashionable.group_by("after").agg(pl.col("hot").mean()).rows())
    assert share[True] > 2 * share[False]


def test_the_drifting_shop_loads_with_its_mechanisms_and_is_seeded():
    data = load_dataset(f"synthetic:{SHOP},drift=0.5")
    assert data.extra_labels == {"mechanism": MECHANISMS + DRIFT_MECHANISMS}
    assert set(data.extras["mechanism"].tolist()) == set(range(len(MECHANISMS) + len(DRIFT_MECHANISMS)))
    assert data.find(generate_drifting(parse_spec(f"{SHOP},drift=0.5"))[2].items[-1]) is not None
    one = generate_drifting(parse_spec(f"{SHOP},drift=0.3,p_launch=0.1,p_fashion=0.4"))
    again = generate_drifting(parse_spec(f"{SHOP},drift=0.3,p_launch=0.1,p_fashion=0.4"))
    assert one[0].equals(again[0]) and one[2] == again[2]
    shares = one[0]["mechanism"].value_counts().sort("mechanism")["count"].to_list()
    assert shares[FASHION] > shares[LAUNCH]  # the options are read


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("drift=1", "drift=1.0 must be 0 (no change) or more, and below 1; how to fix: e.g. drift=0.5"),
        ("drift=soon", "drift='soon' is not a number; how to fix: e.g. drift=0.5"),
        ("p_launch=0.2", "p_launch= applies only to a drifting shop"),
        ("drift=0.5,p_fashion=1.5", "p_fashion=1.5 must be a probability from 0 to 1"),
        ("drift=0.5,p_launch=0.7,p_fashion=0.6", "p_launch + p_fashion add up to 1.3, more than 1"),
        ("drift=0.5,users=100,items=200,events=500", "drift= is for the small shop"),
        ("drift=0.5,impressions=3", "drift= and impressions= do not go together"),
    ],
)
def test_bad_drift_options_say_what_to_change(spec, says):
    with pytest.raises(DataError) as error:
        load_dataset(f"synthetic:{spec}")
    assert says in str(error.value)
