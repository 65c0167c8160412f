"""The built-in synthetic shop: a deterministic catalog and users whose purchases have planted causes.

Every purchase records the mechanism that produced it and, when one history item alone
caused it, that item's position in the user's history: the ground truth that scores
explanations. Mechanisms:

- ``accessory_after_device``: an accessory made for a device the user bought earlier
  (same brand, the accessory names the device model; one accessory per device). Cause: the device.
- ``brand_loyalty``: another product of a brand the user bought before, in the same
  department. Cause: that earlier item, when it is the only one of its brand in the history.
- ``category_interest``: a product from the user's favourite departments. No single cause.
- ``popularity``: a popular product, whatever the user's taste (noise). No single cause.

``synthetic:users=3000,items=700,seed=0`` changes the size and seed.

``synthetic:users=1000000,items=1000000,events=10000000`` is the same shop at scale: the
same rules and cause labels, drawn vectorised by :mod:`recscope.data.scale` (exact sizes;
each shopper's number of purchases follows from ``events``, so ``max_len`` does not apply).

``synthetic:impressions=5`` also shows each shopper, at every purchase after the first, a
list of 5 other items, clicked or not (click data for ``train.task=click``). The planted
click behaviour: an item's click chance grows with its own appeal (the same for everyone:
what popularity-CTR can learn) and, much more, when the shopper's history relates to it by
the shop's rules: an accessory for a device they own, the brand of an earlier item in the
same department, a department they buy from. Impressions come from their own random stream
after the purchases, so the purchases are the same with or without them.

``synthetic:drift=0.5`` is a drifting shop with a planted change: at the time by which half
(0.5) of the shop's purchases are made, a new brand, ``NEW_BRAND``, launches (its items are in
the catalog from the start, a few per regular subcategory, and nobody buys one before the
change) and one regular subcategory, drawn by the seed, becomes fashionable. Every purchase of
the shop without the change is kept as it is, with its time, mechanism and cause; after the
change, before each purchase that follows at least one other, the shopper also buys, with
chance ``p_launch``, an item of the new brand in the department of their latest purchase
(mechanism ``launch``, cause: that latest purchase), else with chance ``p_fashion`` an item of
the fashionable subcategory, whatever their taste (``fashion``, no single cause). Both are
drawn from their own random stream, so the shop up to the change is exactly the shop without
it; :func:`generate_drifting` also returns the :class:`Change` (its time, the brand and its
items, the fashionable category).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import numpy as np
import polars as pl

from recscope.config import DataConfig
from recscope.data.dataset import Dataset, Impressions, LoadReport, from_frames
from recscope.data.rows import choose_columns
from recscope.errors import DataError

MECHANISMS = ["category_interest", "accessory_after_device", "brand_loyalty", "popularity"]
DRIFT_MECHANISMS = ["launch", "fashion"]  # a drifting shop's purchases that follow its change (codes after MECHANISMS)
NEW_BRAND = "Orbita"  # the brand a drifting shop launches: in no department's BRANDS

# department -> (subcategory, is_device_category, nouns)
DEPARTMENTS: dict[str, list[tuple[str, bool, list[str]]]] = {
    "Electronics": [
        ("Phones", True, ["Phone"]),
        ("Laptops", True, ["Laptop", "Notebook"]),
        ("Cameras", True, ["Camera"]),
        ("Audio", False, ["Earbuds", "Speaker", "Headphones", "Soundbar"]),
    ],
    "Home": [
        ("Coffee machines", True, ["Espresso Machine", "Coffee Maker"]),
        ("Kitchen", False, ["Knife Set", "Pan", "Kettle", "Blender", "Cutting Board"]),
        ("Decor", False, ["Lamp", "Vase", "Rug", "Cushion", "Mirror"]),
    ],
    "Sports": [
        ("Bikes", True, ["Road Bike", "Mountain Bike"]),
        ("Running", False, ["Running Shoes", "Shorts", "Watch", "Jacket"]),
        ("Yoga", False, ["Yoga Mat", "Block", "Strap", "Leggings"]),
    ],
    "Beauty": [
        ("Skincare", False, ["Serum", "Moisturizer", "Cleanser", "Sunscreen", "Toner"]),
        ("Makeup", False, ["Lipstick", "Mascara", "Foundation", "Palette"]),
        ("Hair", False, ["Shampoo", "Conditioner", "Hair Oil", "Dryer"]),
    ],
}
ACCESSORIES = {
    "Phones": ["Case", "Screen Protector", "Charger"],
    "Laptops": ["Sleeve", "Dock", "Charger"],
    "Cameras": ["Lens", "Tripod", "Memory Card"],
    "Coffee machines": ["Descaler", "Milk Frother", "Filter Pack"],
    "Bikes": ["Helmet", "Bike Light", "Lock"],
}
BRANDS = {
    "Electronics": ["Voltra", "Nimbus", "Quanta", "Pixelo"],
    "Home": ["Casa", "Brewster", "Hearth", "Lumen"],
    "Sports": ["Stride", "Apex", "Zenfit", "Velo"],
    "Beauty": ["Glow", "Petal", "Aurea", "Silk"],
}
ADJECTIVES = ["Classic", "Pro", "Lite", "Ultra", "Eco", "Smart", "Mini", "Max", "Air", "Prime"]
PRICE_BASE = {"device": 600.0, "accessory": 30.0, "regular": 45.0}


@dataclass(frozen=True)
class ShopConfig:
    users: int = 3000  # (int) shoppers
    items: int = 700  # (int) approximate catalog size
    seed: int = 0  # (int) everything follows from this seed
    min_len: int = 6  # (int) shortest purchase history
    max_len: int = 30  # (int) longest purchase history
    p_accessory: float = 0.45  # (float) chance a purchase is an accessory for an owned device
    p_brand: float = 0.25  # (float) chance a purchase follows brand loyalty
    p_popularity: float = 0.1  # (float) chance a purchase is popularity noise
    impressions: int = 0  # (int) items shown (clicked or not) at each purchase after the first; 0 = none
    # (int) > 0: exactly this many purchases over exactly ``items`` items, drawn by the vectorised
    # generator of recscope.data.scale (any size); 0 = the small shop of this module
    events: int = 0
    # (float) 0 = no change; from 0 to 1: the shop changes when this share of its purchases is made
    # (a brand launches, a category becomes fashionable; see the module's docstring)
    drift: float = 0.0
    p_launch: float = 0.3  # (float) with drift: chance a purchase after the change is preceded by one of the new brand
    p_fashion: float = 0.15  # (float) with drift: else chance it is preceded by one of the fashionable category


PROBABILITIES = ("p_accessory", "p_brand", "p_popularity")
DRIFT_OPTIONS = ("p_launch", "p_fashion")
EXAMPLES = {"drift": 0.5}  # what an error suggests where the default (no change) would not help


@dataclass(frozen=True)
class Change:
    """A drifting shop's planted change: what a model should follow after ``time``."""

    time: float  # epoch seconds: the purchases after it may follow the change (mechanism launch or fashion)
    brand: str  # the launched brand
    items: tuple[str, ...]  # its item ids, in catalog order (after the shop's own items)
    category: str  # the fashionable subcategory, as the catalog's category column writes it ("Home|Decor")


def parse_spec(rest: str) -> ShopConfig:
    known = {f.name: f.type for f in fields(ShopConfig)}
    values: dict[str, object] = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in known:
            raise DataError(
                f"synthetic option {part!r} is not key=value with a known key",
                fix=f"known keys: {', '.join(known)}; e.g. synthetic:users=500,seed=1",
            )
        if key in values:
            raise DataError(f"synthetic option {key} is given twice", fix=f"give {key}= once")
        is_float = known[key] in ("float", float)
        try:
            values[key] = float(value) if is_float else int(value)
        except ValueError:
            kind = "a number" if is_float else "a whole number"
            raise DataError(
                f"synthetic option {key}={value!r} is not {kind}", fix=f"e.g. {key}={EXAMPLES.get(key, 3)}"
            ) from None
    shop = ShopConfig(**values)
    limits = [
        ("users", shop.users >= 1, "at least 1"),
        ("items", shop.items >= 1, "at least 1"),
        ("seed", shop.seed >= 0, "0 or more"),
        ("min_len", shop.min_len >= 1, "at least 1"),
        ("max_len", shop.max_len >= shop.min_len, f"at least min_len ({shop.min_len})"),
        ("impressions", 0 <= shop.impressions <= 100, "from 0 to 100"),
        ("events", shop.events >= 0, "0 (the small shop) or more"),
        ("drift", 0.0 <= shop.drift < 1.0, "0 (no change) or more, and below 1"),
        *((p, 0.0 <= getattr(shop, p) <= 1.0, "a probability from 0 to 1") for p in PROBABILITIES + DRIFT_OPTIONS),
    ]
    for key, ok, should in limits:
        if not ok:
            default = EXAMPLES.get(key, getattr(ShopConfig(), key))
            raise DataError(
                f"synthetic option {key}={getattr(shop, key)} must be {should}", fix=f"e.g. {key}={default}"
            )
    total = sum(getattr(shop, p) for p in PROBABILITIES)
    if total > 1.0:
        raise DataError(
            f"synthetic options {' + '.join(PROBABILITIES)} add up to {total:g}, more than 1",
            fix="lower one of them (the rest of the purchases follow category interest)",
        )
    if shop.events and "max_len" in values:
        raise DataError(
            "synthetic option max_len= does not apply with events= (the events set how much each shopper buys)",
            fix="drop max_len=, or drop events= for the small shop",
        )
    _check_drift(shop, values)
    return shop


def _check_drift(shop: ShopConfig, given: dict[str, object]) -> None:
    """The drift options make sense together and with the rest of the spec."""
    if not shop.drift:
        lonely = [k for k in DRIFT_OPTIONS if k in given]
        if lonely:
            raise DataError(
                f"synthetic option {lonely[0]}= applies only to a drifting shop, and drift= is not given",
                fix=f"add drift=0.5 (the change at half the purchases), or drop {lonely[0]}=",
            )
        return
    if shop.events:
        raise DataError(
            "synthetic option drift= is for the small shop: the vectorised generator of events= plants no change",
            fix="drop events= (use users= and items= to size the shop), or drop drift=",
        )
    if shop.impressions:
        raise DataError(
            "synthetic options drift= and impressions= do not go together: impressions are drawn over the "
            "purchases without the change",
            fix="drop impressions= (or drift=)",
        )
    if shop.p_launch + shop.p_fashion > 1.0:
        raise DataError(
            f"synthetic options p_launch + p_fashion add up to {shop.p_launch + shop.p_fashion:g}, more than 1",
            fix="lower one of them (the rest of the purchases after the change are the shop's own only)",
        )


def load_synthetic(rest: str, config: DataConfig) -> Dataset:
    shop = parse_spec(rest)
    if shop.events:
        from recscope.data.scale import frames

        interactions, catalog = frames(shop)
        shown = None
    elif shop.drift:
        interactions, catalog, _ = generate_drifting(shop)
        shown = None
    else:
        interactions, catalog, shown = generate_with_impressions(shop)
    name = "synthetic" + (f"-{rest.replace(',', '-').replace('=', '')}" if rest else "")
    generated = LoadReport(rows_read=interactions.height, rows_kept=interactions.height)
    data = from_frames(
        name,
        interactions,
        choose_columns(catalog, config, f"the catalog of synthetic:{rest}"),
        price_bands=config.price_bands,
        list_separator=config.list_separator,
        report=generated,
        extra_labels={"mechanism": MECHANISMS + (DRIFT_MECHANISMS if shop.drift else [])},
        text_columns=config.text_columns,
    )
    if shown is not None:
        users, hist_len, items, clicked = shown
        user_index = np.array([data.find_user(f"U{u:05d}") for u in range(shop.users)] + [-1])
        item_index = np.array([data.find(i) for i in catalog["item_id"]])
        data.impressions = Impressions(user_index[users], hist_len, item_index[items], clicked)
        generated.notes.append(
            f"{len(users):,} impressions ({int(clicked.sum()):,} clicked): the click task (train.task=click) "
            "learns from them; the other tasks do not read them"
        )
    return data


def generate(shop: ShopConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(interactions, catalog). Interactions carry ``mechanism`` (code) and ``cause`` (position or -1)."""
    if shop.drift:
        interactions, catalog, _ = generate_drifting(shop)
        return interactions, catalog
    interactions, catalog, _ = generate_with_impressions(dataclasses.replace(shop, impressions=0))
    return interactions, catalog


def generate_drifting(shop: ShopConfig) -> tuple[pl.DataFrame, pl.DataFrame, Change]:
    """(interactions, catalog, change) of a drifting shop (``shop.drift`` > 0): the shop without
    the change, its launched brand's items appended to the catalog and the purchases that follow
    the change inserted (see the module's docstring). Mechanism codes index
    ``MECHANISMS + DRIFT_MECHANISMS``."""
    if not shop.drift:
        raise ValueError("generate_drifting needs a shop with drift > 0")
    interactions, catalog, _ = generate_with_impressions(dataclasses.replace(shop, impressions=0))
    rng = np.random.default_rng([shop.seed, 2])  # its own stream: the shop without the change is untouched
    catalog, launched = _launch_brand(catalog, rng)
    category = dict(zip(catalog["item_id"], catalog["category"], strict=True))
    regular = sorted({category[i] for i in launched})  # the new brand is in every regular subcategory
    fashionable = regular[int(rng.integers(len(regular)))]
    change = Change(
        time=float(np.quantile(interactions["timestamp"].to_numpy(), shop.drift)),
        brand=NEW_BRAND,
        items=tuple(launched),
        category=fashionable,
    )
    return _insert_followers(shop, interactions, catalog, change, rng), catalog, change


def _launch_brand(catalog: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, list[str]]:
    """The catalog with the new brand's items appended: a quarter as many per regular
    subcategory as the shop's brands have there together (2 at least), priced as regular items."""
    categories = catalog["category"].to_list()
    titles = set(catalog["title"])
    rows: dict[str, list] = {c: [] for c in catalog.columns}
    for dept, subcats in DEPARTMENTS.items():
        for sub, is_device, nouns in subcats:
            if is_device:
                continue
            for k in range(max(2, categories.count(f"{dept}|{sub}") // 4)):
                title = f"{NEW_BRAND} {ADJECTIVES[rng.integers(len(ADJECTIVES))]} {nouns[k % len(nouns)]}"
                unique, n = title, 1
                while unique in titles:
                    n += 1
                    unique = f"{title} ({n})"
                titles.add(unique)
                rows["item_id"].append(f"P{catalog.height + len(rows['item_id']) + 1:04d}")
                rows["title"].append(unique)
                rows["brand"].append(NEW_BRAND)
                rows["category"].append(f"{dept}|{sub}")
                rows["price"].append(f"{PRICE_BASE['regular'] * rng.lognormal(0, 0.7):.2f}")
    return pl.concat([catalog, pl.DataFrame(rows)]), rows["item_id"]


def _insert_followers(
    shop: ShopConfig, interactions: pl.DataFrame, catalog: pl.DataFrame, change: Change, rng: np.random.Generator
) -> pl.DataFrame:
    """The purchases that follow the change, each inserted just before a purchase after it
    (at a time drawn between that purchase and the one before it, or the change); the causes
    of the shop's own purchases move with the positions they point at."""
    item_ids = catalog["item_id"].to_list()
    department = {i: c.split("|")[0] for i, c in zip(item_ids, catalog["category"], strict=True)}
    # A shop item is picked as often as it sold before (+1); the launched ones, which never sold, alike.
    popularity = dict.fromkeys(item_ids, 1.0)
    for item in interactions["item_id"].filter(interactions["timestamp"] <= change.time):
        popularity[item] += 1.0
    launched_in: dict[str, list[str]] = {}
    for item in change.items:
        launched_in.setdefault(department[item], []).append(item)
    fashionable = [i for i, c in zip(item_ids, catalog["category"], strict=True) if c == change.category]
    launch, fashion = len(MECHANISMS), len(MECHANISMS) + 1

    def pick(pool: list[str], owned: set[str]) -> str | None:
        free = [i for i in pool if i not in owned]
        if not free:
            return None
        weights = np.array([popularity[i] for i in free])
        return free[int(rng.choice(len(free), p=weights / weights.sum()))]

    columns = {c: interactions[c].to_list() for c in interactions.columns}
    out: dict[str, list] = {c: [] for c in interactions.columns}
    users = columns["user_id"]
    starts = [j for j in range(len(users)) if j == 0 or users[j] != users[j - 1]] + [len(users)]
    for start, end in zip(starts[:-1], starts[1:], strict=True):
        owned = set(columns["item_id"][start:end])
        moved = []  # the new position of each of the shopper's own purchases
        rows: list[tuple] = []
        for j in range(start, end):
            t = columns["timestamp"][j]
            roll = rng.random() if t > change.time and j > start else 1.0
            item = mechanism = None
            if roll < shop.p_launch:
                item, mechanism = pick(launched_in.get(department[columns["item_id"][j - 1]], []), owned), launch
            elif roll < shop.p_launch + shop.p_fashion:
                item, mechanism = pick(fashionable, owned), fashion
            if item is not None:
                low = max(change.time, columns["timestamp"][j - 1])
                cause = len(rows) - 1 if mechanism == launch else -1  # launch: the latest purchase
                rows.append((users[j], item, low + (t - low) * rng.uniform(0.05, 0.95), mechanism, cause))
                owned.add(item)
            moved.append(len(rows))
            rows.append(tuple(columns[c][j] for c in ("user_id", "item_id", "timestamp", "mechanism", "cause")))
        for row in rows:
            cause = row[4] if row[3] >= len(MECHANISMS) or row[4] < 0 else moved[row[4]]
            for column, value in zip(out, (*row[:4], cause), strict=True):
                out[column].append(value)
    return pl.DataFrame(out, schema=interactions.schema)


def generate_with_impressions(shop: ShopConfig):
    """(interactions, catalog, impressions): impressions are (users, hist_len, items, clicked)
    arrays (items 0-based in catalog order), or None when ``shop.impressions`` is 0."""
    rng = np.random.default_rng(shop.seed)
    catalog = _make_catalog(shop, rng)
    n = len(catalog["item_id"])
    department = np.array(catalog["department"])
    brand = np.array(catalog["brand"])
    kind = np.array(catalog["kind"])
    device_of = np.array(catalog["device_of"])  # accessory -> index of its device, else -1
    popularity = rng.zipf(1.6, size=n).astype(float)
    popularity = np.minimum(popularity, 200.0)
    popularity /= popularity.sum()
    accessories = {d: np.flatnonzero(device_of == d) for d in np.flatnonzero(kind == "device")}
    departments = list(DEPARTMENTS)
    dept_index = np.array([departments.index(d) for d in department])

    rows_user, rows_item, rows_time, rows_mech, rows_cause = [], [], [], [], []
    rows_user_index, rows_item_index = [], []
    for u in range(shop.users):
        taste = rng.dirichlet(np.full(len(departments), 0.4))
        length = int(rng.integers(shop.min_len, shop.max_len + 1))
        t = float(rng.integers(0, 365)) * 86400.0
        history: list[int] = []
        owned = np.zeros(n, dtype=bool)
        for _ in range(length):
            item, mech, cause = _next_purchase(
                rng, shop, history, owned, taste, dept_index, brand, kind, accessories, popularity
            )
            if item < 0:
                break
            rows_user.append(f"U{u:05d}")
            rows_user_index.append(u)
            rows_item_index.append(item)
            rows_item.append(catalog["item_id"][item])
            rows_time.append(t)
            rows_mech.append(MECHANISMS.index(mech))
            rows_cause.append(cause)
            history.append(item)
            owned[item] = True
            t += float(rng.integers(1, 15)) * 86400.0 + float(rng.integers(0, 86400))
    interactions = pl.DataFrame(
        {
            "user_id": rows_user,
            "item_id": rows_item,
            "timestamp": rows_time,
            "mechanism": rows_mech,
            "cause": rows_cause,
        }
    )
    frame = pl.DataFrame(
        {
            "item_id": catalog["item_id"],
            "title": catalog["title"],
            "brand": catalog["brand"],
            "category": [f"{d}|{s}" for d, s in zip(catalog["department"], catalog["subcategory"], strict=True)],
            "price": [f"{p:.2f}" for p in catalog["price"]],
        }
    )
    shown = None
    if shop.impressions:
        kinds = (department, brand, kind, device_of)
        shown = _impressions(shop, np.array(rows_user_index), np.array(rows_item_index), kinds)
    return interactions, frame, shown


def _impressions(shop: ShopConfig, users: np.ndarray, items: np.ndarray, kinds) -> tuple[np.ndarray, ...]:
    """At each purchase after a shopper's first, ``shop.impressions`` other items not owned,
    clicked with the planted chance: sigmoid(-2.5 + appeal + 2 x accessory of an owned device
    + 1.5 x brand of an earlier item in its department + 0.8 x a department they bought from)."""
    department, brand, kind, device_of = kinds
    rng = np.random.default_rng([shop.seed, 1])  # its own stream: the purchases do not change
    n = len(department)
    appeal = rng.normal(0.0, 0.8, size=n)
    out_users, out_hist, out_items, out_clicked = [], [], [], []
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(users)], strict=True):
        history = items[start:end]
        for p in range(1, len(history)):
            before = history[:p]
            owned = np.zeros(n, dtype=bool)
            owned[before] = True
            pool = np.flatnonzero(~owned)
            shown = rng.choice(pool, size=min(shop.impressions, len(pool)), replace=False)
            accessory = (device_of[shown] >= 0) & owned[np.maximum(device_of[shown], 0)]
            bought = set(zip(brand[before], department[before], strict=True))
            same_brand = np.array([(brand[i], department[i]) in bought for i in shown], dtype=bool)
            same_department = np.isin(department[shown], department[before])
            logit = -2.5 + appeal[shown] + 2.0 * accessory + 1.5 * same_brand + 0.8 * same_department
            clicked = rng.random(len(shown)) < 1 / (1 + np.exp(-logit))
            out_users += [users[start]] * len(shown)
            out_hist += [p] * len(shown)
            out_items += shown.tolist()
            out_clicked += clicked.tolist()
    return (
        np.array(out_users, dtype=np.int64),
        np.array(out_hist, dtype=np.int64),
        np.array(out_items, dtype=np.int64),
        np.array(out_clicked, dtype=np.float64),
    )


def _next_purchase(rng, shop, history, owned, taste, dept_index, brand, kind, accessories, popularity):
    """One purchase: (item, mechanism, cause position or -1). Never repeats an owned item."""
    roll = rng.random()
    if roll < shop.p_accessory:
        # Recent devices with no accessory yet: one accessory per device, so the device is
        # the only history item that points to it (no accessory-to-accessory shortcut).
        recent = range(max(0, len(history) - 12), len(history))
        devices = [p for p in recent if kind[history[p]] == "device" and not owned[accessories[history[p]]].any()]
        if devices:
            pos = devices[rng.integers(len(devices))]
            return int(rng.choice(accessories[history[pos]])), "accessory_after_device", pos
        roll = shop.p_accessory + rng.random() * (1 - shop.p_accessory)  # fall through to another mechanism
    if roll < shop.p_accessory + shop.p_brand and history:
        pos = int(rng.integers(max(0, len(history) - 10), len(history)))
        anchor = history[pos]
        same = (brand == brand[anchor]) & (dept_index == dept_index[anchor]) & (kind != "accessory") & ~owned
        if same.any():
            weights = popularity * same
            item = int(rng.choice(len(owned), p=weights / weights.sum()))
            brands_in_history = [brand[h] for h in history]
            cause = pos if brands_in_history.count(brand[anchor]) == 1 else -1
            return item, "brand_loyalty", cause
    if roll > 1 - shop.p_popularity:
        weights = popularity * ~owned * (kind != "accessory")
        return int(rng.choice(len(owned), p=weights / weights.sum())), "popularity", -1
    dept = rng.choice(len(taste), p=taste)
    weights = popularity * (dept_index == dept) * (kind != "accessory") * ~owned
    if weights.sum() == 0:
        weights = popularity * (kind != "accessory") * ~owned
    if weights.sum() == 0:
        return -1, "", -1
    return int(rng.choice(len(owned), p=weights / weights.sum())), "category_interest", -1


def _make_catalog(shop: ShopConfig, rng: np.random.Generator) -> dict[str, list]:
    """Devices with their accessories, and regular products, spread over departments and brands."""
    cols: dict[str, list] = {
        k: [] for k in ("item_id", "title", "brand", "department", "subcategory", "kind", "price", "device_of")
    }
    n_subcats = sum(len(v) for v in DEPARTMENTS.values())
    per_regular_subcat = max(4, shop.items // (n_subcats + 8))

    def add(title, brand, dept, sub, kind, price, device_of=-1):
        cols["item_id"].append(f"P{len(cols['item_id']) + 1:04d}")
        cols["title"].append(title)
        cols["brand"].append(brand)
        cols["department"].append(dept)
        cols["subcategory"].append(sub)
        cols["kind"].append(kind)
        cols["price"].append(round(price, 2))
        cols["device_of"].append(device_of)

    for dept, subcats in DEPARTMENTS.items():
        for sub, is_device, nouns in subcats:
            if is_device:
                for b in BRANDS[dept]:
                    for m in range(max(1, per_regular_subcat // 8)):
                        model = f"{nouns[m % len(nouns)]} {ADJECTIVES[rng.integers(len(ADJECTIVES))]} {m + 1}"
                        device = len(cols["item_id"])
                        add(f"{b} {model}", b, dept, sub, "device", PRICE_BASE["device"] * rng.lognormal(0, 0.4))
                        for acc in ACCESSORIES[sub]:
                            add(
                                f"{b} {acc} for {model}",
                                b,
                                dept,
                                f"{sub} accessories",
                                "accessory",
                                PRICE_BASE["accessory"] * rng.lognormal(0, 0.5),
                                device,
                            )
            else:
                for k in range(per_regular_subcat):
                    b = BRANDS[dept][rng.integers(len(BRANDS[dept]))]
                    noun = nouns[k % len(nouns)]
                    adj = ADJECTIVES[rng.integers(len(ADJECTIVES))]
                    add(f"{b} {adj} {noun}", b, dept, sub, "regular", PRICE_BASE["regular"] * rng.lognormal(0, 0.7))
    # Titles must be unique for people to tell items apart.
    seen: dict[str, int] = {}
    for i, title in enumerate(cols["title"]):
        seen[title] = seen.get(title, 0) + 1
        if seen[title] > 1:
            cols["title"][i] = f"{title} ({seen[title]})"
    return cols
