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


PROBABILITIES = ("p_accessory", "p_brand", "p_popularity")


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
            raise DataError(f"synthetic option {key}={value!r} is not {kind}", fix=f"e.g. {key}=3") from None
    shop = ShopConfig(**values)
    limits = [
        ("users", shop.users >= 1, "at least 1"),
        ("items", shop.items >= 1, "at least 1"),
        ("seed", shop.seed >= 0, "0 or more"),
        ("min_len", shop.min_len >= 1, "at least 1"),
        ("max_len", shop.max_len >= shop.min_len, f"at least min_len ({shop.min_len})"),
        ("impressions", 0 <= shop.impressions <= 100, "from 0 to 100"),
        ("events", shop.events >= 0, "0 (the small shop) or more"),
        *((p, 0.0 <= getattr(shop, p) <= 1.0, "a probability from 0 to 1") for p in PROBABILITIES),
    ]
    for key, ok, should in limits:
        if not ok:
            default = getattr(ShopConfig(), key)
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
    return shop


def load_synthetic(rest: str, config: DataConfig) -> Dataset:
    shop = parse_spec(rest)
    if shop.events:
        from recscope.data.scale import frames

        interactions, catalog = frames(shop)
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
        extra_labels={"mechanism": MECHANISMS},
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
    interactions, catalog, _ = generate_with_impressions(dataclasses.replace(shop, impressions=0))
    return interactions, catalog


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
