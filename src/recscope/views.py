"""What a person at a terminal sees: tables, figures of one user's explanations, and errors.

The CLI (``recscope.cli``), the demo (``recscope.demo``) and a training process started by
torchrun (``recscope.train``) print through these, so each looks the same wherever it comes from.

Tables are built to read at 100 columns (and in a pipe) without cutting anything. Every string
that came from the user or the data (ids, titles, paths, sentences) is printed as rich ``Text``,
never parsed as markup: an id like ``[bold]u0`` prints as itself.

What a user sees when something goes wrong is one line on stderr, never a traceback
(:func:`exit_on_error`):

- bad input (a RecscopeError): ``error: <what, where>; how to fix: <fix>``, status 2;
- a file the system refuses (permission denied, disk full, ...): ``error: <file>: <reason>``, status 2;
- Ctrl-C: ``error: interrupted``, status 130;
- anything else is a bug in recscope: one line naming it and the file its traceback was
  written to, status 1. ``RECSCOPE_DEBUG=1`` lets the exception through instead.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from recscope.errors import RecscopeError

if TYPE_CHECKING:
    from recscope.data import LoadReport
    from recscope.recommend import Recommender


def terminal_width(stream) -> int | None:
    """A terminal's own width; in a pipe, $COLUMNS or 100 (rich would use 80). Tables are
    built to read at 100 columns; anything longer folds onto the next line, never cut to "…"."""
    terminal = callable(getattr(stream, "isatty", None)) and stream.isatty()
    return None if terminal or os.environ.get("COLUMNS") else 100


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------
def table(*columns: tuple[str, str]) -> Table:
    """A borderless table; ``columns`` are (header, "left" | "right"). Long cells fold."""
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, header_style="bold")
    for header, justify in columns:
        grid.add_column(header, justify=justify, overflow="fold")
    return grid


def titled(title: str, grid: Table, legend: str | None = None) -> Group:
    """The title above the table (it wraps to the screen, not to the table's width) and a legend below."""
    parts = [Text(title, style="bold"), grid]
    if legend:
        parts.append(Text(legend, style="dim"))
    return Group(*parts)


def metrics_table(results: dict[str, dict], title: str) -> Group:
    """One row per metric, one column per model (the best in bold): narrow at any number of models."""
    keys = [k for k in results[next(iter(results))] if k.split("@")[0] in ("HR", "NDCG", "MRR")]
    keys.sort(key=lambda k: (("HR", "NDCG", "MRR").index(k.split("@")[0]), int(k.split("@")[1])))
    grid = table(("metric", "left"), *((name, "right") for name in results))
    for key in keys:
        values = [m.get(key, float("nan")) for m in results.values()]
        best = max((v for v in values if v == v), default=None)
        grid.add_row(key, *(Text(f"{v:.4f}", style="bold" if v == best and len(values) > 1 else "") for v in values))
    legend = "HR = hit rate, NDCG = normalised discounted cumulative gain, MRR = mean reciprocal rank; @K = top K"
    if len(results) > 1:
        legend += "; best in bold"
    return titled(title, grid, legend)


TASK_LEGEND = {
    "RMSE": "RMSE, MAE: root mean squared and mean absolute error of the predicted rating (lower = better)",
    "AUC": "AUC: chance a clicked item is scored above an unclicked one; logloss: of the click probability"
    " (lower = better)",
}


def task_table(results: dict[str, dict], title: str) -> Group:
    """A rating or click run's metrics: one row per metric, one column per model."""
    first = results[next(iter(results))]
    grid = table(("metric", "left"), *((name, "right") for name in results))
    for key in first:
        cells = [m[key] for m in results.values()]
        grid.add_row(key, *(f"{v:,}" if key == "cases" else f"{v:.4f}" for v in cells))
    return titled(title, grid, next(text for metric, text in TASK_LEGEND.items() if metric in first))


FAITHFULNESS_COLUMNS = [  # (key in explain-eval's JSON, header); the legend says what each means
    ("comprehensiveness", "comp"),
    ("sufficiency", "suff"),
    ("topk_exit_rate", "exit"),
    ("kendall_tau_loo", "tau"),
    ("planted_hit@1", "hit@1"),
    ("planted_hit@3", "hit@3"),
    ("ms_per_explanation", "ms"),
    ("ms_p99", "p99"),
]
FAITHFULNESS_LEGEND = {
    "comp": "comp: score drop without the top items (higher = more faithful)",
    "suff": "suff: drop keeping only them (lower = better)",
    "exit": "exit: share of items leaving the top-K without their top 3",
    "tau": "tau: Kendall tau with leave-one-out",
    "hit@1": "hit@1, hit@3: the planted cause first, in the top 3",
    "ms": "ms, p99: mean, 99th-percentile milliseconds per explanation",
}
CRITERIA_WITH_RANDOM = ("comprehensiveness", "sufficiency", "topk_exit_rate")


def faithfulness_table(result: dict) -> Group:
    """One row per method (the default starred) and one for random items, the baseline to beat."""
    methods = result["methods"]
    columns = [(key, short) for key, short in FAITHFULNESS_COLUMNS if any(key in m for m in methods.values())]
    grid = table(("method", "left"), *((short, "right") for _, short in columns))
    for name, m in methods.items():
        star = " *" if name == result["default"] else ""
        grid.add_row(Text(name + star), *(_number(m.get(key), key) for key, _ in columns))
    first = next(iter(methods.values()), {})
    if "comprehensiveness_random" in first:
        grid.add_row(
            Text("random items", style="dim"),
            *(_number(first.get(f"{key}_random"), key) if key in CRITERIA_WITH_RANDOM else "" for key, _ in columns),
        )
    legend = "; ".join(text for short, text in FAITHFULNESS_LEGEND.items() if any(s == short for _, s in columns))
    legend += "; *: the run's default method"
    title = f"{result['data']}: faithfulness over the top-{result['k']} of {result['users']} test users"
    return titled(title, grid, legend)


def _number(value, key: str) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.1f}" if key.startswith("ms") else f"{value:.3f}"


def word_faithfulness_text(words: dict) -> Text:
    """explain-eval's word deletion check as lines: per side and n, top-n drop vs random-n drop."""
    lines = [
        f"word attributions ({words['explained']} items text drives, top {words['k']} of {words['users']} users, "
        f"{words['ms_per_explanation']:.0f} ms each): score drop when the n heaviest words leave a title vs n random"
    ]
    for side in ("candidate", "history"):
        cells = [
            f"n={n}: {v['top']:.3f} vs {v['random']:.3f} ({v['titles']} titles)"
            for n, v in words[side].items()
            if v["titles"]
        ]
        if cells:
            lines.append(f"  {side}: " + "; ".join(cells))
    return Text("\n".join(lines))


def recommendations_table(items, title: str) -> Group:
    grid = table(("rank", "right"), ("item", "left"), ("title", "left"), ("score", "right"))
    for r in items:
        grid.add_row(str(r.rank), Text(r.item_id), Text(r.title), f"{r.score:.3f}")
    return titled(title, grid)


def print_load_report(console: Console, report: LoadReport) -> None:
    """The rows a loader skipped (how many, why, a few examples) and its notes."""
    if report.rows_skipped:
        reasons = "; ".join(f"{n:,} x {reason}" for reason, n in sorted(report.reasons.items(), key=lambda r: -r[1]))
        console.print(Text.assemble((f"skipped {report.rows_skipped:,} bad row(s): ", "yellow"), reasons))
        for example in report.examples:
            console.print(Text(f"  e.g. {example}"))
    for note in report.notes:
        console.print(Text.assemble(("note: ", "yellow"), str(note)))


# ---------------------------------------------------------------------------------------
# figures of one user's explanations (matplotlib loads only when one is drawn)
# ---------------------------------------------------------------------------------------
def why_figure(explanations, path: Path, title: str) -> Path:
    """The heatmap of how much each history item (row) pushed each explained item (column)."""
    from recscope.viz.figures import attribution_heatmap

    weights = np.array([[h.weight for h in e.history] for e in explanations]).T  # (T, K)
    return attribution_heatmap(
        weights,
        [h.title for h in explanations[0].history],
        [f"{e.rank}. {e.title}" for e in explanations],
        path,
        title=title,
    )


def attention_figure(rec: Recommender, history: np.ndarray, path: Path, title: str) -> Path:
    """The final position's attention over ``history`` (the run's item indices), per layer x head."""
    from recscope.explain.attention import final_position_attention
    from recscope.viz.figures import attention_heatmap

    view = final_position_attention(rec.model, rec.tensor(history))
    return attention_heatmap(
        view.weights, [rec.data.title(i) for i in view.items], path, title=title, towers=rec.config.model.towers
    )


# ---------------------------------------------------------------------------------------
# the one place errors become messages
# ---------------------------------------------------------------------------------------
_OS_FIXES = {
    errno.EACCES: "choose a path you may write to, or change its permissions",
    errno.EPERM: "choose a path you may write to, or change its permissions",
    errno.EROFS: "choose a path on a writable disk",
    errno.ENOSPC: "free some disk space, or write somewhere else",
    errno.EDQUOT: "free some disk space, or write somewhere else",
    errno.EISDIR: "give a file name, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EEXIST: "a file is in the way: choose another path or remove it",
    errno.ENOENT: "check the path",
}


def print_error(console: Console, message: str) -> None:
    """``error: <message>`` on one line of ``console``, however long (no wrapping at 80 columns)."""
    message = " ".join(message.split())
    console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True, highlight=False)


def exit_on_error(console: Console, e: BaseException) -> NoReturn:
    """Say in one line on ``console`` what stopped the command and exit with its status (see the
    module's docstring); with ``RECSCOPE_DEBUG=1`` a bug is raised instead."""
    if isinstance(e, RecscopeError):
        print_error(console, str(e))
        sys.exit(2)
    if isinstance(e, KeyboardInterrupt):
        print_error(console, "interrupted")
        sys.exit(130)
    if os.environ.get("RECSCOPE_DEBUG", "") not in ("", "0"):
        raise e
    if isinstance(e, OSError):
        print_error(console, _os_message(e))
        sys.exit(2)
    print_error(console, _internal_error(e))
    sys.exit(1)


def _os_message(e: OSError) -> str:
    where = ": ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    reason = e.strerror or str(e)
    message = f"{where}: {reason}" if where else reason
    fix = _OS_FIXES.get(e.errno) if e.errno is not None else None
    return f"{message}; how to fix: {fix}" if fix else message


def _internal_error(e: BaseException) -> str:
    """Write the traceback to a file; return the line that names the bug and the file."""
    detail = " ".join(f"{type(e).__name__}: {e}".split())
    if len(detail) > 200:
        detail = detail[:199] + "…"
    try:
        fd, path = tempfile.mkstemp(prefix="recscope-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"recscope {' '.join(sys.argv[1:])}\n\n")
            traceback.print_exception(e, file=f)
        where = f"the traceback is in {path}"
    except OSError:
        where = "run again with RECSCOPE_DEBUG=1 to see the traceback"
    return f"internal error ({detail}) — this is a bug in recscope; {where}"
