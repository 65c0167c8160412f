"""Static figures of explanations (matplotlib); PNG or SVG, chosen by the path's suffix.

Every figure has a title, labelled axes and a legend or a colour bar with units, and
stays readable for histories of 50+ items and long titles (shortened with "…").
Strings from data (titles, ids, attribute values) are plain text: ``$`` is escaped so
mathtext never runs, and SVG text (kept as text, not paths) is XML-escaped by matplotlib.

one user:       attribution_heatmap, attention_heatmap, attribute_bars
faithfulness:   deletion_curves          (the JSON of ``recscope explain-eval RUN --json``)
merchant view:  drivers_chart, recommended_mix, popularity_chart
                (the dict of ``recscope.insights.global_view(rec, users, k)``)

Every function returns the Path it wrote.
"""

from __future__ import annotations

import functools
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize, TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from recscope.errors import RecscopeError  # noqa: E402

# ---------------------------------------------------------------------------------------
# shared style: fonts, colours, sizes, saving
# ---------------------------------------------------------------------------------------

DPI = 120
FORMATS = ("png", "svg")
UP, DOWN = "#2166ac", "#b2182b"  # pushed the score up / down (the ends of the RdBu colour map)
BASELINE = "#8c8c8c"  # random baselines, catalog / interaction shares: the thing to compare against
COMPARE = "#bdbdbd"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
FIELD_ORDER = ("brand", "category", "price", "text", "id")  # fixed colours for the usual fields
MAX_HEIGHT = 14.0  # inches; a taller heatmap gets thinner rows instead
ROW_CHARS, COLUMN_CHARS, BAR_CHARS = 44, 32, 40  # label widths before "…"
ROTATION = 50  # degrees, column labels of heatmaps when they do not fit flat

_STYLE = {
    "text.usetex": False,
    "svg.fonttype": "none",  # SVG text stays text: searchable, selectable, smaller files
    "svg.hashsalt": "recscope",  # stable element ids: the same figure gives the same file
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.titlelocation": "left",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.dpi": DPI,
}


def _styled(draw):
    """Run a figure function under the shared style without touching the caller's rcParams."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(_STYLE):
            return draw(*args, **kwargs)

    return wrapper


def _target(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise RecscopeError(f"cannot write a figure to {path}: unknown format", fix="end the path with .png or .svg")
    return path


def _save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG or SVG (by suffix), creating parent directories; always closes it."""
    try:
        path = _target(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = path.suffix.lower().lstrip(".")
        metadata = {"Date": None} if fmt == "svg" else None  # no timestamp: reproducible files
        fig.savefig(path, format=fmt, dpi=DPI, bbox_inches="tight", pad_inches=0.15, metadata=metadata)
    except OSError as e:
        if e.filename is None:  # a failed write (disk full) names no file: say which one
            e.filename = str(path)
        raise
    finally:
        plt.close(fig)
    return path


def shorten(text: str, width: int = 48) -> str:
    """Collapse whitespace and cut to ``width`` characters, ending with "…" when cut."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _label(text, width: int | None = None) -> str:
    """Text from data as plain matplotlib text: shortened (if ``width``) and ``$`` escaped."""
    text = shorten(text, width) if width else " ".join(str(text).split())
    return text.replace("$", r"\$")


def _wrap(text: str, width_in: float, size: float = 11) -> str:
    """Wrap each line of a title to ``width_in`` inches (roughly 0.55 em per character)."""
    chars = max(20, int(width_in * 72 / (size * 0.55)))
    lines = [w for line in str(text).split("\n") for w in textwrap.wrap(_label(line), chars, break_on_hyphens=False)]
    return "\n".join(lines) or " "


def _fmt(value: float) -> str:
    """Signed number for an annotation: 2 decimals below 10, typographic minus, no "-0.00"."""
    if not math.isfinite(value):
        return "–"
    a = abs(value)
    text = f"{value:.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.2f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return text.replace("-", "\u2212")


def _floats(values) -> list[float]:
    """A JSON list of numbers (null = missing) as floats with nan for missing."""
    return [float("nan") if v is None else float(v) for v in values or []]


def _colours(names, fixed: tuple[str, ...] = ()) -> dict[str, str]:
    """A stable colour per name: ``fixed`` names first in their order, the others as they come."""
    ordered = [n for n in fixed if n in names] + [n for n in names if n not in fixed]
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(dict.fromkeys(ordered))}


# ---------------------------------------------------------------------------------------
# one user: history heatmaps and attribute bars
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColourScale:
    """Colour limits of a heatmap and what its legend says about them."""

    low: float
    high: float
    note: str  # e.g. "colour scale ±9.12 (the largest |value|)"


def colour_limits(values, *, signed: bool = True) -> ColourScale:
    """The colour scale of a heatmap, fitted to the data so that no cell is clipped.

    Signed values (attributions) get ±max|value|, centred on zero so that white means 0;
    non-negative ones (attention) get 0..max. Missing values (nan) are ignored; with no
    non-zero value the scale is ±1 (0..1). The report page applies the same rule.
    """
    a = np.abs(np.asarray(values, dtype=float))
    a = a[np.isfinite(a)]
    top = float(a.max()) if a.size else 0.0
    if top <= 0:
        top = 1.0
    if signed:
        return ColourScale(-top, top, f"colour scale ±{top:.3g} (the largest |value|)")
    return ColourScale(0.0, top, f"colour scale 0 to {top:.3g} (the largest value)")


def label_rows(importance: np.ndarray, gap: int, first: int = 10) -> tuple[list[int], list[int]]:
    """Which rows of a tall heatmap get a label when only every ``gap``-th row has room.

    The ``first`` rows with the largest importance are placed first (a row too close to a
    more important one is skipped: its neighbour's label is there), then the newest (last)
    row, then every row that still has room, newest first. Returns (labelled rows in order,
    the important ones among them).
    """
    T = len(importance)
    if gap <= 1:
        return list(range(T)), []
    free = np.ones(T, dtype=bool)
    chosen, important = [], []
    by_importance = np.argsort(-np.nan_to_num(np.asarray(importance, dtype=float), nan=-np.inf), kind="stable")
    head = [int(i) for i in by_importance[:first]]
    for i, row in enumerate(head + list(range(T - 1, -1, -1))):
        if free[row]:
            free[max(0, row - gap + 1) : row + gap] = False
            chosen.append(row)
            if i < len(head):
                important.append(row)
    return sorted(chosen), sorted(important)


def _heatmap(
    matrix: np.ndarray,
    row_labels: list[str],
    column_labels: list[str],
    path: str | Path,
    title: str,
    *,
    cmap: str,
    scale: ColourScale,
    colour_label: str,
    column_title: str,
    important: str,
    groups: int = 0,
    annotate: bool | None = None,
) -> Path:
    """Rows = history (oldest at top), columns on top; sizes and fonts follow the row count.

    When the rows are too thin for a label each, the rows with the largest |value| in any
    column are labelled first (in bold), then as many others as fit; the axis title says
    how many rows have no label. ``important`` names that rule for the reader.
    """
    T, K = matrix.shape
    if T == 0 or K == 0:
        raise RecscopeError(f"nothing to draw in {title!r}: the heatmap has shape {matrix.shape}")
    if len(row_labels) != T or len(column_labels) != K:
        raise ValueError(
            f"heatmap of shape {matrix.shape} needs {T} row labels and {K} column labels, "
            f"got {len(row_labels)} and {len(column_labels)}"
        )
    rows = [_label(f"{i + 1}. {shorten(r, ROW_CHARS)}") for i, r in enumerate(row_labels)]
    columns = [_label(c, COLUMN_CHARS) for c in column_labels]

    # sizes (inches / points): rows shrink so the figure stays under MAX_HEIGHT
    row_h = float(np.clip((MAX_HEIGHT - 2.5) / max(T, 1), 0.06, 0.3))
    col_w = float(np.clip(9.0 / max(K, 1), 0.42, 0.72))
    row_pt, col_pt = row_h * 72, col_w * 72
    row_fs = min(8.0, row_pt * 0.62)
    gap = 1
    if row_fs < 6:  # too many rows for one label each: labels at least `gap` rows apart
        row_fs = 6.0
        gap = math.ceil(row_fs * 1.3 / row_pt)
    importance = np.nanmax(np.abs(np.where(np.isfinite(matrix), matrix, np.nan)), axis=1, initial=0.0)  # (T,)
    shown, bold = label_rows(importance, gap)
    value_fs = min(7.5, row_pt * 0.55, col_pt / 3.4)
    annotate = value_fs >= 5 if annotate is None else annotate
    column_fs = 8.0
    longest = max((len(c) for c in columns), default=1)
    rotate = longest * column_fs * 0.55 > col_pt * 0.9
    label_w = max((len(rows[i]) for i in shown), default=1) * row_fs * 0.55 / 72
    head_h = 1.0 + (longest * column_fs * 0.55 / 72 * math.sin(math.radians(ROTATION)) if rotate else 0.2)
    fig_w = max(5.5, label_w + K * col_w + 1.7)
    fig_h = min(MAX_HEIGHT + 2.0, head_h + T * row_h + 0.5)

    fig, ax = plt.subplots(figsize=(fig_w, fig_h), layout="constrained")
    norm = TwoSlopeNorm(0.0, scale.low, scale.high) if scale.low < 0 else Normalize(scale.low, scale.high)
    image = ax.imshow(matrix, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    if rotate:
        ax.set_xticks(range(K), columns, rotation=ROTATION, ha="left", rotation_mode="anchor", fontsize=column_fs)
    else:
        ax.set_xticks(range(K), columns, fontsize=column_fs)
    ax.set_yticks(shown, [rows[i] for i in shown], fontsize=row_fs)
    for tick, i in zip(ax.get_yticklabels(), shown, strict=True):
        if i in bold:
            tick.set_fontweight("bold")
    ax.tick_params(length=0)
    ax.set_xlabel(column_title, labelpad=8)
    unlabelled = T - len(shown)
    ax.set_ylabel(
        "history (oldest at top)"
        + (f"\n{unlabelled} of {T} rows unlabelled; bold = the {len(bold)} with {important}" if unlabelled else "")
    )
    if row_pt >= 6:  # thin white rules between cells, where rows are tall enough to see them
        ax.set_xticks(np.arange(K + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(T + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=0.8)
        ax.tick_params(which="minor", length=0)
    for g in range(1, groups):  # e.g. layer boundaries
        ax.axvline(g * (K // groups) - 0.5, color="#404040", linewidth=1.2)
    if annotate:
        for r in range(T):
            for c in range(K):
                v = float(matrix[r, c])
                shade = (norm(v) - 0.5) * 2 if isinstance(norm, TwoSlopeNorm) else norm(v)
                dark = math.isfinite(v) and abs(float(np.clip(shade, -1, 1))) > 0.6
                ax.text(c, r, _fmt(v), ha="center", va="center", fontsize=value_fs, color="white" if dark else "black")
    bar = fig.colorbar(image, ax=ax, shrink=float(min(1.0, 5.0 / max(T * row_h, 1e-6))), aspect=25)
    bar.set_label(f"{colour_label}\n{scale.note}")
    bar.outline.set_visible(False)
    ax.set_title(_wrap(title, fig_w), loc="left", pad=10)
    return _save(fig, path)


@_styled
def attribution_heatmap(
    weights: np.ndarray,
    row_labels: list[str],
    column_labels: list[str],
    path: str | Path,
    title: str,
    unit: str = "attribution (score change)",
    annotate: bool | None = None,
) -> Path:
    """weights (T, K): rows = history items (oldest at top), columns = recommended items.

    A diverging map centred on zero: blue pushed the item up, red pushed it down. The colour
    scale runs to ±max|weight| (:func:`colour_limits`), so no cell is clipped; every cell is
    annotated with its value while rows are tall enough (``annotate`` forces it on or off).
    """
    weights = np.asarray(weights, dtype=float)  # (T, K)
    return _heatmap(
        weights,
        row_labels,
        column_labels,
        path,
        title,
        cmap="RdBu",
        scale=colour_limits(weights),
        colour_label=f"{unit}\nblue = pushed up, red = pushed down",
        column_title="recommended item (rank order)",
        important="the largest |weight|",
        annotate=annotate,
    )


@_styled
def attention_heatmap(
    weights: np.ndarray,
    row_labels: list[str],
    path: str | Path,
    title: str = "Attention from the final position",
    annotate: bool | None = None,
    towers: int = 1,
) -> Path:
    """weights (n_layers, n_heads, T): rows = history items, columns = layer x head. With
    ``towers`` (model.towers) the heads are each tower's in turn, labelled "L1 T2H1"."""
    weights = np.asarray(weights, dtype=float)
    n_layers, n_heads, T = weights.shape
    matrix = weights.transpose(2, 0, 1).reshape(T, n_layers * n_heads)  # (T, L*H)
    per = n_heads // towers
    head_names = [f"T{h // per + 1}H{h % per + 1}" if towers > 1 else f"H{h + 1}" for h in range(n_heads)]
    columns = [f"L{layer + 1} {head}" for layer in range(n_layers) for head in head_names]
    return _heatmap(
        matrix,
        row_labels,
        columns,
        path,
        title,
        cmap="Blues",
        scale=colour_limits(matrix, signed=False),
        colour_label="attention weight (each column sums to 1)",
        column_title="layer × head",
        important="the most attention",
        groups=n_layers,
        annotate=annotate,
    )


def _bar_frame(width: float, plot_height: float):
    """A figure with a thin header row (title, then the legend) above the plot."""
    fig, (key, ax) = plt.subplots(
        2, 1, figsize=(width, plot_height + 0.8), layout="constrained", height_ratios=[0.3, plot_height]
    )
    key.axis("off")
    return fig, key, ax


def _header(key, title: str, width: float, handles: list, legend_title: str | None = None) -> None:
    if handles:
        key.legend(
            handles=handles,
            loc="center left",
            ncol=min(len(handles), 6),
            borderaxespad=0,
            title=legend_title,
            alignment="left",
        )
    key.set_title(_wrap(title, width), loc="left")


def _value_labels(ax, positions, values, horizontal: bool, fontsize: float = 7.5, color: str = "#222222", fmt=_fmt):
    """A value at the end of each bar, outside it (left of negative bars)."""
    for p, v in zip(positions, values, strict=True):
        if not math.isfinite(v):
            continue
        sign = 1 if v >= 0 else -1
        if horizontal:
            xy, offset, ha, va = (v, p), (3 * sign, 0), "left" if sign > 0 else "right", "center"
        else:
            xy, offset, ha, va = (p, v), (0, 2 * sign), "center", "bottom" if sign > 0 else "top"
        ax.annotate(fmt(v), xy, xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=fontsize, color=color)


def _pad_limits(ax, values, horizontal: bool, room: float = 0.16) -> None:
    """Room for the value labels beyond the longest bars, on both sides of zero."""
    finite = [v for v in values if math.isfinite(v)] or [0.0]
    lo, hi = min(0.0, *finite), max(0.0, *finite)
    span = (hi - lo) or 1.0
    limits = (lo - room * span if lo < 0 else 0.0, hi + room * span if hi > 0 else 0.0)
    if limits[0] == limits[1]:
        limits = (-1.0, 1.0)
    (ax.set_xlim if horizontal else ax.set_ylim)(*limits)


@_styled
def attribute_bars(
    weights: dict[str, float],
    path: str | Path,
    title: str = "Which attributes drove this recommendation",
    top: int = 12,
    unit: str = "contribution to the score",
) -> Path:
    """Horizontal bars of attribute-value contributions ("brand=Acme", "text", "id", ...).

    Sorted by |weight|, the ``top`` largest shown and the rest summed into "other (n)";
    blue bars pushed the score up, red ones down.
    """
    items = sorted(
        ((str(k), float(v)) for k, v in weights.items() if v is not None and math.isfinite(float(v))),
        key=lambda kv: -abs(kv[1]),
    )
    shown = items if len(items) <= top + 1 else items[:top]  # "other (1)" would hide nothing
    rest = items[len(shown) :]
    labels = [_label(k, BAR_CHARS) for k, _ in shown]
    values = [v for _, v in shown]
    if rest:
        labels.append(f"other ({len(rest)})")
        values.append(sum(v for _, v in rest))

    n = max(len(values), 1)
    fig, key, ax = _bar_frame(7.0, 0.8 + 0.3 * n)
    positions = np.arange(len(values))
    colours = [UP if v >= 0 else DOWN for v in values]
    bars = ax.barh(positions, values, color=colours, height=0.65)
    if rest:
        bars[-1].set_alpha(0.45)
        bars[-1].set_hatch("///")
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()  # largest at top
    ax.axvline(0, color="#333333", linewidth=0.9)
    _value_labels(ax, positions, values, horizontal=True)
    _pad_limits(ax, values, horizontal=True)
    ax.set_xlabel(unit)
    ax.tick_params(axis="y", length=0)
    ax.spines["left"].set_visible(False)
    if not values:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no attribute contributions to show", transform=ax.transAxes, ha="center", color=BASELINE)
    handles = [Patch(color=UP, label="pushed the score up"), Patch(color=DOWN, label="pushed it down")]
    _header(key, title, 7.0, handles)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------
# faithfulness
# ---------------------------------------------------------------------------------------


@_styled
def deletion_curves(result: dict, path: str | Path, title: str | None = None) -> Path:
    """Faithfulness made visible, from the JSON of ``recscope explain-eval RUN --json``.

    Left: mean score drop after removing each method's top-k history items (k = 0..5;
    higher = more faithful). Right: the drop when keeping only the top-k (lower = more
    faithful). One line per method; the random baseline dashed grey; the default method
    emphasised and named "(default)". The random orders are shared by all methods, so
    one baseline line is drawn (the default method's).
    """
    methods: dict = result.get("methods") or {}
    if not methods:
        raise RecscopeError(
            "no methods to draw deletion curves for",
            fix="pass the JSON object printed by `recscope explain-eval RUN --json`",
        )
    default = result.get("default")
    colours = _colours(list(methods))
    order = [m for m in methods if m != default] + ([default] if default in methods else [])  # default on top
    baseline = methods.get(default) or next(iter(methods.values()))

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.4), layout="constrained")
    panels = (
        (
            axes[0],
            "deletion_curve",
            "remove the top-k (higher = more faithful)",
            "k most important items removed",
            True,
        ),
        (axes[1], "keep_curve", "keep only the top-k (lower = more faithful)", "k most important items kept", False),
    )
    handles = {}
    for ax, key, panel_title, xlabel, from_zero in panels:
        longest = 0
        for name in order:
            curve = _floats(methods[name].get(key))
            if not curve:
                continue
            xs = list(range(0 if from_zero else 1, len(curve) + 1))
            ys = [0.0] + curve if from_zero else curve
            longest = max(longest, len(curve))
            main = name == default
            label = name + (" (default)" if main else "")
            if methods[name].get("target_dependent") is False:
                label += " (same for every item)"
            (line,) = ax.plot(
                xs,
                ys,
                color=colours[name],
                linewidth=2.8 if main else 1.4,
                marker="o",
                markersize=5 if main else 3,
                alpha=1.0 if main else 0.85,
                zorder=3 if main else 2,
                label=_label(label),
            )
            handles.setdefault(name, line)
        random = _floats(baseline.get(key + "_random"))
        if random:
            xs = list(range(0 if from_zero else 1, len(random) + 1))
            (line,) = ax.plot(
                xs,
                [0.0] + random if from_zero else random,
                color=BASELINE,
                linestyle="--",
                linewidth=1.6,
                marker="o",
                markersize=3,
                zorder=1,
                label="random order (baseline)",
            )
            handles.setdefault("\0random", line)
            longest = max(longest, len(random))
        ax.axhline(0, color="#333333", linewidth=0.8, zorder=1.5)
        ax.set_xticks(range(0 if from_zero else 1, max(longest, 1) + 1))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean score drop (model score)")
        ax.set_title(panel_title, fontsize=10)
        ax.grid(axis="y", color="#e6e6e6", linewidth=0.8)
        ax.set_axisbelow(True)
    legend_order = ([default] if default in handles else []) + [m for m in handles if m != default]
    fig.legend(
        [handles[m] for m in legend_order],
        [handles[m].get_label() for m in legend_order],
        loc="outside right center",
    )
    if title is None:
        where = ", ".join(
            part
            for part in (
                str(result["data"]) if result.get("data") else "",
                f"{result['users']:,} users" if result.get("users") is not None else "",
                f"top-{result['k']}" if result.get("k") is not None else "",
            )
            if part
        )
        title = "Faithfulness: does removing what a method calls important change the score?"
        title += f" ({where})" if where else ""
    fig.suptitle(_wrap(title, 10.5, 11), x=0.01, ha="left", fontsize=11)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------
# merchant view, over many users (the dict of recscope.insights.global_view)
# ---------------------------------------------------------------------------------------


def _scope(view: dict) -> str:
    parts = []
    if view.get("users") is not None:
        parts.append(f"{view['users']:,} users")
    if view.get("k") is not None:
        parts.append(f"top-{view['k']}")
    if view.get("method"):
        parts.append(_label(view["method"]))
    return ", ".join(parts)


def _percent(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:.1f}%"


@_styled
def drivers_chart(view: dict, path: str | Path, top: int = 15, title: str | None = None) -> Path:
    """Which attribute values drive recommendations: one bar per value, coloured by field.

    ``view["drivers"]``: ``[{"label", "field", "weight" (mean contribution per
    recommendation), "share" (optional: its part of all the push), "count"}]``; the ``top``
    largest weights are shown, largest at top. With shares, a bar is the value's share of all the
    push behind the recommendations (negative: it pushed them down), as the report's page shows it.
    """
    drivers = sorted(view.get("drivers") or [], key=lambda d: -float(d.get("weight", 0.0)))
    shown = drivers[:top]
    shares = bool(shown) and all(d.get("share") is not None for d in shown)
    values = [
        math.copysign(float(d["share"]), float(d.get("weight", 0.0))) if shares else float(d.get("weight", 0.0))
        for d in shown
    ]
    fields = [str(d.get("field", "other")) for d in shown]
    colours = _colours(fields, FIELD_ORDER)

    fig, key, ax = _bar_frame(7.5, 0.9 + 0.3 * max(len(shown), 1))
    positions = np.arange(len(shown))
    ax.barh(positions, values, color=[colours[f] for f in fields], height=0.65)
    ax.set_yticks(positions, [_label(d.get("label", "?"), BAR_CHARS) for d in shown])
    ax.invert_yaxis()
    ax.axvline(0, color="#333333", linewidth=0.9)
    counts = [d.get("count") for d in shown]
    _value_labels(ax, positions, values, horizontal=True, fmt=_percent if shares else _fmt)
    _pad_limits(ax, values, horizontal=True, room=0.3)
    for p, v, c in zip(positions, values, counts, strict=True):
        if c is not None and math.isfinite(v):
            sign = 1 if v >= 0 else -1
            ax.annotate(
                f"in {int(c):,} recs",
                (v, p),
                xytext=(32 * sign, 0),
                textcoords="offset points",
                ha="left" if sign > 0 else "right",
                va="center",
                fontsize=7,
                color=BASELINE,
            )
    if shares:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("share of all that pushed the recommendations (negative: pushed them down)")
    else:
        ax.set_xlabel("mean contribution per recommendation (model score)")
    ax.tick_params(axis="y", length=0)
    ax.spines["left"].set_visible(False)
    if not shown:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no drivers to show", transform=ax.transAxes, ha="center", color=BASELINE)
    if title is None:
        more = f"; top {len(shown)} of {len(drivers)} values" if len(drivers) > len(shown) else ""
        title = f"What drives recommendations ({_scope(view)}{more})"
    _header(key, title, 7.5, [Patch(color=c, label=_label(f)) for f, c in colours.items()])
    return _save(fig, path)


def _shares(counts: dict) -> dict[str, float]:
    total = float(sum(v for v in counts.values() if v))
    return {str(k): (float(v or 0) / total if total else 0.0) for k, v in counts.items()}


@_styled
def recommended_mix(
    view: dict, path: str | Path, field: str = "category", top: int = 12, title: str | None = None
) -> Path:
    """Share of recommendations vs share of catalog items per value of ``field``.

    The ``top`` values by the larger of the two shares (so a big category never recommended
    shows too), ordered by share of recommendations; the rest summed into "other (n)".
    """
    recommended = (view.get("recommended") or {}).get(field)
    if recommended is None:
        known = ", ".join(sorted(view.get("recommended") or {})) or "none"
        raise RecscopeError(f"the view has no recommendation counts for field {field!r}", fix=f"use one of: {known}")
    rec = _shares(recommended)
    cat = _shares((view.get("catalog") or {}).get(field) or {})
    values = list(dict.fromkeys([*rec, *cat]))
    chosen = sorted(values, key=lambda v: -max(rec.get(v, 0.0), cat.get(v, 0.0)))[:top]
    chosen.sort(key=lambda v: (-rec.get(v, 0.0), -cat.get(v, 0.0)))
    rest = [v for v in values if v not in set(chosen)]
    labels = [_label(v, BAR_CHARS) for v in chosen]
    rec_values = [rec.get(v, 0.0) for v in chosen]
    cat_values = [cat.get(v, 0.0) for v in chosen]
    if rest:
        labels.append(f"other ({len(rest)})")
        rec_values.append(sum(rec.get(v, 0.0) for v in rest))
        cat_values.append(sum(cat.get(v, 0.0) for v in rest))

    n = max(len(labels), 1)
    fig, key, ax = _bar_frame(7.5, 0.9 + 0.42 * n)
    positions = np.arange(len(labels))
    h = 0.38
    n_recs = sum(v for v in recommended.values() if v)
    n_items = sum(v for v in ((view.get("catalog") or {}).get(field) or {}).values() if v)
    ax.barh(positions - h / 2, rec_values, height=h, color=UP, label=f"share of recommendations ({n_recs:,})")
    ax.barh(positions + h / 2, cat_values, height=h, color=COMPARE, label=f"share of catalog items ({n_items:,})")
    _value_labels(ax, positions - h / 2, rec_values, horizontal=True, fontsize=7, fmt=_percent)
    _value_labels(ax, positions + h / 2, cat_values, horizontal=True, fontsize=7, color="#666666", fmt=_percent)
    _pad_limits(ax, rec_values + cat_values, horizontal=True, room=0.14)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    ax.tick_params(axis="y", length=0)
    ax.spines["left"].set_visible(False)
    ax.set_xlabel(f"share (%) of recommendations / of catalog items, per {_label(field)}")
    ax.grid(axis="x", color="#ececec", linewidth=0.8)
    ax.set_axisbelow(True)
    if title is None:
        title = f"Recommended {field} vs the catalog ({_scope(view)})"
    _header(key, title, 7.5, ax.get_legend_handles_labels()[0])
    return _save(fig, path)


@_styled
def popularity_chart(view: dict, path: str | Path, title: str | None = None) -> Path:
    """Share of recommendations vs share of interactions per popularity bucket, with coverage.

    A recommender that only repeats best-sellers puts most of its bars in "top 1%".
    """
    popularity = view.get("popularity") or {}
    labels = [_label(b) for b in popularity.get("labels") or []]
    rec = _floats(popularity.get("recommended"))
    inter = _floats(popularity.get("interactions"))
    if not (len(labels) == len(rec) == len(inter)):
        raise RecscopeError(
            f"popularity buckets do not line up: {len(labels)} labels, {len(rec)} recommended, "
            f"{len(inter)} interactions shares",
            fix="give one share per label in both lists (the schema of recscope.insights.global_view)",
        )
    fig, key, ax = _bar_frame(7.5, 3.6)
    positions = np.arange(len(labels))
    w = 0.38
    ax.bar(positions - w / 2, rec, width=w, color=UP, label="share of recommendations")
    ax.bar(positions + w / 2, inter, width=w, color=COMPARE, label="share of interactions (training data)")
    _value_labels(ax, positions - w / 2, rec, horizontal=False, fontsize=7.5, fmt=_percent)
    _value_labels(ax, positions + w / 2, inter, horizontal=False, fontsize=7.5, color="#666666", fmt=_percent)
    _pad_limits(ax, rec + inter, horizontal=False, room=0.12)
    ax.set_xticks(positions, labels)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("item popularity bucket (items ranked by number of interactions)")
    ax.set_ylabel("share (%)")
    ax.grid(axis="y", color="#ececec", linewidth=0.8)
    ax.set_axisbelow(True)
    if title is None:
        coverage = view.get("coverage") or {}
        title = "Popularity of what gets recommended"
        if coverage.get("share") is not None:
            title += f": coverage {_percent(float(coverage['share']))}"
            if coverage.get("catalog_items") is not None:
                title += f" of {int(coverage['catalog_items']):,} items"
        details = [_scope(view)] if _scope(view) else []
        if coverage.get("recommended_items") is not None:
            details.insert(0, f"{int(coverage['recommended_items']):,} distinct items recommended")
        title += "\n" + "; ".join(details) if details else ""
    _header(key, title, 7.5, ax.get_legend_handles_labels()[0])
    return _save(fig, path)
