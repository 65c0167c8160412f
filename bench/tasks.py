"""The task heads against their baselines, each measured in the same run on the test split.

    python bench/tasks.py                      # both: rating on MovieLens-100K, click on the shop
    python bench/tasks.py --only rating        # one of them (the other's last result is kept)
    python bench/tasks.py --reuse              # evaluate the runs this script trained before

- rating: ``movielens:../shared/data/ml-100k`` with configs/ml-100k.yaml and ``train.task=rating``
  (the last 50 ratings read, at most 8 epochs, valid every 2: on a shared 2-core machine an
  epoch of the full config takes minutes);
  RMSE and MAE of the predicted rating of each user's last (test) movie, against the user/item
  bias baseline (global mean + regularised biases fitted on the training ratings, the
  regularisation chosen on valid).
- click: ``synthetic:users=300,items=120,seed=5,impressions=5`` (a small shop, 5 shown items
  per purchase) with configs/tiny.yaml, ``train.task=click``, 3 epochs, no text; AUC and log
  loss on the impressions shown at each user's test moment, against popularity-CTR (each
  item's smoothed training click rate, the smoothing chosen on valid).

Writes bench/results/tasks.json (command, data, config, commit, machine, figures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, SHARED, peak_rss_mib, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope.data import load_dataset  # noqa: E402
from recscope.evaluate import evaluate_run  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from recscope.train import fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCHES = {
    "rating": (
        f"movielens:{SHARED / 'ml-100k'}",
        ROOT / "configs" / "ml-100k.yaml",
        ["train.task=rating", "model.max_len=50", "train.epochs=8", "train.eval_every=2", "train.patience=2"],
    ),
    "click": (
        "synthetic:users=300,items=120,seed=5,impressions=5",
        ROOT / "configs" / "tiny.yaml",
        ["train.task=click", "train.epochs=3", "model.use_text=false"],
    ),
}


def run(name: str, runs: Path, reuse: bool) -> dict:
    spec, config, overrides = BENCHES[name]
    out = runs / f"tasks-{name}"
    wall = None
    if not (reuse and (out / "run.json").exists()):
        if out.exists():
            shutil.rmtree(out)
        cfg = config_mod.load(config, overrides)
        data = load_dataset(spec, config=cfg.data)
        tic = time.perf_counter()
        fit(data, cfg, out, data_spec=spec)
        wall = round(time.perf_counter() - tic, 1)
    rec = Recommender.load(out)
    info = rec.info
    test = evaluate_run(rec, "test")
    return {
        "data": spec,
        "config": str(config.relative_to(ROOT)),
        "overrides": overrides,
        "inputs": info.state["inputs"],
        "epochs_run": info.state["epoch"],
        "best_epoch": info.state["best_epoch"],
        "best_valid": info.state["best_valid"],
        "train_wall_seconds": wall,  # None: the run was trained by an earlier call (--reuse)
        "test": test,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=list(BENCHES), default=None)
    parser.add_argument("--runs", default="runs", help="folder for the run directories")
    parser.add_argument("--reuse", action="store_true", help="evaluate a run this script trained before")
    args = parser.parse_args()
    names = [args.only] if args.only else list(BENCHES)
    command = " ".join(["python", *sys.argv])
    results = {name: {"command": command, **run(name, Path(args.runs), args.reuse)} for name in names}
    for name, r in results.items():
        print(name, r["test"])
    previous = RESULTS / "tasks.json"
    kept = json.loads(previous.read_text()) if previous.exists() else {}
    merged = {name: kept[name] for name in BENCHES if name in kept and name not in results} | results
    write("tasks", {**merged, "peak_rss_mib": round(peak_rss_mib(), 1)})


if __name__ == "__main__":
    main()
