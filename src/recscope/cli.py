"""recscope's command line: a thin layer over the Python API.

User errors (bad input, unknown ids, missing files) print one message saying what was
wrong, where and how to fix it, and exit with status 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recscope import config as config_mod
from recscope.errors import RecscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="An explainable product recommender.")
console = Console(stderr=True)
out = Console()

DataOpt = Annotated[str, typer.Option("--data", help="csv:FILE | parquet:FILE | s3rec:DIR | movielens:DIR | synthetic[:k=v,...]")]
CatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="csv/parquet catalog: item_id + attribute/text columns")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config (see configs/default.yaml)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: section.key=value")]
MapOpt = Annotated[list[str] | None, typer.Option("--map", help="column mapping ours=yours, e.g. user_id=customer")]


def _columns(mapping: list[str] | None) -> dict[str, str]:
    columns = {}
    for entry in mapping or []:
        ours, sep, theirs = entry.partition("=")
        if not sep:
            raise RecscopeError(f"--map {entry!r} is not ours=yours", fix="e.g. --map user_id=customer")
        columns[ours] = theirs
    return columns


@app.command()
def train(
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="run directory to write")],
    catalog: CatalogOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    map_: MapOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out")] = False,
) -> None:
    """Train a model; the run directory holds weights, config, ids and data."""
    from recscope.data import load_dataset
    from recscope.train import fit

    cfg = config_mod.load(config, set_ or [])
    dataset = load_dataset(data, catalog, cfg.data, _columns(map_))
    _print_report(dataset.report)
    fit(dataset, cfg, out_dir, data_spec=data, catalog=str(catalog) if catalog else None, resume=resume, console=console)


def _print_report(report) -> None:
    if report.rows_skipped:
        console.print(f"[yellow]skipped {report.rows_skipped} bad row(s):[/] {report.reasons}")
        for example in report.examples:
            console.print(f"  e.g. {example}")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")


@app.command("evaluate")
def evaluate_cmd(
    run: Annotated[Path, typer.Argument(help="run directory")],
    split: Annotated[str, typer.Option(help="valid | test")] = "test",
    protocol: Annotated[str, typer.Option(help="full (whole catalog) | sampled (99 negatives)")] = "full",
    baselines: Annotated[bool, typer.Option("--baselines", help="also evaluate popularity and item-kNN")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Evaluate a run on valid or test (full ranking over the catalog by default)."""
    from recscope.recommend import Recommender

    rec = Recommender.load(run)
    results = rec.evaluate(split, protocol, baselines)
    if as_json:
        payload = {"split": split, "protocol": protocol, "metrics": results["recscope"]}
        if baselines:
            payload["baselines"] = {k: v for k, v in results.items() if k != "recscope"}
        out.print_json(json.dumps(payload))
        return
    out.print(metrics_table(results, f"{rec.data.name}: {split} split, {protocol} ranking"))


def metrics_table(results: dict[str, dict], title: str) -> Table:
    keys = ["HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "HR@5", "NDCG@5"]
    table = Table(title=title)
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    for name, metrics in results.items():
        table.add_row(name, *(f"{metrics[k]:.4f}" for k in keys))
    return table


@app.command()
def recommend(
    run: Annotated[Path, typer.Argument(help="run directory")],
    user: Annotated[str | None, typer.Option("--user", help="a user id from the training data")] = None,
    history: Annotated[str | None, typer.Option("--history", help="comma-separated item ids (any user)")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="how many items")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Top-K next items for a user (or a history), with their own ids, titles and scores."""
    from recscope.recommend import Recommender

    rec = Recommender.load(run)
    items = rec.recommend(user, history=history.split(",") if history else None, k=k)
    if as_json:
        out.print_json(json.dumps({"user": user, "items": [r.to_dict() for r in items]}))
        return
    table = Table(title=f"top {k} for user {user}" if user else f"top {k} for the given history")
    for col in ("rank", "item_id", "title", "score"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for r in items:
        table.add_row(str(r.rank), r.item_id, r.title, f"{r.score:.3f}")
    out.print(table)


@app.command()
def explain(
    run: Annotated[Path, typer.Argument(help="run directory")],
    user: Annotated[str, typer.Option("--user", help="a user id from the training data")],
    png: Annotated[Path | None, typer.Option("--png", help="write the attention heatmap here")] = None,
    top: Annotated[int, typer.Option("--top", help="history items to list")] = 5,
) -> None:
    """The final position's attention over the user's history, per layer and head."""
    from recscope.explain.attention import final_position_attention
    from recscope.recommend import Recommender

    rec = Recommender.load(run)
    view = final_position_attention(rec.model, rec.tensor(rec.history(user)))
    titles = [rec.data.title(i) for i in view.items]
    mean = view.mean()
    table = Table(title=f"user {user}: history items the final position attends to most (last layer, head mean)")
    for col in ("position", "item_id", "title", "attention"):
        table.add_column(col)
    order = mean.argsort()[::-1][:top]
    for p in order:
        table.add_row(str(p + 1), rec.data.item_ids[view.items[p]], titles[p], f"{mean[p]:.3f}")
    out.print(table)
    out.print("[dim]Attention from the final position is the same whatever item is scored: it shows "
              "what the model read, not why one item beat another.[/]")
    if png:
        from recscope.viz.figures import attention_heatmap

        attention_heatmap(view.weights, titles, png, title=f"user {user}: final-position attention")
        out.print(f"heatmap: {png}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="where to write the run and figures")] = Path("demo-out"),
    data: Annotated[str, typer.Option("--data", help="synthetic shop spec")] = "synthetic",
    set_: SetOpt = None,
) -> None:
    """The synthetic shop end to end: train, evaluate against baselines, recommend, explain."""
    from recscope.demo import run_demo

    run_demo(out_dir, data, set_ or [], console=console, out=out)


def main() -> None:
    try:
        app(standalone_mode=False)
    except RecscopeError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
