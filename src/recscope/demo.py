"""``recscope demo``: the built-in synthetic shop end to end, with no download.

The demo writes ``OUT/run`` (a run directory), ``OUT/figures``, ``OUT/report`` and
``OUT/demo.json``. It checks its config and data before touching anything; it replaces
``OUT/run`` only if a previous demo wrote it (``"origin": "demo"`` in its run.json), and
then only the files a run consists of. Each step prints a line with its time.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from recscope import config as config_mod
from recscope import versions
from recscope.data import load_dataset, make_split
from recscope.errors import RunError
from recscope.evaluate import evaluate_run
from recscope.explain.faithfulness import evaluate_faithfulness
from recscope.lock import LOCK_NAME, RunLock
from recscope.progress import track
from recscope.recommend import Recommender
from recscope.run import RUN_FILES, record_explain_eval
from recscope.train import fit
from recscope.views import attention_figure, faithfulness_table, metrics_table, why_figure
from recscope.viz.report import Case, build_report

# The demo's own settings, before any --set of the user's: id dropout makes the model score
# items from their fields (brand, category, title text) as well as their ids, which carries the
# shop's accessory-after-device rule to rarely bought devices: a posted device brings its own
# accessory into the next top-10 in 93.0% of 1,000 sampled cases against 89.6% without it, for
# a valid NDCG@10 of 0.2269 against 0.2281 (docs/benchmarks.md, "Reaction").
DEMO_SETTINGS = ("train.id_dropout=0.1",)


def run_demo(
    out_dir: Path, spec: str, overrides: list[str], console: Console, out: Console, explain_users: int = 300
) -> dict:
    out_dir = Path(out_dir)
    run = out_dir / "run"
    cfg = config_mod.load(None, [*DEMO_SETTINGS, *overrides])  # everything is checked before anything is written
    data = load_dataset(spec, config=cfg.data)
    with RunLock(run, "demo", console):  # first: a demo running into the same --out is named as such
        _check_replaceable(run, out_dir)
        _clear_previous_run(run)
        return _demo(run, out_dir, data, cfg, spec, console, out, explain_users)


def _demo(run: Path, out_dir: Path, data, cfg, spec: str, console: Console, out: Console, explain_users: int) -> dict:
    steps = _Steps(console, 6)
    with steps("training"):
        tic = time.perf_counter()
        fit(data, cfg, run, data_spec=spec, console=console, origin="demo")
        train_seconds = time.perf_counter() - tic

    with steps("evaluating on the test split, with baselines"):
        rec = Recommender.load(run)
        results = evaluate_run(rec, "test", "full", baselines=True)
    out.print(metrics_table(results, f"{data.name}: test split, full ranking over {data.n_items} items"))

    with steps(f"measuring how faithful each explanation method is on {explain_users} test users"):
        faithfulness = evaluate_faithfulness(rec, users=explain_users)
        # The measured best becomes the run's default method.
        rec.info = record_explain_eval(run, faithfulness, "demo")
    out.print(faithfulness_table(faithfulness))

    with steps("finding a shopper to showcase"):
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

    with steps(f"explaining user {user}'s top 10, with figures"):
        explanations, heatmap, png, cause, hit = _explain(rec, user, history_ids, bought, out_dir, out)
    note = ""
    if cause is not None:
        note = (
            f"Ground truth from the shop: this shopper then bought “{cause[2]}”, planted as caused by "
            f"“{cause[1]}”. " + (f"recscope ranks it #{hit.rank}." if hit else "It is not in this top 10.")
        )
    with steps("writing the HTML report"):
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
        Text(f"\nrun: {run}\nwhy-heatmap: {heatmap}\nattention heatmap: {png}\nsummary: {out_dir / 'demo.json'}\n"),
        Text(f"report (open in a browser, works offline): {page}", style="bold"),
        Text(
            f"live: recscope serve {run}  then open http://127.0.0.1:8000/ui?user={user} (buy, dismiss, watch "
            f"the why change), or GET /users/{user}/recommendations?explain=true, POST /events, /docs"
        ),
        sep="\n",
    )
    console.print(f"demo done in {steps.total()}", highlight=False)
    return summary


def _explain(rec: Recommender, user: str, history_ids: list[str], bought: str, out_dir: Path, out: Console):
    """Print why the showcased user gets their top 10 and draw the two heatmaps."""
    explanations = rec.explain(history=history_ids, top=10)
    hit = None
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
    heatmap = why_figure(
        explanations,
        out_dir / "figures" / f"why_{user}.png",
        title=f"user {user}: how much each past purchase pushed each recommendation ({explanations[0].method})",
    )
    png = attention_figure(
        rec,
        rec.history_from_ids(history_ids),
        out_dir / "figures" / f"attention_{user}.png",
        title=f"user {user}: final-position attention",
    )
    return explanations, heatmap, png, cause, hit


def _check_replaceable(run: Path, out_dir: Path) -> None:
    """Refuse an ``OUT/run`` that holds anything but a previous demo's run."""
    fix = f"pick another --out, or move {run} away"
    if run.exists() and not run.is_dir():
        raise RunError(f"{run} is a file, not a previous demo run; the demo will not replace it", fix=fix)
    if not run.exists():
        return
    entries = sorted(p.name for p in run.iterdir() if p.name != LOCK_NAME)
    if entries and not _is_demo_run(run, out_dir):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunError(f"{run} is not a previous recscope demo run (it holds {shown}); it was left as it is", fix=fix)


def _is_demo_run(run: Path, out_dir: Path) -> bool:
    """run.json says the demo wrote it; or (runs before that marker) OUT/demo.json names this run."""
    info = _json(run / "run.json")
    if not isinstance(info, dict) or "config" not in info:
        return False
    if info.get("origin") == "demo":
        return True
    summary = _json(out_dir / "demo.json")
    return "format" not in info and isinstance(summary, dict) and summary.get("run") == str(run)


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _clear_previous_run(run: Path) -> None:
    """Remove a previous demo run's own files (and their half-written .tmp twins); nothing else."""
    for name in RUN_FILES:
        for path in (run / name, run / f"{name}.tmp"):
            if path.is_file():
                path.unlink()
    # The previous run's model versions: the version files only, so a file of anyone else stays.
    for version in versions.listing(run):
        directory = run / versions.VERSIONS / version.id
        for name in (versions.WEIGHTS, "version.json"):
            (directory / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: it holds someone else's file
            directory.rmdir()
    (run / versions.VERSIONS / versions.CURRENT).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (run / versions.VERSIONS).rmdir()


class _Steps:
    """A line per demo step as it starts and one with its time as it ends, so no step looks hung."""

    def __init__(self, console: Console, total: int):
        self.console, self.count, self.n, self.started = console, total, 0, time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.n += 1
        self.console.print(f"[{self.n}/{self.count}] {name} ...", markup=False, highlight=False)
        tic = time.perf_counter()
        yield
        self.console.print(
            f"[{self.n}/{self.count}] {name}: done in {time.perf_counter() - tic:.1f} s", markup=False, highlight=False
        )

    def total(self) -> str:
        return f"{time.perf_counter() - self.started:.1f} s"


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
    for c in track(range(len(split.test)), "demo: looking for a showcase user"):
        u, n = int(split.test.users[c]), int(split.test.hist_len[c])
        history = [data.item_ids[i] for i in data.sequence(u)[:n]]
        bought = data.item_ids[int(split.test.targets[c])]
        fallback = fallback or (data.user_ids[u], history, bought)
        if cause is None or cause[data.offsets[u] + n] < 0:
            continue
        if bought in {r.item_id for r in rec.recommend(history=history, k=10)}:
            return data.user_ids[u], history, bought
    return fallback
