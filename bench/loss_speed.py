"""The fused full-softmax loss against the composed one, side by side on Beauty's training epochs.

    python bench/loss_speed.py [--epochs 3] [--batch-size 256]

Trains the ids-only Beauty model (configs/beauty.yaml, fields off, as bench/recbole_compare.py)
for ``--epochs`` epochs with each loss, alternating epoch by epoch in one process so both see
the same machine, and writes bench/results/loss_speed.json: seconds per epoch (median) for
``fused`` (recscope.losses.linear_cross_entropy, what SeqRec.loss uses) and ``composed``
(``F.cross_entropy(hidden @ table.T)``, what it used before), and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, write  # noqa: E402
from recscope import config as config_mod  # noqa: E402
from recscope import model as model_mod  # noqa: E402
from recscope.cpu import use_threads  # noqa: E402
from recscope.data import load_dataset, make_split, training_windows  # noqa: E402
from recscope.model import SeqRec  # noqa: E402
from recscope.train import TrainingData, _train_epoch, with_data_sizes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FUSED = model_mod.linear_cross_entropy


def composed(hidden, table, targets, hidden_columns=None):
    logits = hidden @ table.T
    if hidden_columns is not None:
        logits = logits.masked_fill(hidden_columns[None, :], float("-inf"))
    return F.cross_entropy(logits, targets, reduction="none")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    beauty = SHARED / "beauty"
    if not beauty.exists():
        sys.exit(f"{beauty} is absent: this benchmark needs ../shared/data/beauty")
    threads = use_threads(0)
    cfg = config_mod.load(ROOT / "configs" / "beauty.yaml", [f"train.batch_size={args.batch_size}", "train.lr=0.002"])
    data = load_dataset(f"s3rec:{beauty}")
    cfg = with_data_sizes(cfg, data)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fields=()))
    windows = torch.from_numpy(training_windows(data, make_split(data).train, cfg.model.max_len))
    runs = {}
    for name in ("fused", "composed"):
        torch.manual_seed(0)
        model = SeqRec(cfg.model)
        runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=cfg.train.lr), [], [])
    for epoch in range(args.epochs):
        for name, (model, optimizer, seconds, losses) in runs.items():
            model_mod.linear_cross_entropy = FUSED if name == "fused" else composed
            tic = time.perf_counter()
            losses.append(_train_epoch(model, optimizer, TrainingData("next_item", windows), cfg, epoch))
            seconds.append(time.perf_counter() - tic)
            print(f"epoch {epoch + 1} {name}: {seconds[-1]:.2f} s, loss {losses[-1]:.4f}", flush=True)
    model_mod.linear_cross_entropy = FUSED
    median = {name: statistics.median(run[2]) for name, run in runs.items()}
    write(
        "loss_speed",
        {
            "data": f"s3rec:{beauty}",
            "batch_size": args.batch_size,
            "threads": threads,
            "epochs": args.epochs,
            **{
                name: {"epoch_seconds": run[2], "loss": run[3], "median": round(median[name], 2)}
                for name, run in runs.items()
            },
            "speedup": round(median["composed"] / median["fused"], 3),
            "loadavg": open("/proc/loadavg").read().split()[:3],
        },
    )


if __name__ == "__main__":
    main()
