"""recscope's command line: a thin layer over the Python API.

Its tables, figures and error lines are :mod:`recscope.views`' (the demo and a torchrun process
print the same): what a user sees when something goes wrong is one line on stderr, never a
traceback; a bad option value is one too (``...; how to fix: see `recscope CMD --help```),
status 2. Every string that came from the user or the data (ids, titles, paths, sentences) is
printed as rich ``Text`` or escaped, never parsed as markup: an id like ``[bold]u0`` prints as itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.padding import Padding
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup

from recscope import config as config_mod
from recscope.errors import RecscopeError
from recscope.views import (
    attention_figure,
    exit_on_error,
    faithfulness_table,
    metrics_table,
    print_error,
    print_load_report,
    recommendations_table,
    table,
    task_table,
    terminal_width,
    titled,
    why_figure,
    word_faithfulness_text,
)


# ---------------------------------------------------------------------------------------
# help without type labels
# ---------------------------------------------------------------------------------------
class _Argument(TyperArgument):
    def display_type_rich(self, ctx) -> str | None:
        return None  # the metavar (RUN) already names it; typer would add "<path>"


def _plain(params: list) -> list:
    """Typer's rich help prints a type label beside every parameter, flags included
    (``--help <bool>``, ``--set <list[str]>``). Our options carry a metavar (``N``, ``DIR``,
    ``KEY=VALUE``), which typer prints instead; flags take no value, so theirs is empty."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        if type(param) is TyperArgument:
            param.__class__ = _Argument
    return params


class _Command(TyperCommand):
    def get_params(self, ctx) -> list:
        return _plain(super().get_params(ctx))

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [p.strip("{}") for p in super().collect_usage_pieces(ctx)]  # "{RUN}" -> "RUN"


class _Group(TyperGroup):
    def get_params(self, ctx) -> list:
        return _plain(super().get_params(ctx))


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, help="An explainable product recommender.")
command = app.command


def _command(name: str | None = None):
    return command(name, cls=_Command)


console = Console(stderr=True, width=terminal_width(sys.stderr))
out = Console(width=terminal_width(sys.stdout))

RunArg = Annotated[Path, typer.Argument(metavar="RUN", help="run directory (written by train)", show_default=False)]
DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        metavar="SPEC",
        help="csv:FILE | parquet:FILE | s3rec:DIR | movielens:DIR | synthetic[:k=v,...] | prepared:DIR",
    ),
]
CatalogOpt = Annotated[
    Path | None,
    typer.Option("--catalog", metavar="FILE", help="csv/parquet catalog: item_id + attribute/text columns"),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", metavar="FILE", help="YAML config (see configs/default.yaml)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="override a config key: section.key=value (repeatable)"),
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option("--map", metavar="OURS=YOURS", help="column mapping ours=yours, e.g. user_id=customer (repeatable)"),
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", metavar="URL", help="store URL (default: $RECSCOPE_DB, else store.sqlite in the run)"),
]
MethodsOpt = Annotated[
    str | None, typer.Option("--methods", metavar="M,M", help="comma-separated methods (default: all)")
]


def _at_least_one(value: int | None) -> int | None:
    # Our words, not the argument parser's: they differ between typer/click releases.
    if value is not None and value < 1:
        raise typer.BadParameter(f"{value} is not a whole number greater than or equal to 1")
    return value


def _count(flags: tuple[str, ...], help: str):
    """An option counting something: a whole number of at least 1 (0 or -1 is a usage error)."""
    return typer.Option(*flags, metavar="N", callback=_at_least_one, help=help)


def _version(value: bool) -> None:
    if value:
        try:
            v = package_version("recscope")
        except PackageNotFoundError:  # run from a source tree that was never installed
            v = "unknown (not installed)"
        out.print(Text(f"recscope {v}"))
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="print recscope's own version and exit (recscope serve RUN --version ID picks a model version)",
        ),
    ] = False,
) -> None:
    """An explainable product recommender."""


@_command()
def train(
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="run directory to write")],
    catalog: CatalogOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    map_: MapOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out")] = False,
    nproc: Annotated[
        int,
        _count(("--nproc",), "train in N processes on this machine: DistributedDataParallel, started by torchrun"),
    ] = 1,
) -> None:
    """Train a model; the run directory holds weights, config, ids and data."""
    from recscope.data import column_map, load_dataset

    cfg = config_mod.load(config, set_ or [])
    if cfg.train.tower_shards and (nproc > 1 or resume):
        raise RecscopeError(
            "train.tower_shards trains its shards one after another in one process, each from scratch",
            fix="leave out --nproc and --resume, or set train.tower_shards=false",
        )
    if nproc > 1:  # the same command in N processes (recscope.distributed); a bad config fails here, once
        from recscope.distributed import launch

        args = ["--data", data, "--out", str(out_dir)]
        args += ["--catalog", str(catalog)] if catalog else []
        args += ["--config", str(config)] if config else []
        for item in set_ or []:
            args += ["--set", item]
        for item in map_ or []:
            args += ["--map", item]
        code = launch(nproc, args + (["--resume"] if resume else []))
        if code:
            raise RecscopeError(
                f"training in {nproc} processes failed (torchrun exit status {code})",
                fix="see the processes' messages above",
            )
        return
    dataset = load_dataset(data, catalog, cfg.data, column_map(map_))
    print_load_report(console, dataset.report)
    if cfg.train.tower_shards:  # each tower trained alone on its shard of the users (recscope.shards)
        from recscope.shards import fit_sharded

        fit_sharded(dataset, cfg, out_dir, data_spec=data, catalog=str(catalog) if catalog else None, console=console)
        return
    from recscope.train import fit  # torch loads only once the data is known to be good

    fit(
        dataset, cfg, out_dir, data_spec=data, catalog=str(catalog) if catalog else None, resume=resume, console=console
    )


# ---------------------------------------------------------------------------------------
# data: generate the shop at any size, prepare a data set once for many runs
# ---------------------------------------------------------------------------------------
data_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Generate the synthetic shop at any size; prepare data.")
app.add_typer(data_app, name="data")


@data_app.command("generate", cls=_Command)
def data_generate(
    users: Annotated[int, _count(("--users",), "shoppers")],
    items: Annotated[int, _count(("--items",), "catalog items (100 or more)")],
    events: Annotated[int, _count(("--events",), "purchases (at least one per shopper)")],
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="folder for the two Parquet files")],
    seed: Annotated[int, typer.Option("--seed", metavar="S", min=0, help="everything follows from it")] = 0,
) -> None:
    """The synthetic shop with its planted causes at any size, streamed to Parquet:
    DIR/interactions.parquet and DIR/catalog.parquet (same as synthetic:users=N,items=M,events=E,seed=S)."""
    from recscope.data import scale
    from recscope.data.synthetic import parse_spec

    shop = parse_spec(f"users={users},items={items},events={events},seed={seed}")
    written = scale.write(shop, out_dir)
    out.print(
        Text(
            f"{written.events:,} events of {written.users:,} users over {written.items:,} items in "
            f"{written.seconds:.1f} s: {written.interactions}, {written.catalog}"
        )
    )


@data_app.command("prepare", cls=_Command)
def data_prepare(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="any --data spec, e.g. parquet:FILE", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="folder for the prepared data set")],
    catalog: CatalogOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    map_: MapOpt = None,
) -> None:
    """Read, check and map ids once; recscope train --data prepared:DIR reuses the result
    (with the same data.* settings) without reading the raw files again."""
    from recscope.data import column_map
    from recscope.data.prepare import prepare

    cfg = config_mod.load(config, set_ or [])
    done = prepare(spec, out_dir, catalog, cfg.data, column_map(map_))
    print_load_report(console, done.data.report)
    out.print(Text(done.data.describe()))
    out.print(
        Text(
            f"prepared in {done.seconds_load + done.seconds_write:.1f} s (read and checked {done.seconds_load:.1f} s, "
            f"written {done.seconds_write:.1f} s): train with --data prepared:{done.out}"
        )
    )


# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------


# A cold_items run's evaluation adds these groups of cases beside the scorers' metrics, each
# with the cases it counts, and "cases" (recscope.evaluate.cold_start).
COLD_GROUPS = {
    "cold_items": ("cold_items", "held-out (cold) targets, ranked over the whole catalog"),
    "warm_items": ("warm_items", "warm targets, ranked over the whole catalog"),
    "cold_items_among_cold": ("cold_items", "held-out targets, ranked among the held-out items only"),
}


@_command("evaluate")
def evaluate_cmd(
    run: RunArg,
    split: Annotated[str, typer.Option(metavar="SPLIT", help="valid | test")] = "test",
    protocol: Annotated[
        str, typer.Option(metavar="NAME", help="full (whole catalog) | sampled (99 negatives)")
    ] = "full",
    baselines: Annotated[bool, typer.Option("--baselines", help="also evaluate popularity and item-kNN")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Evaluate a run on valid or test (full ranking over the catalog by default; a rating or click
    run: its task's metrics against its baseline)."""
    from recscope.evaluate import evaluate_run
    from recscope.lock import RunLock
    from recscope.recommend import Recommender
    from recscope.run import load_info
    from recscope.tasks import TASKS

    load_info(run)  # a missing or damaged run fails here, before the lock
    with RunLock(run, "evaluate", console, create=False):  # it records its metrics: refused while the run trains
        rec = Recommender.load(run)
        results = evaluate_run(rec, split, protocol, baselines)
    cold = {k: results.pop(k) for k in (*COLD_GROUPS, "cases") if k in results}  # a cold_items run's report
    task = TASKS[rec.config.train.task]
    if as_json:
        if task.ranks_catalog:
            payload = {"split": split, "protocol": protocol, "metrics": results["recscope"]}
        else:  # the baseline is always measured: the task's numbers mean little without it
            payload = {"split": split, "task": task.name, "metrics": results["recscope"]}
        if baselines or not task.ranks_catalog:
            payload["baselines"] = {k: v for k, v in results.items() if k != "recscope"}
        out.print_json(json.dumps(payload | cold))
        return
    if not task.ranks_catalog:
        out.print(task_table(results, f"{rec.data.name}: {split} split, {task.name} task"))
        return
    out.print(metrics_table(results, f"{rec.data.name}: {split} split, {protocol} ranking"))
    for group, (counted, title) in COLD_GROUPS.items():
        if group in cold:
            out.print(metrics_table(cold[group], f"{title} ({cold['cases'][counted]:,} {split} cases)"))


@_command()
def recommend(
    run: RunArg,
    user: Annotated[str | None, typer.Option("--user", metavar="ID", help="a user id from the training data")] = None,
    history: Annotated[
        str | None, typer.Option("--history", metavar="ID,ID", help="comma-separated item ids (any user)")
    ] = None,
    k: Annotated[int, _count(("-k", "--k"), "how many items")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Top-K next items for a user (or a history), with their own ids, titles and scores."""
    from recscope.recommend import Recommender

    rec = Recommender.load(run)
    items = rec.recommend(user, history=_history_ids(history), k=k)
    if as_json:
        out.print_json(json.dumps({"user": user, "items": [r.to_dict() for r in items], "unknown": items.unknown}))
        return
    _note_unknown(items.unknown)
    out.print(recommendations_table(items, f"top {k} for user {user}" if user else f"top {k} for the given history"))


@_command()
def explain(
    run: RunArg,
    user: Annotated[str, typer.Option("--user", metavar="ID", help="a user id from the training data")],
    item: Annotated[
        str | None, typer.Option("--item", metavar="ID", help="explain this item (default: the top K)")
    ] = None,
    top: Annotated[int, _count(("--top",), "explain the top K recommendations")] = 10,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            metavar="NAME",
            help="shapley | occlusion | integrated_gradients | grad_input | rollout | attention | all"
            " (default: the run's measured best)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    words: Annotated[
        bool,
        typer.Option("--words", help="which words of the titles drive the items text drives (re-encodes them: slower)"),
    ] = False,
    png: Annotated[
        Path | None, typer.Option("--png", metavar="FILE", help="heatmap: history items x recommended items")
    ] = None,
    attention_png: Annotated[
        Path | None, typer.Option("--attention-png", metavar="FILE", help="final-position attention per layer x head")
    ] = None,
) -> None:
    """Why each recommended item: history and attribute attributions, counterfactual, a sentence."""
    from recscope.explain.api import METHODS
    from recscope.recommend import Recommender

    rec = Recommender.load(run)
    chosen = method or rec.default_method()
    methods = list(METHODS) if chosen == "all" else [chosen]
    results = {m: rec.explain(user, item, top=top, method=m, attentions=as_json, words=words) for m in methods}
    if as_json:
        payload = {m: [e.to_dict() for e in ex] for m, ex in results.items()}
        out.print_json(
            json.dumps(
                payload if chosen == "all" else {"user": user, "method": chosen, "explanations": payload[chosen]}
            )
        )
    else:
        for m, explanations in results.items():
            _print_explanations(m, explanations, rec.default_method())
    if png:
        why_figure(results[methods[0]], png, title=f"user {user}: why these items ({methods[0]})")
        out.print(Text(f"heatmap: {png}"))
    if attention_png:
        attention_figure(rec, rec.history(user), attention_png, title=f"user {user}: final-position attention")
        out.print(Text(f"attention heatmap: {attention_png}"))


def _history_ids(history: str | None) -> list[str] | None:
    """``--history a,b,c`` as item ids (ids are kept exactly; empty entries are no ids)."""
    if history is None:
        return None
    ids = [i for i in history.split(",") if i]
    if not ids:
        raise RecscopeError(f"--history {history!r} holds no item id", fix="e.g. --history ITEM1,ITEM2")
    return ids


def _note_unknown(ids: list[str]) -> None:
    if ids:
        shown = ", ".join(repr(i) for i in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        console.print(
            Text(f"note: skipped {len(ids)} history item(s) this run does not know: {shown}"),
            highlight=False,
            soft_wrap=True,  # one line a log can be searched for, whatever the width
        )


def _print_explanations(method: str, explanations, default: str) -> None:
    label = f"{method} (default)" if method == default else method
    for e in explanations:
        if e.status == "owned":
            head, where = e.title, "already in the history, not recommended"
        else:
            head = f"#{e.rank} {e.title}"
            where = f"score {e.score:.3f}" + (f", outside the top {e.k}" if e.status == "outside_top_k" else "")
        out.print()
        out.print(Text.assemble((head, "bold"), f" ({e.item_id}) {where}  ", (label, "dim")))
        out.print(Padding(Text(e.sentence), (0, 0, 0, 2), expand=False))  # wrapped lines keep the indent
        for h in e.top(3):
            out.print(Padding(Text(f"{h.weight:+.3f}  {h.title}"), (0, 0, 0, 4), expand=False))
        attrs = ", ".join(f"{k} {v:+.2f}" for k, v in list(e.attributes_candidate.items())[:3])
        out.print(Padding(Text(f"candidate: {attrs}"), (0, 0, 0, 2), expand=False))
        if e.words is not None:
            titles = [("its title", e.words.candidate)] + [(f"“{h.title}”", h.words) for h in e.words.history]
            for label, weighed in titles:
                shown = "  ".join(f"{w.word} {w.weight:+.2f}" for w in weighed)
                out.print(Padding(Text(f"words of {label}: {shown}"), (0, 0, 0, 2), expand=False))


@_command("explain-eval")
def explain_eval(
    run: RunArg,
    users: Annotated[int, _count(("--users",), "test users to explain")] = 200,
    methods: MethodsOpt = None,
    k: Annotated[int, _count(("--k",), "explain each user's top K")] = 10,
    word_users: Annotated[
        int,
        typer.Option(
            "--word-users", metavar="N", min=0, help="test users whose word attributions are measured (0: none)"
        ),
    ] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Measure how faithful each explanation method is; the best becomes the run's default."""
    from recscope.explain.faithfulness import evaluate_faithfulness, evaluate_word_faithfulness
    from recscope.lock import RunLock
    from recscope.recommend import Recommender
    from recscope.run import load_info, record_explain_eval

    load_info(run)  # a missing or damaged run fails here, before the lock
    with RunLock(run, "explain-eval", console, create=False):  # one writer: refused while the run trains
        rec = Recommender.load(run)
        result = evaluate_faithfulness(rec, users=users, methods=methods.split(",") if methods else None, k=k)
        words = evaluate_word_faithfulness(rec, users=word_users) if word_users else None
        if words is not None:
            result["words"] = words
        record_explain_eval(run, result, "explain-eval")
    if as_json:
        out.print_json(json.dumps(result))
        return
    out.print(faithfulness_table(result))
    if result.get("words"):
        out.print(word_faithfulness_text(result["words"]))
    out.print(Text.assemble("default method: ", (result["default"], "bold"), f" (saved in {run}/run.json)"))


@_command()
def report(
    run: RunArg,
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="folder for index.html and figures/")],
    users: Annotated[
        str | None, typer.Option("--users", metavar="ID,ID", help="comma-separated user ids to explain")
    ] = None,
    sample: Annotated[int, _count(("--sample",), "explain N random users (when --users is not given)")] = 10,
    k: Annotated[int, _count(("--k",), "recommendations per user")] = 10,
    methods: MethodsOpt = None,
    merchant_users: Annotated[int, _count(("--merchant-users",), "random users aggregated in the merchant view")] = 500,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="seed of the random samples")] = 0,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="also write PNG figures")] = True,
    pseudonymise: Annotated[
        bool,
        typer.Option(
            "--pseudonymise",
            help="show user ids as keyed pseudonyms (key: $RECSCOPE_PSEUDONYM_KEY, else RUN/pseudonym.key)",
        ),
    ] = False,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="store whose feedback gives each version's explanation-helpful shares and whose tombstones"
            " leave forgotten users out (default: $RECSCOPE_DB, else the run's store.sqlite when it has one)",
        ),
    ] = None,
) -> None:
    """A self-contained HTML report (one file, works offline) plus PNG figures."""
    from recscope.pseudonyms import Pseudonyms
    from recscope.recommend import Recommender
    from recscope.serve.store import STORE_FILE, Store
    from recscope.viz.report import build_report

    rec = Recommender.load(run)
    db = db or os.environ.get("RECSCOPE_DB") or None
    shares = None  # no store: the report says there is no feedback to read
    forgotten: dict[str, float] = {}  # no store, no tombstones: the run's users as trained (docs/privacy.md)
    if db or (Path(run) / STORE_FILE).exists():
        with Store.open(db) if db else Store.for_run(run) as store:
            shares = store.helpful_shares()
            forgotten = store.forgotten()
    rng = np.random.default_rng(seed)
    ids = [u for u in rec.data.user_ids if u not in forgotten] if forgotten else rec.data.user_ids
    chosen = [u.strip() for u in users.split(",") if u.strip()] if users else None
    if chosen:
        for u in chosen:
            if u in forgotten:
                raise RecscopeError(
                    f"--users: user {u!r} has been forgotten (the store's tombstone)", fix="leave it out"
                )
            rec.data.user_index(u)  # unknown ids fail here, named, before any work
    else:
        chosen = [ids[i] for i in sorted(rng.choice(len(ids), min(sample, len(ids)), replace=False))]
    crowd = sorted(set(chosen) | {ids[i] for i in rng.choice(len(ids), min(merchant_users, len(ids)), replace=False)})
    build_report(
        rec,
        chosen,
        out_dir,
        k=k,
        methods=methods.split(",") if methods else None,
        merchant_users=crowd,
        figures=figures,
        console=out,
        shares=shares,
        pseudonyms=Pseudonyms.for_run(run, ids) if pseudonymise else None,
    )


def _key_from_env(option: str, variable: str | None) -> str | None:
    """The key the environment variable ``variable`` holds (None: no ``option`` given); unset or
    empty is an error naming it, never an open service the user meant to close."""
    if variable is None:
        return None
    key = os.environ.get(variable, "")
    if not key:
        raise RecscopeError(
            f"{option} {variable}: that environment variable is unset or empty",
            fix=f"export {variable}=<a long random key>, or leave out {option}",
        )
    return key


@_command()
def serve(
    run: RunArg,
    db: DbOpt = None,
    host: Annotated[
        str, typer.Option("--host", metavar="ADDR", help="address to bind (beyond loopback only with --api-key-env)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="N", min=1, max=65535, help="TCP port")] = 8000,
    version: Annotated[
        str | None,
        typer.Option("--version", metavar="ID", help="model version to serve (default: the run's current one)"),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            metavar="VAR",
            help="environment variable holding the X-API-Key that write and admin routes require",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            help="worker processes over one store, each with the model (default: the CPUs this process may use)",
        ),
    ] = None,
    threads: Annotated[int, typer.Option("--threads", metavar="T", min=1, help="torch threads per worker")] = 1,
    read_key_env: Annotated[
        str | None,
        typer.Option(
            "--read-key-env",
            metavar="VAR",
            help="environment variable holding the X-API-Key that reads of personal data require "
            "(a user's history, lists, explanations; the write key works too)",
        ),
    ] = None,
    busy_after: Annotated[
        float | None,
        typer.Option(
            "--busy-after",
            metavar="SECONDS",
            min=0.001,
            help="a request that waits longer than this for the model is refused: 503, reason busy, Retry-After "
            "(default 10)",
        ),
    ] = None,
    ui_writes: Annotated[
        bool,
        typer.Option(
            "--ui-writes",
            help="the web view's buttons write events and feedback as the shopper shown (default: read-only)",
        ),
    ] = False,
    pseudonymise: Annotated[
        bool,
        typer.Option(
            "--pseudonymise",
            help="the web view shows user ids as keyed pseudonyms"
            " (key: $RECSCOPE_PSEUDONYM_KEY, else RUN/pseudonym.key)",
        ),
    ] = False,
) -> None:
    """The live service: recommendations, explanations and events over HTTP (docs at /docs).
    --version picks the model version to serve (recscope --version prints recscope's own)."""
    import uvicorn

    from recscope.serve.app import create_app, load_service
    from recscope.serve.settings import LOOPBACK, Settings
    from recscope.serve.workers import run_workers

    db = db or os.environ.get("RECSCOPE_DB") or None
    api_key = _key_from_env("--api-key-env", api_key_env)
    read_key = _key_from_env("--read-key-env", read_key_env)
    if host not in LOOPBACK and api_key is None:
        raise RecscopeError(
            f"--host {host!r} is not a loopback address: serving beyond this machine needs an API key",
            fix="use --host 127.0.0.1, or set a key with --api-key-env VAR",
        )
    if pseudonymise and ui_writes:
        raise RecscopeError(
            "--pseudonymise with --ui-writes: a page that acts as the shopper posts their real id",
            fix="leave out one of them",
        )
    workers = workers or len(os.sched_getaffinity(0))
    settings = Settings(
        run=run,
        version=version,
        db=db,
        host=host,
        port=port,
        api_key=api_key,
        read_key=read_key,
        ui_writes=ui_writes,
        pseudonymise=pseudonymise,
        **({} if busy_after is None else {"busy_after": busy_after}),
        workers=workers,
        threads=threads,
    )
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    keyed = "; writes need the X-API-Key header" if api_key else ""
    keyed += "; reads of personal data need X-API-Key" if read_key else ""
    where = f"the web view at {base}/ui, the API docs at {base}/docs{keyed}"
    if workers > 1:  # uvicorn's process manager starts them, and replaces one that dies
        run_workers(
            settings,
            lambda served: console.print(
                f"serving {run} (model version {served}) with {workers} workers: {where}", highlight=False
            ),
        )
        return
    from recscope.cpu import use_threads

    use_threads(threads)  # and each request thread takes it (Service.model)
    service = load_service(settings)
    console.print(f"serving {run} (model version {service.model_version}): {where}", highlight=False)
    uvicorn.run(create_app(settings, service=service), host=host, port=port)


@_command()
def finetune(
    run: RunArg,
    db: DbOpt = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="VERSION|TIME",
            help="learn from events received after this version was made, or this time (epoch seconds or ISO); "
            "default: after the serving version was made",
        ),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option("--budget", metavar="SECONDS", min=0.001, help="stop training after this many seconds"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    progress: Annotated[
        Path | None,
        typer.Option("--progress", metavar="FILE", help="keep FILE rewritten with the stage and share done (JSON)"),
    ] = None,
) -> None:
    """Fine-tune the serving version on the store's new events and feedback; promote it if not worse."""
    from recscope.finetune import finetune as run_finetune
    from recscope.run import load_info
    from recscope.serve.store import Store

    load_info(run)  # a missing or damaged run is named before a store is opened in it
    db = db or os.environ.get("RECSCOPE_DB") or None  # the service's jobs pass it so (not in ps)
    with Store.open(db) if db else Store.for_run(run) as store:
        result = run_finetune(run, store, since=since, budget=budget, progress=progress, console=console)
    if as_json:
        print(json.dumps(result.to_dict()), flush=True)
        return
    out.print(f"{result.verdict}: {result.reason}", highlight=False)
    if result.version is not None:
        out.print(f"version {result.version} (parent {result.parent}) in {result.seconds:.1f} s", highlight=False)


@_command("versions")
def versions_cmd(
    run: RunArg,
    promote: Annotated[
        str | None,
        typer.Option("--promote", metavar="ID", help="serve this version from now on (rolling back: an older one)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """The run's model versions, oldest first; the one served is marked with * (--promote ID changes it)."""
    from recscope import versions
    from recscope.lock import RunLock
    from recscope.run import load_info

    load_info(run)
    if promote is not None:
        with RunLock(run, "promote", console, create=False):
            versions.promote(run, promote)
    listed, served = versions.listing(run), versions.current(run)
    if as_json:
        out.print_json(json.dumps({"current": served, "versions": [v.to_dict() for v in listed]}))
        return
    if not listed:
        out.print(f"{run} has no model versions (trained before versions existed): its model.safetensors is served")
        return
    grid = table(("", "left"), ("version", "left"), ("created (UTC)", "left"), ("source", "left"), ("valid", "right"))
    for v in listed:
        valid = (v.details.get("best_valid") or {}).get("NDCG@10")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created))
        grid.add_row("*" if v.id == served else "", v.id, when, v.source, "" if valid is None else f"{valid:.4f}")
    out.print(titled(f"model versions of {run}", grid, "* the version served; valid: NDCG@10 on the valid split"))


@_command()
def federated(
    data: DataOpt,
    clients: Annotated[int, _count(("--clients",), "clients the users are dealt to (by a hash of their id)")],
    rounds: Annotated[int, _count(("--rounds",), "FedAvg rounds")],
    out_dir: Annotated[Path, typer.Option("--out", metavar="RUN", help="run directory to write")],
    catalog: CatalogOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    map_: MapOpt = None,
    local_epochs: Annotated[int, _count(("--local-epochs",), "epochs each client trains per round")] = 1,
    fraction: Annotated[
        float,
        typer.Option("--fraction", metavar="SHARE", min=0.0, max=1.0, help="share of the clients sampled each round"),
    ] = 1.0,
    dp_noise: Annotated[
        float,
        typer.Option("--dp-noise", metavar="SIGMA", min=0.0, help="DP on the aggregate: noise multiplier (0: off)"),
    ] = 0.0,
    dp_clip: Annotated[
        float,
        typer.Option("--dp-clip", metavar="NORM", min=0.0, help="DP on the aggregate: L2 clip of each client's update"),
    ] = 0.0,
    cpus: Annotated[
        int, typer.Option("--cpus", metavar="N", min=0, help="clients trained at once (0: the CPUs available)")
    ] = 0,
) -> None:
    """Federated training with Flower (simulation): each client trains on its own users, the server
    averages their weights (FedAvg); the result is a run like train's."""
    from recscope.data import column_map, load_dataset

    cfg = config_mod.load(config, set_ or [])
    dataset = load_dataset(data, catalog, cfg.data, column_map(map_))
    print_load_report(console, dataset.report)
    from recscope.federated import Federation, federate  # torch and Flower load once the data is good

    plan = Federation(clients, rounds, local_epochs, fraction, dp_noise, dp_clip, cpus)
    federate(dataset, cfg, out_dir, plan, data_spec=data, catalog=str(catalog) if catalog else None, console=console)


def _run_store(run: Path, db: str | None):
    """The store ``--db`` names ($RECSCOPE_DB), else the run's own; the run is checked first, so a
    missing or damaged run is named before a store is opened in it."""
    from recscope.run import load_info
    from recscope.serve.store import Store

    load_info(run)
    db = db or os.environ.get("RECSCOPE_DB") or None
    return Store.open(db) if db else Store.for_run(run)


@_command()
def forget(
    run: RunArg,
    user: Annotated[str, typer.Option("--user", metavar="ID", help="the user to forget")],
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Forget a user: delete their stored rows and write their tombstone (every reader hides their
    training events); a run with sharded towers trains the shard that held them again."""
    from recscope.forget import forget as forget_user

    with _run_store(run, db) as store:
        result = forget_user(run, user, store, console=console)
    if as_json:
        print(json.dumps(result), flush=True)
        return
    deleted = ", ".join(f"{n} {what}" for what, n in result["deleted"].items())
    out.print(f"forgot {user}: deleted {deleted}; tombstone written", highlight=False)
    if result["version"] is not None:
        shards = ", ".join(map(str, result["shards_retrained"])) or "none"
        out.print(f"version {result['version']} (shards trained again: {shards}) is served", highlight=False)


@_command()
def retrain(
    run: RunArg,
    out_dir: Annotated[Path, typer.Option("--out", metavar="RUN2", help="run directory to write")],
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Train a new run from scratch on the run's data and the store's events, without every
    forgotten user; its version records the tombstones it honoured."""
    from recscope.forget import retrain as retrain_run

    with _run_store(run, db) as store:
        result = retrain_run(run, store, out_dir, console=console)
    if as_json:
        print(json.dumps(result), flush=True)
        return
    t = result["tombstones"]
    out.print(
        f"{result['run']}: version {result['version']}, trained without {t['count']} forgotten users "
        f"({result['lineage']['events_left_out']} events left out)",
        highlight=False,
    )


@_command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="where to write the run and figures")] = Path(
        "demo-out"
    ),
    data: Annotated[str, typer.Option("--data", metavar="SPEC", help="synthetic shop spec")] = "synthetic",
    set_: SetOpt = None,
    explain_users: Annotated[
        int, _count(("--explain-users",), "test users whose explanations are measured for faithfulness")
    ] = 300,
) -> None:
    """The synthetic shop end to end: train, evaluate against baselines, recommend, explain."""
    from recscope.demo import run_demo

    run_demo(out_dir, data, set_ or [], console=console, out=out, explain_users=explain_users)


# ---------------------------------------------------------------------------------------
# errors: one line each (recscope.views.exit_on_error)
# ---------------------------------------------------------------------------------------


def _usage_message(e) -> str:
    message = e.format_message().strip().rstrip(".")
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else "recscope"
    return f"{message}; how to fix: see `{path} --help`"


def main(argv: list[str] | None = None) -> None:
    """``argv``: the arguments (default: the command line's)."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="recscope")
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        exit_on_error(console, KeyboardInterrupt())
    except (Exception, KeyboardInterrupt) as e:
        # Usage errors (missing option, bad value) come from the click bundled inside typer.
        if callable(getattr(e, "format_message", None)) and isinstance(getattr(e, "exit_code", None), int):
            if type(e).__name__ == "NoArgsIsHelpError":
                e.show()  # `recscope` alone prints the help
            else:
                print_error(console, _usage_message(e))
            sys.exit(e.exit_code)
        exit_on_error(console, e)
    if code == 130:  # typer turns Ctrl-C into this status and returns it
        print_error(console, "interrupted")
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":  # python -m recscope.cli ...
    main()
