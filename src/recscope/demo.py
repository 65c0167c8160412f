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
from recscope.explain.faithfulness import evaluate_faithfulness
from recscope.recommend import Recommender
from recscope.run import save_info
from recscope.train import fit
from recscope.viz.figures import attention_heatmap, attribution_heatmap
from recscope.viz.report import Case, build_report


def run_demo(
    out_dir: Path, spec: str, overrides: list[str], console: Console, out: Console, explain_users: int = 300
) -> dict:
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
    from recscope.cli import faithfulness_table, metrics_table  # the CLI's tables, shared

    out.print(metrics_table(results, f"{data.name}: test split, full ranking over {data.n_items} items"))

    faithfulness = evaluate_faithfulness(rec, users=explain_users)
    rec.info.state["explain_eval"] = faithfulness  # the measured best becomes the run's default method
    save_info(run, rec.info)
    out.print(faithfulness_table(faithfulness))

    user, history_ids, bought = _showcase(rec)
    items = rec.recommend(history=history_ids, k=10)
    table = Table(title=f"user {user}, just before their last purchase: recent history -> top 10")
    table.add_column("history (most recent last)")
    table.add_column("recommended")
    shown = history_ids[-10:]
    for i in range(max(len(shown), len(items))):
        left = rec.data.title(rec.data.item_index(shown[i])) if i < len(shown) else ""
        right = f"{items[i].rank}. {items[i].title} ({items[i].score:.2f})" if i < len(items) else ""
        table.add_row(left, right)
    out.print(table)

    explanations = rec.explain(history=history_ids, top=10)
    for e in explanations:
        e.user = user
    out.print(f"\n[bold]Why these items for user {user}[/] (method: {explanations[0].method}, chosen by faithfulness)")
    for e in explanations[:5]:
        out.print(f"  {e.rank}. [bold]{e.title}[/]: {e.sentence}")
    cause = _planted_cause(rec, user)
    if cause is not None:
        hit = next((e for e in explanations if e.item_id == bought), None)
        verdict = (
            f"recscope ranked it #{hit.rank} and its top reason is “{hit.top(1)[0].title}”"
            + (" ✓" if hit.top(1)[0].position == cause[0] else " ✗")
            if hit
            else "it is not in this top 10"
        )
        out.print(
            f"  [dim]ground truth: the user then bought “{cause[2]}”, planted by the shop as caused by "
            f"“{cause[1]}”; {verdict}[/]"
        )
    weights = np.array([[h.weight for h in e.history] for e in explanations]).T  # (T, K)
    heatmap = attribution_heatmap(
        weights,
        [h.title for h in explanations[0].history],
        [f"{e.rank}. {e.title}" for e in explanations],
        out_dir / "figures" / f"why_{user}.png",
        title=f"user {user}: how much each past purchase pushed each recommendation ({explanations[0].method})",
    )
    view = final_position_attention(rec.model, rec.tensor(rec.history_from_ids(history_ids)))
    png = attention_heatmap(
        view.weights,
        [rec.data.title(i) for i in view.items],
        out_dir / "figures" / f"attention_{user}.png",
        title=f"user {user}: final-position attention",
    )
    note = ""
    if cause is not None:
        note = (
            f"Ground truth from the shop: this shopper then bought “{cause[2]}”, planted as caused by "
            f"“{cause[1]}”. " + (f"recscope ranks it #{hit.rank}." if hit else "It is not in this top 10.")
        )
    page = _report(rec, user, history_ids, note, out_dir / "report", out)
    summary = {
        "data": data.describe(),
        "train_seconds": round(train_seconds, 1),
        "test": results,
        "faithfulness": faithfulness,
        "user": user,
        "history": history_ids,
        "recommendations": [r.to_dict() for r in items],
        "explanations": [e.to_dict() for e in explanations],
        "figures": [str(heatmap), str(png)],
        "report": str(page),
        "run": str(run),
    }
    (out_dir / "demo.json").write_text(json.dumps(summary, indent=2))
    out.print(
        f"\nrun: {run}\nwhy-heatmap: {heatmap}\nattention heatmap: {png}\nsummary: {out_dir / 'demo.json'}"
        f"\n[bold]report (open in a browser, works offline): {page}[/]"
    )
    return summary


def _report(rec: Recommender, user: str, history_ids: list[str], note: str, out_dir: Path, out: Console) -> Path:
    """The HTML report: the showcased shopper before their last purchase, then a few others as they
    stand now; the merchant view over 500 shoppers."""
    rng = np.random.default_rng(0)
    ids = rec.data.user_ids
    others = [ids[i] for i in rng.choice(len(ids), 4, replace=False) if ids[i] != user][:3]
    cases = [Case(f"user {user}, just before their last purchase", user=user, history=history_ids, note=note)]
    cases += [Case(f"user {u}", user=u) for u in others]
    crowd = [ids[i] for i in rng.choice(len(ids), min(500, len(ids)), replace=False)]
    return build_report(rec, out_dir=out_dir, cases=cases, merchant_users=crowd, console=out)


def _planted_cause(rec: Recommender, user: str):
    """(position, cause title, purchase title) of the user's test purchase, if the shop planted one."""
    cause = rec.data.extras.get("cause")
    if cause is None:
        return None
    u = rec.data.user_index(user)
    last = rec.data.offsets[u + 1] - 1
    position = int(cause[last])
    if position < 0:
        return None
    seq = rec.data.sequence(u)
    return position, rec.data.title(seq[position]), rec.data.title(seq[-1])


def _showcase(rec: Recommender) -> tuple[str, list[str], str]:
    """A test user whose last purchase has a planted single cause and lands in the model's top 10
    (the first such user, so the demo is deterministic): (user, history before it, item bought)."""
    data = rec.data
    split = make_split(data)
    cause = data.extras.get("cause")
    fallback = None
    for c in range(len(split.test)):
        u, n = int(split.test.users[c]), int(split.test.hist_len[c])
        history = [data.item_ids[i] for i in data.sequence(u)[:n]]
        bought = data.item_ids[int(split.test.targets[c])]
        fallback = fallback or (data.user_ids[u], history, bought)
        if cause is None or cause[data.offsets[u] + n] < 0:
            continue
        if bought in {r.item_id for r in rec.recommend(history=history, k=10)}:
            return data.user_ids[u], history, bought
    return fallback
