"""recscope's command line: a thin layer over the Python API.

User errors (bad input, unknown ids, missing files) print one message saying what was
wrong, where and how to fix it, and exit with status 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recscope import config as config_mod
from recscope.errors import RecscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="An explainable product recommender.")
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)  # wide tables stay whole in pipes and logs

DataOpt = Annotated[
    str, typer.Option("--data", help="csv:FILE | parquet:FILE | s3rec:DIR | movielens:DIR | synthetic[:k=v,...]")
]
CatalogOpt = Annotated[
    Path | None, typer.Option("--catalog", help="csv/parquet catalog: item_id + attribute/text columns")
]
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

    cfg = config_mod.load(config, set_ or [])
    dataset = load_dataset(data, catalog, cfg.data, _columns(map_))
    _print_report(dataset.report)
    from recscope.train import fit  # torch loads only once the data is known to be good

    fit(
        dataset, cfg, out_dir, data_spec=data, catalog=str(catalog) if catalog else None, resume=resume, console=console
    )


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
    item: Annotated[str | None, typer.Option("--item", help="explain this item (default: the top K)")] = None,
    top: Annotated[int, typer.Option("--top", help="explain the top K recommendations")] = 10,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="shapley | occlusion | integrated_gradients | grad_input | rollout | attention | all"
            " (default: the run's measured best)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    png: Annotated[Path | None, typer.Option("--png", help="heatmap: history items x recommended items")] = None,
    attention_png: Annotated[
        Path | None, typer.Option("--attention-png", help="final-position attention per layer x head")
    ] = None,
) -> None:
    """Why each recommended item: history and attribute attributions, counterfactual, a sentence."""
    from recscope.explain.api import METHODS
    from recscope.recommend import Recommender

    rec = Recommender.load(run)
    chosen = method or rec.default_method()
    methods = list(METHODS) if chosen == "all" else [chosen]
    results = {m: rec.explain(user, item, top=top, method=m, attentions=as_json) for m in methods}
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
        from recscope.viz.figures import attribution_heatmap

        explanations = results[methods[0]]
        weights = np.array([[h.weight for h in e.history] for e in explanations]).T  # (T, K)
        attribution_heatmap(
            weights,
            [h.title for h in explanations[0].history],
            [f"{e.rank}. {e.title}" for e in explanations],
            png,
            title=f"user {user}: why these items ({methods[0]})",
        )
        out.print(f"heatmap: {png}")
    if attention_png:
        from recscope.explain.attention import final_position_attention
        from recscope.viz.figures import attention_heatmap

        view = final_position_attention(rec.model, rec.tensor(rec.history(user)))
        attention_heatmap(
            view.weights,
            [rec.data.title(i) for i in view.items],
            attention_png,
            title=f"user {user}: final-position attention",
        )
        out.print(f"attention heatmap: {attention_png}")


def _print_explanations(method: str, explanations, default: str) -> None:
    label = f"{method} (default)" if method == default else method
    for e in explanations:
        out.print(f"\n[bold]#{e.rank} {escape(e.title)}[/] ({escape(e.item_id)}) score {e.score:.3f}  [dim]{label}[/]")
        out.print(f"  {escape(e.sentence)}")
        for h in e.top(3):
            out.print(f"    {h.weight:+.3f}  {escape(h.title)}")
        attrs = list(e.attributes_candidate.items())[:3]
        out.print("  candidate: " + ", ".join(f"{escape(k)} {v:+.2f}" for k, v in attrs))


@app.command("explain-eval")
def explain_eval(
    run: Annotated[Path, typer.Argument(help="run directory")],
    users: Annotated[int, typer.Option("--users", help="test users to explain")] = 200,
    methods: Annotated[str | None, typer.Option("--methods", help="comma-separated methods (default: all)")] = None,
    k: Annotated[int, typer.Option("--k", help="explain each user's top K")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Measure how faithful each explanation method is; the best becomes the run's default."""
    from recscope.explain.faithfulness import evaluate_faithfulness
    from recscope.recommend import Recommender
    from recscope.run import save_info

    rec = Recommender.load(run)
    result = evaluate_faithfulness(rec, users=users, methods=methods.split(",") if methods else None, k=k)
    rec.info.state["explain_eval"] = result
    save_info(Path(run), rec.info)
    if as_json:
        out.print_json(json.dumps(result))
        return
    out.print(faithfulness_table(result))
    out.print(f"default method: [bold]{result['default']}[/] (saved in {run}/run.json)")


def faithfulness_table(result: dict) -> Table:
    keys = [
        ("comprehensiveness", "comp"),
        ("comprehensiveness_random", "comp rnd"),
        ("sufficiency", "suff"),
        ("sufficiency_random", "suff rnd"),
        ("topk_exit_rate", "exit"),
        ("topk_exit_rate_random", "exit rnd"),
        ("kendall_tau_loo", "tau LOO"),
        ("planted_hit@1", "planted@1"),
        ("planted_hit@3", "planted@3"),
        ("ms_per_explanation", "ms"),
        ("ms_p99", "ms p99"),
    ]
    table = Table(title=f"{result['data']}: faithfulness over the top-{result['k']} of {result['users']} test users")
    table.add_column("method")
    for _, short in keys:
        table.add_column(short, justify="right")
    for name, m in result["methods"].items():
        table.add_row(
            name + (" *" if name == result["default"] else ""),
            *(f"{m[key]:.3f}" if key in m else "-" for key, _ in keys),
        )
    return table


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="run directory")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for index.html and figures/")],
    users: Annotated[str | None, typer.Option("--users", help="comma-separated user ids to explain")] = None,
    sample: Annotated[int, typer.Option("--sample", help="explain N random users (when --users is not given)")] = 10,
    k: Annotated[int, typer.Option("--k", help="recommendations per user")] = 10,
    methods: Annotated[str | None, typer.Option("--methods", help="comma-separated methods (default: all)")] = None,
    merchant_users: Annotated[
        int, typer.Option("--merchant-users", help="random users aggregated in the merchant view")
    ] = 500,
    seed: Annotated[int, typer.Option("--seed", help="seed of the random samples")] = 0,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="also write PNG figures")] = True,
) -> None:
    """A self-contained HTML report (one file, works offline) plus PNG figures."""
    from recscope.recommend import Recommender
    from recscope.viz.report import build_report

    rec = Recommender.load(run)
    rng = np.random.default_rng(seed)
    ids = rec.data.user_ids
    chosen = [u.strip() for u in users.split(",") if u.strip()] if users else None
    if chosen:
        for u in chosen:
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
    )


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="where to write the run and figures")] = Path("demo-out"),
    data: Annotated[str, typer.Option("--data", help="synthetic shop spec")] = "synthetic",
    set_: SetOpt = None,
    explain_users: Annotated[
        int, typer.Option("--explain-users", help="test users whose explanations are measured for faithfulness")
    ] = 300,
) -> None:
    """The synthetic shop end to end: train, evaluate against baselines, recommend, explain."""
    from recscope.demo import run_demo

    run_demo(out_dir, data, set_ or [], console=console, out=out, explain_users=explain_users)


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
    except Exception as e:
        # Usage errors (missing option, bad value) come from the click bundled inside typer;
        # they know how to print themselves with the command's usage line.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise
