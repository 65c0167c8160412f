"""How the live service reacts to a purchase: on the synthetic shop, a posted device should
bring an accessory made for it into the buyer's top-10 on the very next request.

    python bench/serve_reaction.py RUN [--users 200] [--seed 0]

RUN is a run trained on the synthetic shop (``recscope demo --out DIR`` writes DIR/run). The
planted rule (``recscope.data.synthetic``: ``accessory_after_device``) makes a shopper buy one
accessory of a recent device (same brand, named for that model) with no accessory yet.

The real server runs as a subprocess with a fresh store. For each sampled user (seeded), a
device they do not own is drawn at random; then, through HTTP:

1. GET /users/{u}/recommendations?k=10 (before),
2. POST /events: one purchase of the device,
3. GET /users/{u}/recommendations?k=10 (after: the very next request),
4. GET /users/{u}/recommendations?k=1000 (the whole ranking, for the analysis only),
5. for the accessory that entered (the best ranked one): GET its explanation.

"Entered": an accessory of the posted device is in the top-10 after and was not in it before.
"In top-10 after": an accessory of the device is in the top-10 after, whether or not it was
before. "Named first": the explanation's largest history attribution is the posted device
(and, separately, the sentence's first quoted title is the device's). Writes
bench/results/serve_reaction.json with the shares, a breakdown and every case.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402
from recscope.data.synthetic import ACCESSORIES  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from serve_load import Server, code_under_test  # noqa: E402

BAR = 0.90
QUOTED = re.compile(r"“([^”]*)”")


def accessories_by_device(rec: Recommender) -> dict[int, list[int]]:
    """Device index -> indices of its accessories, from the run's catalog.

    The synthetic catalog titles a device "{brand} {model}" and its accessories
    "{brand} {accessory} for {model}", in subcategory "{device subcategory} accessories".
    Items no one bought are not in the run and so not here.
    """
    data = rec.data
    category = next(f for f in data.fields if f.name == "category")
    brand = next(f for f in data.fields if f.name == "brand")
    device_subs = set(ACCESSORIES)
    devices: dict[str, int] = {}
    accessories: list[tuple[int, str]] = []
    for i in range(1, data.n_items + 1):
        sub = category.labels(i)[-1]
        if sub in device_subs:
            devices[data.title(i)] = i
        elif sub.removesuffix(" accessories") in device_subs:
            model = data.title(i).split(" for ", 1)[1]
            accessories.append((i, f"{brand.labels(i)[0]} {model}"))
    out: dict[int, list[int]] = {d: [] for d in devices.values()}
    orphans = [i for i, device_title in accessories if device_title not in devices]
    for i, device_title in accessories:
        if device_title in devices:
            out[devices[device_title]].append(i)
    if not out or len(orphans) > len(accessories) // 2:
        raise SystemExit(
            f"{rec.path}: found {len(out)} devices and {len(accessories)} accessories ({len(orphans)} with no device):"
            " is this a run of the synthetic shop? (recscope demo --out DIR writes one in DIR/run)"
        )
    return out


def top_items(client: httpx.Client, user: str, k: int) -> list[str]:
    response = client.get(f"/users/{user}/recommendations", params={"k": k})
    response.raise_for_status()
    return [item["item_id"] for item in response.json()["items"]]


def alone(client: httpx.Client, rec: Recommender, devices: dict[int, list[int]], device: int) -> int | None:
    """The best rank of the device's accessories (within 50) when the device is the whole history."""
    response = client.post("/recommendations", json={"history": [rec.data.item_ids[device]], "k": 50})
    response.raise_for_status()
    top = [item["item_id"] for item in response.json()["items"]]
    return min(
        (top.index(rec.data.item_ids[a]) + 1 for a in devices[device] if rec.data.item_ids[a] in top), default=None
    )


def kind_of(data, devices: dict[int, list[int]], owned: set[int], device: int, item_id: str) -> str:
    """What an item of a missed case's top-10 is, next to the posted device."""
    i = data.item_index(item_id)
    brand = next(f for f in data.fields if f.name == "brand")
    category = next(f for f in data.fields if f.name == "category")
    made_for = next((d for d, accs in devices.items() if i in accs), None)
    if made_for is not None:
        return "accessory of an owned device" if made_for in owned else "accessory of another device"
    if i in devices:
        return "a device"
    if brand.labels(i) == brand.labels(device) and category.labels(i)[0] == category.labels(device)[0]:
        return "same brand and department as the posted device"
    return "other"


def case(client: httpx.Client, rec: Recommender, devices: dict[int, list[int]], user: str, device: int, n: int) -> dict:
    """One purchase posted and its effect; ``n`` numbers the event."""
    data = rec.data
    accessories = devices[device]
    category = next(f for f in data.fields if f.name == "category")
    department = category.labels(device)[0]
    ids = data.item_ids
    history = data.sequence(data.user_index(user))
    owned = set(history.tolist())
    acc_ids = [ids[a] for a in accessories]
    before = top_items(client, user, 10)
    response = client.post(
        "/events",
        json={"events": [{"event_id": f"reaction-{n}", "user_id": user, "item_id": ids[device], "event": "purchase"}]},
    )
    response.raise_for_status()
    after = top_items(client, user, 10)
    ranking = top_items(client, user, 1000)
    recent = history[-12:].tolist()  # the rule's window: devices among the last 12 purchases
    # other devices the rule could still add an accessory for
    open_devices = [d for d in recent if d in devices and not any(a in owned for a in devices[d])]
    row = {
        "user": user,
        "history_len": len(history),
        "device": ids[device],
        "device_title": data.title(device),
        "accessories": acc_ids,
        "device_kind": category.labels(device)[-1],
        "device_bought_in_training": int((data.items == device).sum()),
        "device_department_share_of_history": round(
            sum(category.labels(i)[0] == department for i in history.tolist()) / len(history), 3
        ),
        "accessories_owned": sum(a in owned for a in accessories),
        "other_open_devices_in_last_12": len(open_devices),
        "accessory_in_top10_before": any(a in before for a in acc_ids),
        "accessory_in_top10_after": any(a in after for a in acc_ids),
        "best_accessory_rank_after": min((ranking.index(a) + 1 for a in acc_ids if a in ranking), default=None),
        "top10_after": after,
    }
    if not row["accessory_in_top10_after"]:
        row["top10_after_kinds"] = dict(Counter(kind_of(data, devices, owned, device, i) for i in after))
    entered = [a for a in after if a in acc_ids and a not in before]
    row["entered"] = bool(entered)
    if entered:
        response = client.get(f"/users/{user}/recommendations/{entered[0]}/explanation")
        response.raise_for_status()
        explanation = response.json()
        ordered = sorted(explanation["history"], key=lambda h: -h["weight"])
        named = QUOTED.findall(explanation["sentence"])
        row |= {
            "explained": entered[0],
            "method": explanation["method"],
            "top_attribution": ordered[0]["item_id"],
            "device_attribution_rank": next(r for r, h in enumerate(ordered, 1) if h["item_id"] == ids[device]),
            "device_named_first_by_attribution": ordered[0]["item_id"] == ids[device],
            "device_named_first_in_sentence": bool(named) and named[0] == data.title(device),
            "sentence": explanation["sentence"],
        }
    return row


def share(rows: list[dict], key: str) -> float | None:
    return round(sum(bool(r[key]) for r in rows) / len(rows), 4) if rows else None


def hit_by(rows: list[dict], group) -> dict[str, str]:
    """ "in top-10 after / cases" for each value of ``group(row)``."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(group(r), []).append(r["accessory_in_top10_after"])
    return {str(g): f"{sum(v)}/{len(v)}" for g, v in sorted(groups.items())}


def bucket(value: float, edges: list[float]) -> str:
    lower = max((e for e in edges if e <= value), default=edges[0])
    upper = min((e for e in edges if e > value), default=None)
    return f"{lower}-{upper}" if upper is not None else f"{lower}+"


def alone_bucket(row: dict) -> str:
    rank = row["device_alone_rank"]
    return "1" if rank == 1 else "2-10" if rank is not None and rank <= 10 else "11+ (or not in top 50)"


def summary(rows: list[dict]) -> dict:
    entered = [r for r in rows if r["entered"]]
    missed = [r for r in rows if not r["accessory_in_top10_after"]]
    ranks = [r["best_accessory_rank_after"] for r in rows if r["best_accessory_rank_after"] is not None]
    return {
        "cases": len(rows),
        "entered_share": share(rows, "entered"),
        "in_top10_after_share": share(rows, "accessory_in_top10_after"),
        "in_top10_before_share": share(rows, "accessory_in_top10_before"),
        "named_first_by_attribution_share_of_entered": share(entered, "device_named_first_by_attribution"),
        "named_first_in_sentence_share_of_entered": share(entered, "device_named_first_in_sentence"),
        "best_accessory_rank_after": {
            "median": statistics.median(ranks) if ranks else None,
            "le_10": sum(r <= 10 for r in ranks),
            "11_20": sum(10 < r <= 20 for r in ranks),
            "21_50": sum(20 < r <= 50 for r in ranks),
            "gt_50": sum(r > 50 for r in ranks),
            "not_ranked (all owned)": len(rows) - len(ranks),
        },
        "missed": {
            "cases": len(missed),
            "an_accessory_already_owned": sum(r["accessories_owned"] > 0 for r in missed),
            "top10_kinds": dict(sum((Counter(r["top10_after_kinds"]) for r in missed), Counter())),
            "median_other_open_devices_in_last_12": statistics.median(
                [r["other_open_devices_in_last_12"] for r in missed]
            )
            if missed
            else None,
        },
        "hit_by_other_open_devices": {
            str(n): share(
                [r for r in rows if min(r["other_open_devices_in_last_12"], 3) == n], "accessory_in_top10_after"
            )
            for n in range(4)
        },
        "hit_by_device_kind": hit_by(rows, lambda r: r["device_kind"]),
        "hit_by_device_bought_in_training": hit_by(rows, lambda r: bucket(r["device_bought_in_training"], [0, 20, 50])),
        "hit_by_device_department_share_of_history": hit_by(
            rows, lambda r: bucket(r["device_department_share_of_history"], [0, 0.1, 0.3])
        ),
        "hit_by_device_alone_best_accessory_rank": hit_by(rows, alone_bucket),
        "device_attribution_rank_of_entered": dict(Counter(r["device_attribution_rank"] for r in entered)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rec = Recommender.load(args.run)
    devices = accessories_by_device(rec)
    rng = random.Random(args.seed)
    users = rng.sample(list(rec.data.user_ids), min(args.users, len(rec.data.user_ids)))
    rows = []
    with Server(args.run) as server, httpx.Client(base_url=server.url, timeout=60.0) as client:
        for n, user in enumerate(users):
            owned = set(rec.data.sequence(rec.data.user_index(user)).tolist())
            device = rng.choice(sorted(d for d in devices if d not in owned and devices[d]))
            rows.append(case(client, rec, devices, user, device, n))
        alone_rank = {device: alone(client, rec, devices, device) for device in devices if devices[device]}
        for row in rows:
            row["device_alone_rank"] = alone_rank[rec.data.item_index(row["device"])]
        problems = server.problems()
    result = summary(rows)
    for key, value in result.items():
        print(f"{key}: {value}")
    write(
        "serve_reaction",
        {
            "run": args.run,
            "data": rec.data.name,
            "command": " ".join(["python", *sys.argv]),
            "default_method": rec.default_method(),
            "devices": len(devices),
            "devices_whose_accessory_is_top10_alone": sum(r is not None and r <= 10 for r in alone_rank.values()),
            "bar": BAR,
            "entered_bar_met": result["entered_share"] is not None and result["entered_share"] >= BAR,
            "code": code_under_test(),
            "server_log_problems": problems,
            "summary": result,
            "cases": rows,
        },
    )


if __name__ == "__main__":
    main()
