"""The synthetic shop at any size: the same planted rules, vectorised, streamed to Parquet.

``recscope data generate --users N --items M --events E`` and the data spec
``synthetic:users=N,items=M,events=E,seed=S`` use this generator; the small shop without
``events=`` keeps :mod:`recscope.data.synthetic`'s one-purchase-at-a-time generator (the demo
and the tests read its exact output). Both plant the same mechanisms with the same cause
labels (see that module's docstring):

- ``accessory_after_device``: an accessory of a device bought in the last 12 purchases that has
  none yet (one per device). Cause: the device's position.
- ``brand_loyalty``: a non-accessory product, weighted by popularity, of the brand of one of the
  last 10 purchases. Cause: that purchase's position, when it is the only one of its brand.
- ``popularity``: a popular non-accessory product (noise). No single cause.
- ``category_interest``: a popular non-accessory product of a department drawn from the
  shopper's taste (Dirichlet(0.4) over departments). No single cause.

Nobody buys an item twice. Here every shopper's step t is drawn for a block of shoppers at
once (numpy, one row per shopper, one column per position), so there is no Python object per
event, and blocks are written as they are made: memory is bounded by the block, not the data.

Sizes are exact: ``items`` items (devices, each followed by its three accessories, take about
55% of them; the rest are regular products), ``users`` shoppers and ``events`` purchases. Each
shopper makes at least ``min(min_len, events // users)`` purchases; the rest are spread over
shoppers by a lognormal activity (some buy much more than others). Everything follows from
the seed: the catalog, the lengths and each block of shoppers have their own random streams.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from recscope.data.synthetic import ACCESSORIES, ADJECTIVES, BRANDS, DEPARTMENTS, MECHANISMS, PRICE_BASE, ShopConfig
from recscope.errors import DataError

BLOCK = 65_536  # shoppers drawn together: fixed, so the output does not depend on anything but the seed
MIN_ITEMS = 100  # every department and brand needs products for the rules to have something to pick
RECENT_DEVICES = 12  # an accessory follows one of the last 12 purchases (as in the small shop)
RECENT_ANCHORS = 10  # brand loyalty follows one of the last 10 purchases
REJECT_ROUNDS = 8  # redraws when a drawn item is already owned before the rule gives up
ACTIVITY_SIGMA = 0.5  # lognormal spread of how much each shopper buys beyond the floor
DEVICE_SHARE = 0.55  # share of the catalog in devices and their accessories (as in the small shop)
N_ACCESSORIES = 3  # per device; each device subcategory names three
EPOCH = 1_672_531_200  # 2023-01-01 UTC: timestamps are epoch seconds, read as such by every loader

ACCESSORY, BRAND, POPULARITY, CATEGORY = (
    MECHANISMS.index(m) for m in ("accessory_after_device", "brand_loyalty", "popularity", "category_interest")
)
REGULAR, DEVICE, ACCESSORY_KIND = 0, 1, 2

DEPARTMENT_NAMES = list(DEPARTMENTS)
SUBCATS = [(d, sub, is_device, nouns) for d, subs in DEPARTMENTS.items() for sub, is_device, nouns in subs]
DEVICE_SUBCATS = [s for s in SUBCATS if s[2]]
REGULAR_SUBCATS = [s for s in SUBCATS if not s[2]]
BRAND_NAMES = [b for d in DEPARTMENT_NAMES for b in BRANDS[d]]  # brand code -> name (brands belong to one department)


@dataclass
class Catalog:
    """The scale shop's catalog: the public columns, and the codes the rules draw from."""

    frame: pl.DataFrame  # item_id, title, brand, category ("Department|Subcategory"), price
    department: np.ndarray  # (M,) int64 department code
    brand: np.ndarray  # (M,) int64 brand code (one department per brand)
    kind: np.ndarray  # (M,) int8 REGULAR | DEVICE | ACCESSORY_KIND; accessories follow their device
    popularity: np.ndarray  # (M,) float64 zipf(1.6) capped at 200, as in the small shop

    @property
    def size(self) -> int:
        return len(self.kind)


class Groups(NamedTuple):
    """Non-accessory items grouped by a code, for drawing an item of a group by popularity."""

    order: np.ndarray  # (n,) item indices, grouped
    cum: np.ndarray  # (n,) cumulative popularity along ``order``
    start: np.ndarray  # (G,) first position of each group in ``order``
    end: np.ndarray  # (G,) one past its last position

    @classmethod
    def of(cls, key: np.ndarray, n_groups: int, catalog: Catalog) -> Groups:
        pool = np.flatnonzero(catalog.kind != ACCESSORY_KIND)
        order = pool[np.argsort(key[pool], kind="stable")]
        counts = np.bincount(key[order], minlength=n_groups)
        end = np.cumsum(counts)
        return cls(order, np.cumsum(catalog.popularity[order]), end - counts, end)

    def draw(self, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n,) one item per entry of ``group`` (n,), drawn by popularity within the group."""
        low = np.where(self.start[group] > 0, self.cum[self.start[group] - 1], 0.0)
        x = low + rng.random(len(group)) * (self.cum[self.end[group] - 1] - low)
        at = np.searchsorted(self.cum, x, side="right")
        return self.order[np.clip(at, self.start[group], self.end[group] - 1)]


def check(shop: ShopConfig) -> None:
    """Sizes the scale generator can honour, or a DataError saying which to change."""
    if shop.items < MIN_ITEMS:
        raise DataError(
            f"synthetic option items={shop.items} is too small for events= (every department needs products)",
            fix=f"use items={MIN_ITEMS} or more",
        )
    if shop.events < shop.users:
        raise DataError(
            f"synthetic option events={shop.events} is fewer than users={shop.users}: every shopper buys something",
            fix=f"use events={shop.users} or more, or fewer users",
        )
    if shop.impressions:
        raise DataError(
            "synthetic option impressions= is not available with events= (the scale generator makes purchases only)",
            fix="drop impressions=, or drop events= for the small shop with impressions",
        )


def make_catalog(shop: ShopConfig) -> Catalog:
    """``shop.items`` items: devices each followed by its accessories, then regular products."""
    rng = np.random.default_rng([shop.seed, 0])
    n = shop.items
    n_devices = _n_devices(n)
    n_regular = n - n_devices * (1 + N_ACCESSORIES)
    # Devices: subcategories in turn, then their department's brands in turn; j // 20 numbers the model.
    j = np.arange(n_devices)
    dev_sub = j % len(DEVICE_SUBCATS)
    dev_brand_slot = (j // len(DEVICE_SUBCATS)) % 4
    dev_number = j // (len(DEVICE_SUBCATS) * 4) + 1
    # Regular products: subcategories in turn, a random brand of the department.
    r = np.arange(n_regular)
    reg_sub = r % len(REGULAR_SUBCATS)
    reg_brand_slot = rng.integers(0, 4, size=n_regular)
    reg_number = r // len(REGULAR_SUBCATS) + 1

    def table(subcats, sub: np.ndarray, slot: np.ndarray, number: np.ndarray) -> pl.DataFrame:
        dept = np.array([DEPARTMENT_NAMES.index(s[0]) for s in subcats])[sub]
        # Subcategory s's nouns in turn: nouns[first[s] + (number - 1) % count[s]] of the flat list.
        count = np.array([len(s[3]) for s in subcats])
        first = np.cumsum(count) - count
        nouns = pl.Series([noun for s in subcats for noun in s[3]], dtype=pl.String)
        noun = nouns.gather(first[sub] + (number - 1) % count[sub])
        return pl.DataFrame(
            {
                "_department": dept,
                "_brand": dept * 4 + slot,
                "_sub": pl.Series([s[1] for s in subcats]).gather(sub),
                "_noun": noun,
                "_adj": pl.Series(ADJECTIVES).gather(rng.integers(0, len(ADJECTIVES), size=len(sub))),
                "_number": number,
            }
        )

    devices = table(DEVICE_SUBCATS, dev_sub, dev_brand_slot, dev_number)
    regular = table(REGULAR_SUBCATS, reg_sub, reg_brand_slot, reg_number)
    brand_name = pl.col("_brand").replace_strict(dict(enumerate(BRAND_NAMES)), return_dtype=pl.String)
    model = pl.concat_str(pl.col("_noun"), pl.col("_adj"), pl.col("_number").cast(pl.String), separator=" ")
    devices = devices.with_columns(_model=model, _b=brand_name)
    # Each device, then its accessories: row 4j is device j, rows 4j+1..4j+3 its accessories.
    acc_names = pl.Series([ACCESSORIES[s[1]] for s in DEVICE_SUBCATS]).gather(dev_sub)
    rows = pl.concat(
        [
            devices.with_columns(
                _kind=pl.lit(DEVICE, pl.Int8), title=pl.concat_str("_b", "_model", separator=" "), _slot=pl.lit(0)
            ),
            *(
                devices.with_columns(
                    _kind=pl.lit(ACCESSORY_KIND, pl.Int8),
                    title=pl.concat_str(pl.col("_b"), acc_names.list.get(a), pl.lit("for"), "_model", separator=" "),
                    _sub=pl.col("_sub") + " accessories",
                    _slot=pl.lit(a + 1),
                )
                for a in range(N_ACCESSORIES)
            ),
        ]
    )
    rows = rows.with_row_index("_device").with_columns(_device=pl.col("_device") % n_devices)
    rows = rows.sort("_device", "_slot").drop("_device", "_slot", "_model")
    regular = regular.with_columns(
        _kind=pl.lit(REGULAR, pl.Int8),
        _b=brand_name,
        title=pl.concat_str(brand_name, "_adj", "_noun", pl.col("_number").cast(pl.String), separator=" "),
    )
    rows = pl.concat([rows, regular.select(rows.columns)])
    kind = rows["_kind"].to_numpy()
    base = np.select([kind == DEVICE, kind == ACCESSORY_KIND], [PRICE_BASE["device"], PRICE_BASE["accessory"]])
    base = np.where(kind == REGULAR, PRICE_BASE["regular"], base)
    spread = np.select([kind == DEVICE, kind == ACCESSORY_KIND], [0.4, 0.5], 0.7)
    price = np.round(base * rng.lognormal(0.0, spread), 2)
    popularity = np.minimum(rng.zipf(1.6, size=n).astype(np.float64), 200.0)
    width = max(4, len(str(n)))
    frame = rows.select(
        item_id=pl.lit("P") + pl.int_range(1, n + 1).cast(pl.String).str.zfill(width),
        # Titles are unique for people to tell items apart (a repeat gets " (2)", as in the small shop).
        title=pl.when(pl.col("title").cum_count().over("title") > 1)
        .then(pl.format("{} ({})", "title", pl.col("title").cum_count().over("title")))
        .otherwise("title"),
        brand=pl.col("_b"),
        category=pl.concat_str(
            pl.col("_department").replace_strict(dict(enumerate(DEPARTMENT_NAMES)), return_dtype=pl.String),
            "_sub",
            separator="|",
        ),
        price=pl.Series(price),
    )
    return Catalog(
        frame,
        rows["_department"].to_numpy().astype(np.int64),
        rows["_brand"].to_numpy().astype(np.int64),
        kind,
        popularity,
    )


def _n_devices(items: int) -> int:
    return max(len(DEVICE_SUBCATS), int(DEVICE_SHARE * items) // (1 + N_ACCESSORIES))


def lengths(shop: ShopConfig) -> np.ndarray:
    """(users,) purchases per shopper, summing to ``shop.events`` exactly."""
    rng = np.random.default_rng([shop.seed, 1])
    floor = min(shop.min_len, shop.events // shop.users)
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, size=shop.users)
    extra = rng.multinomial(shop.events - floor * shop.users, activity / activity.sum())
    out = floor + extra
    # Nobody buys an item twice: half the non-accessory items leaves the draws room to find unowned ones.
    most = (shop.items - _n_devices(shop.items) * N_ACCESSORIES) // 2
    if out.max() > most:
        raise DataError(
            f"a shopper would make {out.max()} purchases, more than the {shop.items} items allow without repeats",
            fix="use more items or fewer events per user",
        )
    return out.astype(np.int64)


class Rules:
    """What the rules draw from: items by brand, by department and all of them (accessories aside)."""

    def __init__(self, shop: ShopConfig, catalog: Catalog) -> None:
        self.shop = shop
        self.catalog = catalog
        self.by_brand = Groups.of(catalog.brand, len(BRAND_NAMES), catalog)
        self.by_department = Groups.of(catalog.department, len(DEPARTMENT_NAMES), catalog)
        self.anything = Groups.of(np.zeros(catalog.size, dtype=np.int64), 1, catalog)

    def block(self, first_user: int, length: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
        """The purchases of shoppers ``first_user ..`` with ``length`` (B,) purchases each, in time order."""
        shop, kind = self.shop, self.catalog.kind
        n_users, steps = len(length), int(length.max())
        hist = np.zeros((n_users, steps), dtype=np.int64)  # (B, T) item bought at each step
        mechanism = np.zeros((n_users, steps), dtype=np.int8)  # (B, T) code into MECHANISMS
        cause = np.full((n_users, steps), -1, dtype=np.int64)  # (B, T) position of the single cause, or -1
        waiting = np.zeros((n_users, steps), dtype=bool)  # (B, T) a device none of whose accessories is bought
        taste = rng.dirichlet(np.full(len(DEPARTMENT_NAMES), 0.4), size=n_users).cumsum(axis=1)  # (B, D)
        for t in range(steps):
            users = np.flatnonzero(length > t)  # (n,) the shoppers who buy at step t
            item = np.full(len(users), -1, dtype=np.int64)
            mech = np.full(len(users), CATEGORY, dtype=np.int8)
            why = np.full(len(users), -1, dtype=np.int64)
            roll = rng.random(len(users))

            # An accessory of a recent device that has none yet; without one, another rule.
            low = max(0, t - RECENT_DEVICES)
            recent = waiting[users, low:t]  # (n, w)
            has = recent.any(axis=1)
            rows = np.flatnonzero((roll < shop.p_accessory) & has)
            if len(rows):
                chosen = (rng.random(len(rows)) * recent[rows].sum(axis=1)).astype(np.int64)  # k-th waiting device
                pos = low + np.argmax(recent[rows].cumsum(axis=1) > chosen[:, None], axis=1)
                item[rows] = hist[users[rows], pos] + 1 + rng.integers(0, N_ACCESSORIES, size=len(rows))
                mech[rows], why[rows] = ACCESSORY, pos
                waiting[users[rows], pos] = False
            fall = np.flatnonzero((roll < shop.p_accessory) & ~has)
            roll[fall] = shop.p_accessory + rng.random(len(fall)) * (1 - shop.p_accessory)

            # Brand loyalty: the brand of one of the last purchases, the cause when it is its brand's only one.
            rows = np.flatnonzero((item < 0) & (roll < shop.p_accessory + shop.p_brand)) if t else np.zeros(0, int)
            if len(rows):
                low = max(0, t - RECENT_ANCHORS)
                pos = low + (rng.random(len(rows)) * (t - low)).astype(np.int64)
                brand = self.catalog.brand[hist[users[rows], pos]]
                got = self._unowned(self.by_brand, brand, users[rows], hist[:, :t], rng)
                alone = (self.catalog.brand[hist[users[rows], :t]] == brand[:, None]).sum(axis=1) == 1
                ok = got >= 0
                item[rows[ok]], mech[rows[ok]] = got[ok], BRAND
                why[rows[ok]] = np.where(alone, pos, -1)[ok]

            # Popularity noise, then category interest for everything left.
            rows = np.flatnonzero((item < 0) & (roll > 1 - shop.p_popularity))
            got = self._unowned(self.anything, np.zeros(len(rows), dtype=np.int64), users[rows], hist[:, :t], rng)
            item[rows[got >= 0]], mech[rows[got >= 0]] = got[got >= 0], POPULARITY
            rows = np.flatnonzero(item < 0)
            department = (rng.random(len(rows))[:, None] > taste[users[rows]]).sum(axis=1)
            department = np.minimum(department, len(DEPARTMENT_NAMES) - 1)  # rounding at the top of the cumsum
            got = self._unowned(self.by_department, department, users[rows], hist[:, :t], rng)
            item[rows[got >= 0]], mech[rows[got >= 0]] = got[got >= 0], CATEGORY
            # A department bought out: any product not owned (the small shop does the same).
            rows = np.flatnonzero(item < 0)
            while len(rows):
                pool = self.anything.order
                item[rows] = pool[rng.integers(0, len(pool), size=len(rows))]
                rows = rows[(hist[users[rows], :t] == item[rows, None]).any(axis=1)]

            hist[users, t], mechanism[users, t], cause[users, t] = item, mech, why
            waiting[users, t] = kind[item] == DEVICE

        # Days 0..364 of 2023 to start, then 1..14 days and a random second between purchases.
        start = EPOCH + rng.integers(0, 365, size=n_users) * 86_400
        gaps = rng.integers(1, 15, size=(n_users, steps)) * 86_400 + rng.integers(0, 86_400, size=(n_users, steps))
        times = start[:, None] + np.concatenate([np.zeros((n_users, 1), np.int64), gaps[:, :-1].cumsum(axis=1)], axis=1)
        bought = np.arange(steps)[None, :] < length[:, None]  # (B, T) row-major: users in order, then time
        width = max(5, len(str(self.shop.users - 1)))
        users_of = pl.Series(np.repeat(np.arange(first_user, first_user + n_users), length))
        return pl.DataFrame(
            {
                "user_id": "U" + users_of.cast(pl.String).str.zfill(width),
                "item_id": self.catalog.frame["item_id"].gather(hist[bought]),
                "timestamp": times[bought],
                "mechanism": mechanism[bought].astype(np.int64),
                "cause": cause[bought],
            }
        )

    @staticmethod
    def _unowned(
        groups: Groups, group: np.ndarray, users: np.ndarray, owned: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """(n,) an item of each ``group`` by popularity that ``users``' rows of ``owned`` (B, t) do not
        hold, or -1 where REJECT_ROUNDS draws all hit owned items."""
        item = groups.draw(group, rng)
        again = np.flatnonzero((owned[users] == item[:, None]).any(axis=1))
        for _ in range(REJECT_ROUNDS):
            if not len(again):
                break
            item[again] = groups.draw(group[again], rng)
            again = again[(owned[users[again]] == item[again, None]).any(axis=1)]
        item[again] = -1
        return item


def blocks(shop: ShopConfig, catalog: Catalog) -> Iterator[pl.DataFrame]:
    """The interactions, a block of shoppers at a time (user_id, item_id, timestamp, mechanism, cause)."""
    check(shop)
    per_user = lengths(shop)
    rules = Rules(shop, catalog)
    for b, first in enumerate(range(0, shop.users, BLOCK)):
        yield rules.block(first, per_user[first : first + BLOCK], np.random.default_rng([shop.seed, 2, b]))


def frames(shop: ShopConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(interactions, catalog) in memory, for the data spec ``synthetic:...,events=E``."""
    check(shop)
    catalog = make_catalog(shop)
    return pl.concat(list(blocks(shop, catalog))), catalog.frame


class Written(NamedTuple):
    interactions: Path
    catalog: Path
    users: int
    items: int
    events: int
    seconds: float


def write(shop: ShopConfig, out: Path) -> Written:
    """``out/interactions.parquet`` and ``out/catalog.parquet``, written block by block."""
    check(shop)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    catalog = make_catalog(shop)
    catalog_path, events_path = out / "catalog.parquet", out / "interactions.parquet"
    catalog.frame.write_parquet(catalog_path)
    writer = None
    events = 0
    tmp = events_path.with_name(events_path.name + ".tmp")  # a crash never leaves half a file under the name
    try:
        for frame in blocks(shop, catalog):
            table = frame.to_arrow()
            writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
            events += frame.height
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(events_path)
    return Written(events_path, catalog_path, shop.users, shop.items, events, time.perf_counter() - started)
