"""Training and evaluation throughput on Amazon Beauty (full-softmax CE over 12,101 items).

    python bench/train_speed.py [--epochs 3] [--config configs/beauty.yaml]

Writes bench/results/train_speed.json: median seconds per epoch, training sequences
(users) per second, training windows per second, and full-ranking evaluation users/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, peak_rss_mib, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope.data import load_dataset, make_split, training_windows  # noqa: E402
from recscope.evaluate import evaluate, model_scorer  # noqa: E402
from recscope.model import SeqRec  # noqa: E402
from recscope.train import TrainingData, _train_epoch, with_data_sizes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--config", default=str(Path(__file__).parents[1] / "configs" / "beauty.yaml"))
    args = parser.parse_args()
    beauty = SHARED / "beauty"
    if not beauty.exists():
        sys.exit(f"{beauty} is absent: this benchmark needs ../shared/data/beauty")
    cfg = config_mod.load(args.config)
    data = load_dataset(f"s3rec:{beauty}")
    cfg = with_data_sizes(cfg, data)
    split = make_split(data)
    windows = torch.from_numpy(training_windows(data, split.train, cfg.model.max_len))
    torch.manual_seed(0)
    model = SeqRec(cfg.model)
    model.set_item_fields({f.name: torch.from_numpy(f.values) for f in data.fields})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    epoch_seconds = []
    for epoch in range(args.epochs):
        tic = time.perf_counter()
        _train_epoch(model, optimizer, TrainingData("next_item", windows), cfg, epoch)
        epoch_seconds.append(time.perf_counter() - tic)
        print(f"epoch {epoch + 1}: {epoch_seconds[-1]:.2f}s")
    eval_seconds = []
    for _ in range(3):
        tic = time.perf_counter()
        evaluate(model_scorer(model), data, split.valid, cfg.model.max_len, exclude_history=True)
        eval_seconds.append(time.perf_counter() - tic)
    s_epoch = statistics.median(epoch_seconds)
    s_eval = statistics.median(eval_seconds)
    write(
        "train_speed",
        {
            "data": f"s3rec:{beauty}",
            "config": args.config,
            "users": data.n_users,
            "items": data.n_items,
            "training_windows": len(windows),
            "training_events": int(split.train_len.sum()),
            "epoch_seconds": epoch_seconds,
            "median_epoch_seconds": round(s_epoch, 2),
            "train_sequences_per_second": round(data.n_users / s_epoch, 1),
            "train_events_per_second": round(int(split.train_len.sum()) / s_epoch, 1),
            "eval_seconds": eval_seconds,
            "eval_users_per_second": round(len(split.valid) / s_eval, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        },
    )


if __name__ == "__main__":
    main()
