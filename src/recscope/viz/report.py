"""The self-contained HTML report: ``DIR/index.html`` plus static figures in ``DIR/figures/``.

    build_report(rec, users=["42", "77"], out_dir="report")

Data contract + renderer (STYLE.md): :func:`report_data` gathers everything the page shows
into one JSON-serialisable dict (every user's history, top-K, each method's attributions
with their colour scale, the attribute attributions of the method each method's bars come
from, counterfactuals and sentences, the attention per layer and head with its colour
scale, the run's faithfulness measurements and the merchant view); the colour scales are
computed by :func:`recscope.viz.figures.colour_limits`, the rule the PNG figures use, so the
page and the figures cannot disagree. Standard JSON only (no NaN or Infinity). The page is one file whose
inline script draws it as SVG. The data sits in a ``<script type="application/json">``
with every ``<``, ``>`` and ``&`` escaped, the script writes data strings only through
``textContent``, and a Content-Security-Policy with the script's hash blocks anything else
(no network request of any kind, no inline handler smuggled in by a title).

The live page (``GET /ui``, :mod:`recscope.serve.routes.ui`) is drawn by the same renderer:
:func:`history_data` and :func:`page_header` build its one live case in this contract,
``why.html.j2`` is the markup report.js draws into on both pages, and :func:`templates`,
:func:`asset` and :func:`source_hash` serve both renderings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
from markupsafe import Markup

from recscope import versions
from recscope.errors import RunError
from recscope.explain.api import METHODS
from recscope.explain.attention import attention_maps
from recscope.files import atomic_write
from recscope.histories import DISMISS
from recscope.insights import WHOLE_ITEM_FIELDS, global_view
from recscope.progress import track
from recscope.viz.plain import trust
from recscope.viz.versions import report_versions

ASSETS = resources.files("recscope.viz") / "assets"
TOP_DRIVERS = 60


@dataclass
class Case:
    """One history to explain: a known user's whole history, or any history of item ids."""

    label: str  # what the page calls it, e.g. "user 42" or "user 42, before their last purchase"
    user: str | None = None
    history: list[str] | None = None  # own item ids, oldest first (None: the user's whole history)
    note: str = ""  # shown beside the recommendations, e.g. what the shopper really did next


def build_report(
    rec,
    users: list[str] | None = None,
    out_dir: str | Path = "report",
    *,
    cases: list[Case] | None = None,
    k: int = 10,
    methods: list[str] | None = None,
    merchant_users: list[str] | None = None,
    merchant_method: str | None = None,
    figures: bool = True,
    console=None,
    shares=None,
    pseudonyms: Callable[[str], str] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` (and ``out_dir/figures/``); returns the page's path.

    ``users`` (own ids) are explained from their whole histories; ``cases`` adds any
    history. ``merchant_users`` (default: the same users) feed the merchant view, whose attribute
    values are weighed by ``merchant_method`` (default: the run's default method). A run with
    model versions gets the "Versions" tab (``recscope.viz.versions``): what its version changed
    for each case against its parent, and ``shares`` (``Store.helpful_shares()``; None: the run
    has no store) per version. ``pseudonyms`` (``recscope.pseudonyms.Pseudonyms``): every user id
    the page and its figures show is its pseudonym (labels included); histories are still read by
    the real id, here, and never written out.
    """
    cases = [Case(f"user {u}", user=u) for u in users or []] + list(cases or [])
    if not cases:
        raise RunError("the report needs at least one user", fix="pass --users ID,ID or --sample N")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report_data(
        rec,
        cases,
        k=k,
        methods=methods,
        merchant_users=merchant_users,
        merchant_method=merchant_method,
        pseudonyms=pseudonyms,
    )
    if rec.path is not None and versions.listing(rec.path):
        read = [rec.history(c.user) if c.history is None else rec.history_from_ids(c.history) for c in cases]
        histories = [[rec.data.item_ids[i] for i in hist] for hist in read]
        data["versions"] = report_versions(rec, histories, k=k, shares=shares)
    if figures:
        data["figures"] = write_figures(data, out_dir / "figures")
    page = out_dir / "index.html"
    atomic_write(page, lambda p: p.write_text(render(data), encoding="utf-8"))
    if console is not None:
        size = page.stat().st_size / 1024
        console.print(f"report: {page} ({size:,.0f} KiB, {len(cases)} histories, {len(data['methods'])} methods)")
    return page


# ------------------------------------------------------------------------------ data
def report_data(
    rec,
    cases: list[Case],
    *,
    k: int = 10,
    methods: list[str] | None = None,
    merchant_users: list[str] | None = None,
    merchant_method: str | None = None,
    pseudonyms: Callable[[str], str] | None = None,
) -> dict:
    methods = page_methods(rec, methods)
    default = rec.default_method()
    data = rec.data
    tic = time.perf_counter()
    histories = []
    for case in track(cases, "report: explaining users"):
        hist = rec.history(case.user) if case.history is None else rec.history_from_ids(case.history)
        ids = [data.item_ids[i] for i in hist]
        # word attributions for the run's own method only: they re-encode every title variant
        explained = {m: rec.explain(history=ids, top=k, k=k, method=m, words=m == default) for m in methods}
        label, user, note = case.label, case.user, case.note
        if pseudonyms is not None and user is not None:
            name = pseudonyms(user)
            label, user, note = label.replace(user, name), name, note.replace(user, name)
        histories.append(history_data(rec, hist, explained, default, label=label, user=user, note=note))
    merchant_users = merchant_users or [c.user for c in cases if c.user is not None]
    merchant = global_view(rec, merchant_users, k=k, method=merchant_method) if merchant_users else None
    if merchant is not None:
        merchant["drivers"] = merchant["drivers"][:TOP_DRIVERS]  # the page shows 15; the rest is weight
    return {
        **page_header(rec, k, methods),
        "histories": histories,
        "faithfulness": rec.info.state.explain_eval,
        "merchant": merchant,
        "seconds": round(time.perf_counter() - tic, 1),
    }


def page_methods(rec, methods: list[str] | None = None) -> list[str]:
    """The methods a page offers (default: all), checked, with the run's default always among them."""
    methods = methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise RunError(f"unknown explanation method(s) {', '.join(unknown)}", fix=f"use some of {', '.join(METHODS)}")
    default = rec.default_method()
    return methods if default in methods else [default, *methods]


def page_header(rec, k: int, methods: list[str], page: str = "report") -> dict:
    """What the page says about the run and offers as controls (the methods, layers and heads),
    and how far each method's weights can be trusted, in words (``trust``, from the run's
    faithfulness measurements; None before ``recscope explain-eval``)."""
    return {
        "title": f"recscope {page}: {rec.data.name}" + (f" ({rec.path.name})" if rec.path else ""),
        "run": _run_summary(rec),
        "k": k,
        "default_method": rec.default_method(),
        "methods": [
            {"name": m, "description": METHODS[m].description, "target_dependent": METHODS[m].target_dependent}
            for m in methods
        ],
        "layers": rec.config.model.n_layers,
        "heads": rec.config.model.n_heads * rec.config.model.towers,  # every tower's heads, tower by tower
        "towers": rec.config.model.towers,
        "trust": trust(rec.info.state.explain_eval),
    }


def history_data(
    rec, hist: np.ndarray, explained: dict, lead: str, *, label: str, user=None, note: str = "", history=None
) -> dict:
    """One history as the page draws it: ``hist`` (dense indices, oldest first) and
    ``explained`` (method -> the explanations of its recommended items, best first); the
    recommended items, their ranks and scores are those of ``explained[lead]``. ``history``: the
    live History ``hist`` comes from, when there is one: its event labels are read as the model
    reads them, and a dismissal in it is an item with ``"event": "dismiss"``."""
    data = rec.data
    read = hist[-rec.config.model.max_len :]
    first = explained[lead]
    codes = None if history is None else rec.event_codes(history)
    labels = None if codes is None else rec.tensor(codes)[0]
    maps = _round(attention_maps(rec.model, rec.tensor(hist)[0], labels)[:, :, -1, :].numpy())  # (L, H, T)
    marks = getattr(history, "dismissals", None)
    shown = [_item(data, int(i)) for i in read]
    if marks is not None:
        for item, dismissal in zip(shown, marks[-len(read) :].tolist(), strict=True):
            if dismissal:
                item["event"] = DISMISS
    return {
        "label": label,
        "note": note,
        "user": user,
        "length": int(len(hist)),
        "history": shown,
        "recs": [{**_item(data, data.item_index(e.item_id)), "score": _r(e.score), "rank": e.rank} for e in first],
        "attention": maps,
        "attention_scale": _scale(maps, signed=False),
        # history side per attribute method (attention and rollout share Shapley's), item side once
        "attributes": {es[0].attributes_method: _history_attributes(es) for es in explained.values() if es},
        "candidate_attributes": [[[key, _r(w)] for key, w in e.attributes_candidate.items()] for e in first],
        "explanations": {m: _explained(es) for m, es in explained.items()},
    }


def _item(data, item: int) -> dict:
    """An item as the page shows it: own id, title and its attribute values."""
    return {
        "id": data.item_ids[item],
        "title": data.title(item),
        "attrs": {f.name: f.labels(item) for f in data.fields if f.labels(item)},
    }


def _explained(explanations) -> dict:
    """One method's explanations of a top-K: (K, T) weights, their colour scale, the method its
    attribute bars come from, sentences and counterfactuals."""
    weights = [[_r(h.weight) for h in e.history] for e in explanations]
    return {
        "weights": weights,
        "scale": _scale(weights, signed=True),
        "attributes_method": explanations[0].attributes_method if explanations else "",
        "sentences": [e.sentence for e in explanations],
        "counterfactuals": [_counterfactual(e) for e in explanations],
        "words": [_words(e) for e in explanations],
        "ms": _r(sum(e.ms for e in explanations)),
    }


def _words(e) -> dict | None:
    """An item's word attributions (None when not asked or text does not drive it): per text its
    [word, weight] pairs in text order, and the colour limit shared by all of them (largest |weight|)."""
    if e.words is None:
        return None
    offset = e.history[0].position if e.history else 0
    texts = [{"label": "its title", "title": e.title, "index": None, "words": e.words.candidate}] + [
        {"label": "history", "title": h.title, "index": h.position - offset, "words": h.words} for h in e.words.history
    ]
    for text in texts:
        text["words"] = [[w.word, _r(w.weight)] for w in text["words"]]
    limit = max((abs(w) for t in texts for _, w in t["words"] if w is not None), default=0.0)
    return {"text_share": _r(e.words.text_share), "texts": texts, "limit": _r(limit) or 1.0}


def _history_attributes(explanations) -> list[list]:
    """Per recommended item, [field, weight] pairs of the history side, largest |weight| first."""
    return [[[key, _r(w)] for key, w in e.attributes_history.items()] for e in explanations]


def _scale(values, signed: bool) -> dict:
    """The colour scale of a heatmap, by the rule the PNG figures use (one function for both)."""
    from recscope.viz.figures import colour_limits

    scale = colour_limits(np.array(values, dtype=float), signed=signed)
    return {"low": _r(scale.low), "high": _r(scale.high), "note": scale.note}


def _counterfactual(e) -> dict | None:
    cf = e.counterfactual
    if cf is None:
        return None
    offset = e.history[0].position if e.history else 0
    return {
        "found": cf.found,
        "kind": cf.kind,  # own_score_fell | others_rose | not_found
        "removed": [h.position - offset for h in cf.removed],  # indices into the history the page shows
        "new_rank": cf.new_rank,
        "k": cf.k,
        "replaced_by": cf.replaced_by,
        "score_before": _r(cf.score_before) if cf.score_before is not None else None,
        "score_after": _r(cf.score_after) if cf.score_after is not None else None,
        "cutoff": _r(cf.cutoff) if cf.cutoff is not None else None,
    }


def _run_summary(rec) -> dict:
    state = rec.info.state
    test = state.evaluations.get("test/full", {}).get("recscope")
    return {
        "data": rec.info.data_spec,
        "users": rec.data.n_users,
        "items": rec.data.n_items,
        "events": rec.data.n_events,
        "best_epoch": state.best_epoch,
        "test": {m: _r(test[m]) for m in ("HR@10", "NDCG@10", "MRR@10") if m in test} if test else None,
    }


def _r(x: float) -> float | None:
    """4 significant digits: the page shows 2-3, and the file stays small."""
    x = float(x)
    return None if not math.isfinite(x) else float(f"{x:.4g}")


def _round(array: np.ndarray):
    return [_round(a) for a in array] if array.ndim > 1 else [_r(x) for x in array]


# ------------------------------------------------------------------------------ figures
def write_figures(data: dict, directory: Path) -> list[str]:
    """The page's pictures as files (PNG): per history the heatmap, attention grid and the top
    item's attribute bars; the deletion curves; the merchant charts. Returns relative paths."""
    from recscope.viz import figures as F

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    default = data["default_method"]
    for n, h in enumerate(data["histories"], start=1):
        titles = [i["title"] for i in h["history"]]
        recs = [f"{r['rank']}. {r['title']}" for r in h["recs"]]
        if not recs:
            continue
        weights = np.array(h["explanations"][default]["weights"], dtype=float).T  # (T, K)
        written.append(
            F.attribution_heatmap(
                weights, titles, recs, directory / f"{n:02d}_why.png", title=f"{h['label']}: why ({default})"
            )
        )
        written.append(
            F.attention_heatmap(
                np.array(h["attention"], dtype=float),
                titles,
                directory / f"{n:02d}_attention.png",
                title=f"{h['label']}: final-position attention (the same for every candidate)",
                towers=data["towers"],
            )
        )
        by = h["explanations"][default]["attributes_method"]
        history_side = [[f"history: {key}", w] for key, w in h["attributes"][by][0]]
        written.append(
            F.attribute_bars(
                dict(h["candidate_attributes"][0] + history_side),
                directory / f"{n:02d}_attributes.png",
                title=f"{h['label']}: what made #1 “{h['recs'][0]['title']}” score (history fields: {by})",
            )
        )
    if data.get("faithfulness"):
        written.append(F.deletion_curves(data["faithfulness"], directory / "deletion_curves.png"))
    if data.get("merchant"):
        view = data["merchant"]
        # as on the page: attribute values in the chart, the item's own id / text in the title
        whole = [d for d in view["drivers"] if d["field"] in WHOLE_ITEM_FIELDS]
        values = dict(view, drivers=[d for d in view["drivers"] if d["field"] not in WHOLE_ITEM_FIELDS])
        title = f"What drives recommendations ({view['users']:,} users, top-{view['k']}, {_weighed_by(view)})"
        if whole:
            title += "\nbeside these, of all the push: " + ", ".join(
                f"the items' own {d['label']} {100 * d['share']:.0f}%" for d in whole
            )
        written.append(F.drivers_chart(values, directory / "drivers.png", title=title))
        for field in view["recommended"]:
            written.append(F.recommended_mix(view, directory / f"mix_{_slug(field)}.png", field=field))
        written.append(F.popularity_chart(view, directory / "popularity.png"))
    return [str(p.relative_to(directory.parent)) for p in written]


def _weighed_by(view: dict) -> str:
    """Which method weighed a merchant view's values, e.g. "by shapley" or "by attention (its values by shapley)"."""
    fields = view.get("fields_method") or view["method"]
    return f"by {view['method']}" + (f" (its values by {fields})" if fields != view["method"] else "")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40] or "field"


# ------------------------------------------------------------------------------ page
def payload(data: dict) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' survive, so no '</script>' or '<!--' can."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def templates(*first: jinja2.BaseLoader) -> jinja2.Environment:
    """Autoescaping, strict templates: ``first`` loaders, then the report's assets (whose
    ``why.html.j2`` holds the markup report.js draws into, shared with the live page)."""
    loader = jinja2.ChoiceLoader([*first, jinja2.PackageLoader("recscope.viz", "assets")])
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)


def asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def source_hash(text: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script or style."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def render(data: dict) -> str:
    script = asset("report.js")
    return (
        templates()
        .get_template("report.html.j2")
        .render(
            title=data["title"],
            script=Markup(script),
            style=Markup(asset("report.css")),
            data=Markup(payload(data)),
            script_hash=source_hash(script),
            versions=bool(data.get("versions")),
        )
    )
