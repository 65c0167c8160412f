"""``recscope demo``: the built-in synthetic shop end to end, with no download."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from recscope import config as config_mod
from recscope.data import load_dataset, make_split
from recscope.explain.attention import final_position_attention
from recscope.recommend import Recommender
from recscope.train import fit
from recscope.viz.figures import attention_heatmap


def run_demo(out_dir: Path, spec: str, overrides: list[str], console: Console, out: Console) -> dict:
    out_dir = Path(out_dir)
    run = out_dir / "run"
    if run.exists():
        shutil.rmtree(run)  # the demo always starts fresh
    cfg = config_mod.load(None, overrides)
    data = load_dataset(spec, config=cfg.data)
    tic = time.perf_counter()
    fit(data, cfg, run, data_spec=spec, console=console)
    train_seconds = time.perf_counter() - tic

    rec = Recommender.load(run)
    results = rec.evaluate("test", "full", baselines=True)
    from recscope.cli import metrics_table

    out.print(metrics_table(results, f"{data.name}: test split, full ranking over {data.n_items} items"))

    user = _showcase_user(rec)
    items = rec.recommend(user, k=10)
    history = rec.history(user)
    table = Table(title=f"user {user}: last purchases -> top 10")
    table.add_column("history (most recent last)")
    table.add_column("recommended")
    shown = history[-10:]
    for i in range(max(len(shown), len(items))):
        left = rec.data.title(shown[i]) if i < len(shown) else ""
        right = f"{items[i].rank}. {items[i].title} ({items[i].score:.2f})" if i < len(items) else ""
        table.add_row(left, right)
    out.print(table)

    view = final_position_attention(rec.model, rec.tensor(history))
    png = attention_heatmap(
        view.weights,
        [rec.data.title(i) for i in view.items],
        out_dir / "figures" / f"attention_{user}.png",
        title=f"user {user}: final-position attention",
    )
    summary = {
        "data": data.describe(),
        "train_seconds": round(train_seconds, 1),
        "test": results,
        "user": user,
        "recommendations": [r.to_dict() for r in items],
        "figures": [str(png)],
        "run": str(run),
    }
    (out_dir / "demo.json").write_text(json.dumps(summary, indent=2))
    out.print(f"\nrun: {run}\nattention heatmap: {png}\nsummary: {out_dir / 'demo.json'}")
    return summary


def _showcase_user(rec: Recommender) -> str:
    """A test user whose next purchase has a planted single cause (an accessory for a device
    they own, or brand loyalty), so the explanation can be checked against the truth."""
    data = rec.data
    split = make_split(data)
    cause = data.extras.get("cause")
    if cause is None:
        return data.user_ids[int(split.test.users[0])]
    last = data.offsets[split.test.users] + split.test.hist_len
    planted = np.flatnonzero(cause[last] >= 0)
    return data.user_ids[int(split.test.users[planted[0] if len(planted) else 0])]
