"""How big and how slow the HTML report is: N random users of a trained run, every method.

    python bench/report_size.py RUN [--users 20] [--merchant-users 500] [--name beauty]

Builds the report exactly as `recscope report RUN --sample N` does and records the page's
size (and what it is made of), the figures written, wall time and peak memory. Writes
bench/results/report_<name>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_mib, write  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from recscope.viz.report import build_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--merchant-users", type=int, default=500)
    parser.add_argument("--name", default="beauty")
    args = parser.parse_args()
    rec = Recommender.load(args.run)
    rng = np.random.default_rng(0)
    ids = rec.data.user_ids
    users = [ids[i] for i in sorted(rng.choice(len(ids), args.users, replace=False))]
    crowd = sorted(set(users) | {ids[i] for i in rng.choice(len(ids), args.merchant_users, replace=False)})
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        page = build_report(rec, users, tmp, merchant_users=crowd)
        seconds = time.perf_counter() - tic
        html = page.read_text(encoding="utf-8")
        data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)[1])
        figures = list((Path(tmp) / "figures").iterdir())
        parts = {key: len(json.dumps(value, ensure_ascii=False)) for key, value in data.items()}
        result = {
            "run": args.run,
            "users": args.users,
            "merchant_users": len(crowd),
            "methods": [m["name"] for m in data["methods"]],
            "history_lengths": [h["length"] for h in data["histories"]],
            "page_bytes": page.stat().st_size,
            "page_parts_bytes": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
            "figures": len(figures),
            "figures_bytes": sum(f.stat().st_size for f in figures),
            "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak_rss_mib()),
        }
    write(f"report_{args.name}", result)


if __name__ == "__main__":
    main()
