"""How long explanations take: a user's whole top-10, per method, on a trained run.

    python bench/explain_speed.py RUN [--users 200] [--name beauty]

Per method: median and p99 ms for `Recommender.explain(user, top=10)` (attributions,
attribute attributions, sentences; with and without the verified counterfactual), and
the median of all methods together. Writes bench/results/explain_speed_<name>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_mib, write  # noqa: E402
from recscope.data import make_split  # noqa: E402
from recscope.explain.api import METHODS  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    rec = Recommender.load(args.run)
    split = make_split(rec.data)
    rng = np.random.default_rng(0)
    users = [rec.data.user_ids[int(u)] for u in rng.choice(split.test.users, size=args.users, replace=False)]
    for user in users[:5]:  # warm up
        rec.explain(user, top=10, method="occlusion")
    timings: dict[str, dict] = {}
    together = np.zeros(len(users))
    for method in METHODS:
        plain, with_cf = [], []
        for i, user in enumerate(users):
            tic = time.perf_counter()
            rec.explain(user, top=10, method=method, counterfactual=False)
            plain.append((time.perf_counter() - tic) * 1000)
            tic = time.perf_counter()
            rec.explain(user, top=10, method=method, counterfactual=True)
            with_cf.append((time.perf_counter() - tic) * 1000)
            together[i] += with_cf[-1]
        timings[method] = {
            "median_ms_top10": round(statistics.median(plain), 2),
            "p99_ms_top10": round(float(np.percentile(plain, 99)), 2),
            "median_ms_top10_with_counterfactual": round(statistics.median(with_cf), 2),
            "p99_ms_top10_with_counterfactual": round(float(np.percentile(with_cf, 99)), 2),
        }
        print(method, timings[method])
    write(
        f"explain_speed_{args.name or rec.data.name}",
        {
            "run": args.run,
            "data": rec.data.name,
            "users": len(users),
            "default_method": rec.default_method(),
            "threads": torch.get_num_threads(),
            "methods": timings,
            "all_methods_median_ms_top10_with_counterfactual": round(float(np.median(together)), 2),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        },
    )


if __name__ == "__main__":
    main()
