"""What a person at the command line sees: one-line errors, ids printed as given, help and
tables that read at 100 columns and in a pipe, --version, progress.

Most cases call ``recscope.cli.main`` in this process (its error handling included); the
ones about the real console script (a pipe, a signal) run it as a subprocess.
"""

import functools
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from recscope import cli, views
from recscope.progress import track

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SCRIPT = Path(sys.executable).parent / "recscope"

# ids and titles a shop might have that rich would read as markup
USER, OTHER_USER = "[bold]u0", "[red]"
ITEM, OTHER_ITEM = "item[/]3", "[link=x]i2"
TITLE, OTHER_TITLE = "[red]Red kettle[/red]", "Mug [/] deluxe"


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_main(monkeypatch, capsys, *args: str, width: int = 100) -> Result:
    """``recscope ARGS`` through ``cli.main`` (exit code, stdout at ``width`` columns, stderr)."""
    capsys.readouterr()
    buf = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buf, width=width, force_terminal=False))
    monkeypatch.setattr(sys, "argv", ["recscope", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    captured = capsys.readouterr()
    return Result(code, buf.getvalue() + captured.out, captured.err)


def recscope(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("COLUMNS", None)  # a pipe, as a log or `| less` sees it
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line_error(result, code: int, *pieces: str) -> None:
    stderr = result.err if isinstance(result, Result) else result.stderr
    stdout = result.out if isinstance(result, Result) else result.stdout
    status = result.code if isinstance(result, Result) else result.returncode
    assert status == code, (status, stdout, stderr)
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for piece in pieces:
        assert piece in lines[0], f"{piece!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def markup_run(tmp_path_factory) -> Path:
    """A tiny run trained from csv + catalog whose ids and titles look like rich markup."""
    import polars as pl
    from typer.testing import CliRunner

    from recscope.data.synthetic import ShopConfig, generate

    root = tmp_path_factory.mktemp("markup")
    events, catalog = generate(ShopConfig(users=60, items=40, seed=4))
    events = events.select("user_id", "item_id", "timestamp")
    users = {"U00001": USER, "U00002": OTHER_USER}
    bought = set(events.filter(pl.col("user_id") == "U00001")["item_id"])
    strangers = [i for i in catalog["item_id"] if i not in bought][:2]  # the user can be recommended them
    items = dict(zip(strangers, [ITEM, OTHER_ITEM], strict=True))
    titles = {ITEM: TITLE, OTHER_ITEM: OTHER_TITLE}
    events = events.with_columns(pl.col("user_id").replace(users), pl.col("item_id").replace(items))
    catalog = catalog.with_columns(pl.col("item_id").replace(items)).with_columns(
        pl.col("item_id").replace_strict(titles, default=pl.col("title")).alias("title")
    )
    (root / "[bold]shop.csv").write_text(events.write_csv())
    catalog.write_csv(root / "catalog.csv")
    run = root / "run"
    args = ["train", "--data", f"csv:{root / '[bold]shop.csv'}", "--catalog", str(root / "catalog.csv")]
    args += ["--out", str(run), "--config", TINY, "--set", "train.epochs=2"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    return run


# ---------------------------------------------------------------------------------------
# 1. counts below 1 are usage errors, on one line, naming the option
# ---------------------------------------------------------------------------------------

COUNTS = [
    (["recommend", "RUN", "--user", "u", "-k", "-1"], "'-k' / '--k'"),
    (["explain", "RUN", "--user", "u", "--top", "0", "--png", "f.png"], "'--top'"),
    (["report", "RUN", "--out", "o", "--k", "0"], "'--k'"),
    (["report", "RUN", "--out", "o", "--sample", "0"], "'--sample'"),
    (["report", "RUN", "--out", "o", "--merchant-users", "0"], "'--merchant-users'"),
    (["explain-eval", "RUN", "--users", "0"], "'--users'"),
    (["explain-eval", "RUN", "--k", "-3"], "'--k'"),
    (["demo", "--explain-users", "0"], "'--explain-users'"),
]


@pytest.mark.parametrize(("args", "option"), COUNTS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in COUNTS])
def test_a_count_below_1_is_a_one_line_usage_error(args, option, monkeypatch, capsys):
    result = run_main(monkeypatch, capsys, *args)
    assert_one_line_error(result, 2, option, "greater than or equal to 1", f"recscope {args[0]} --help")


def test_usage_errors_are_one_line_and_a_bare_command_prints_help(monkeypatch, capsys):
    assert_one_line_error(run_main(monkeypatch, capsys, "train", "--data", "synthetic"), 2, "'--out'")
    assert_one_line_error(run_main(monkeypatch, capsys, "recommend", "RUN", "--nope"), 2, "--nope")
    assert_one_line_error(run_main(monkeypatch, capsys, "recomend"), 2, "recomend")
    bare = run_main(monkeypatch, capsys)
    assert "Usage: recscope" in bare.out + bare.err and "error:" not in bare.err


# ---------------------------------------------------------------------------------------
# 2. ids, titles and names that look like markup print as given
# ---------------------------------------------------------------------------------------


def test_recommend_prints_markup_like_ids_and_titles_as_given(markup_run, monkeypatch, capsys):
    result = run_main(monkeypatch, capsys, "recommend", str(markup_run), "--user", USER, "-k", "500")
    assert result.code == 0, result.err
    assert f"for user {USER}" in result.out
    for text in (ITEM, OTHER_ITEM, TITLE, OTHER_TITLE):
        assert text in result.out, text


def test_explain_prints_markup_like_ids_and_titles_as_given(markup_run, monkeypatch, capsys, tmp_path):
    png = tmp_path / "[b]why.png"
    args = ["explain", str(markup_run), "--user", USER, "--item", ITEM, "--method", "occlusion", "--png", str(png)]
    result = run_main(monkeypatch, capsys, *args)
    assert result.code == 0, result.err
    assert f"{TITLE} ({ITEM})" in result.out and f"heatmap: {png}" in result.out and png.exists()


def test_evaluate_and_explain_eval_print_markup_like_names_as_given(markup_run, monkeypatch, capsys):
    result = run_main(monkeypatch, capsys, "evaluate", str(markup_run), "--baselines")
    assert result.code == 0, result.err
    assert "[bold]shop: test split" in result.out
    monkeypatch.setattr("recscope.explain.faithfulness.track", functools.partial(track, every=0))
    result = run_main(monkeypatch, capsys, "explain-eval", str(markup_run), "--users", "4", "--methods", "occlusion")
    assert result.code == 0, result.err
    assert "[bold]shop: faithfulness" in result.out and "default method: occlusion" in result.out
    assert "explain-eval: occlusion: 4/4 done" in result.err, "progress lines in a pipe"


def test_errors_quote_markup_like_ids_as_given(markup_run, monkeypatch, capsys):
    result = run_main(monkeypatch, capsys, "recommend", str(markup_run), "--user", "[bold]x")
    assert_one_line_error(result, 2, "unknown user '[bold]x'")
    result = run_main(monkeypatch, capsys, "explain", str(markup_run), "--user", USER, "--item", "[/]nope")
    assert_one_line_error(result, 2, "[/]nope")


# ---------------------------------------------------------------------------------------
# 3. the last-resort handler: OS errors, bugs, Ctrl-C
# ---------------------------------------------------------------------------------------


def test_an_output_path_that_is_a_file_or_a_directory_is_one_line(markup_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    report = recscope("report", str(markup_run), "--out", str(blocker), "--sample", "1", cwd=tmp_path)
    assert_one_line_error(report, 2, f"error: {blocker}: File exists; how to fix:")
    (tmp_path / "dir.png").mkdir()
    png = recscope("explain", str(markup_run), "--user", USER, "--top", "1", "--png", "dir.png", cwd=tmp_path)
    assert_one_line_error(png, 2, "error: dir.png: Is a directory; how to fix: give a file name")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (every write fails: disk full)")
def test_a_full_disk_is_one_line_naming_the_file(markup_run, tmp_path):
    (tmp_path / "full.png").symlink_to("/dev/full")
    result = recscope("explain", str(markup_run), "--user", USER, "--top", "1", "--png", "full.png", cwd=tmp_path)
    assert_one_line_error(result, 2, "error: full.png: No space left on device; how to fix: free some disk space")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_read_only_directory_is_one_line(markup_run, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = recscope("report", str(markup_run), "--out", str(locked / "r"), "--sample", "1", cwd=tmp_path)
    assert_one_line_error(result, 2, "Permission denied")


def test_a_bug_is_one_line_and_its_traceback_goes_to_a_file(monkeypatch, capsys, tmp_path):
    def broken(*args, **kwargs):
        return {}["missing key"]  # a bug in recscope

    monkeypatch.setattr("recscope.recommend.Recommender.load", broken)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    result = run_main(monkeypatch, capsys, "recommend", "RUN", "--user", "u")
    assert_one_line_error(result, 1, "internal error (KeyError: 'missing key')", "this is a bug in recscope")
    path = Path(re.search(r"the traceback is in (\S+)", result.err).group(1))
    assert path.parent == tmp_path and "Traceback" in path.read_text() and "in broken" in path.read_text()

    monkeypatch.setenv("RECSCOPE_DEBUG", "1")
    with pytest.raises(KeyError):
        run_main(monkeypatch, capsys, "recommend", "RUN", "--user", "u")


def test_ctrl_c_in_process_is_one_line_and_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("recscope.recommend.Recommender.load", interrupted)
    assert_one_line_error(run_main(monkeypatch, capsys, "recommend", "RUN", "--user", "u"), 130, "interrupted")


def test_ctrl_c_during_training_is_one_line_and_130(tmp_path):
    args = ["train", "--data", "synthetic:users=2000,items=200", "--out", "run", "--config", TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(SCRIPT), *args, "--set", "train.epochs=500"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while "epoch" not in proc.stderr.readline() and time.monotonic() < deadline:
        pass  # wait until training runs: the signal lands inside the command, not in Python's start-up
    proc.send_signal(signal.SIGINT)
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "error: interrupted"


# ---------------------------------------------------------------------------------------
# 4. --version and help
# ---------------------------------------------------------------------------------------


def test_version(monkeypatch, capsys):
    from importlib.metadata import version

    result = run_main(monkeypatch, capsys, "--version")
    assert result.code == 0 and result.out.strip() == f"recscope {version('recscope')}"


@pytest.mark.parametrize("command", [None] + [c.name or c.callback.__name__ for c in cli.app.registered_commands])
def test_help_has_no_type_labels_and_fits_100_columns(command, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")
    result = run_main(monkeypatch, capsys, *([command] if command else []), "--help")
    text = result.out + result.err
    assert result.code == 0 and "Usage: recscope" in text and "--help" in text
    for label in ("<bool>", "<list", "<str>", "<int>", "<path>", "{", "…"):
        assert label not in text, label
    assert max(len(line) for line in text.splitlines()) <= 100


# ---------------------------------------------------------------------------------------
# 5. tables: nothing cut at 100 columns or in a pipe
# ---------------------------------------------------------------------------------------

METHODS = ["shapley", "occlusion", "integrated_gradients", "grad_input", "rollout", "attention"]


def faithfulness_result() -> dict:
    measures = {
        "comprehensiveness": 0.4123,
        "comprehensiveness_random": 0.1012,
        "sufficiency": 0.2,
        "sufficiency_random": 0.5,
        "topk_exit_rate": 0.31,
        "topk_exit_rate_random": 0.05,
        "kendall_tau_loo": 0.77,
        "planted_hit@1": 0.61,
        "planted_hit@3": 0.92,
        "ms_per_explanation": 123.4,
        "ms_p99": 1234.5,
    }
    name = "synthetic-users3000-items700-seed0"
    return {
        "default": "integrated_gradients",
        "users": 300,
        "k": 10,
        "data": name,
        "methods": dict.fromkeys(METHODS, measures),
    }


class Rec:  # a Recommendation
    def __init__(self, rank, item_id, title, score):
        self.rank, self.item_id, self.title, self.score = rank, item_id, title, score


def render(renderable, width: int | None) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False)  # width None: a pipe, COLUMNS unset
    console.print(renderable)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [100, None, 80])
def test_tables_are_never_cut(width, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    metrics = {m: {f"{n}@{k}": 0.1234 for k in (5, 10, 20) for n in ("HR", "NDCG", "MRR")} for m in ("a", "b", "c")}
    long_title = "A very long product title that goes on and on, Premium Edition with Extra Accessories " * 2
    recs = [Rec(1, "P0001-with-a-long-id", long_title, 0.975), Rec(10, ITEM, TITLE, -1.5)]
    tables = {
        "metrics": views.metrics_table(
            metrics, "a-data-set-with-a-long-name: test split, full ranking over 12,000 items"
        ),
        "faithfulness": views.faithfulness_table(faithfulness_result()),
        "recommend": views.recommendations_table(recs, "top 10 for user U00001"),
    }
    headers = {
        "metrics": ["metric", "a", "b", "c", "HR@5", "NDCG@20", "MRR@10"],
        "faithfulness": ["method", "comp", "suff", "exit", "tau", "hit@1", "hit@3", "ms", "p99", "random items"],
        "recommend": ["rank", "item", "title", "score", ITEM, TITLE],
    }
    for name, table in tables.items():
        text = render(table, width)
        assert "…" not in text, (name, text)
        assert max(len(line) for line in text.splitlines()) <= (width or 80), name
        words = set(re.split(r"\s+", text))
        for header in headers[name]:
            assert header in words or header in text, (name, header)
    assert "integrated_gradients *" in render(tables["faithfulness"], width)
    assert "P0001-with-a-long-id" in render(tables["recommend"], width).replace("\n", "").replace(" ", "")


def test_cli_output_in_a_pipe_is_never_cut(markup_run, tmp_path):
    for args in (
        ["evaluate", str(markup_run), "--baselines"],
        ["recommend", str(markup_run), "--user", USER, "-k", "5"],
        ["explain", str(markup_run), "--user", USER, "--top", "2", "--method", "occlusion"],
    ):
        result = recscope(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout and max(len(line) for line in result.stdout.splitlines()) <= 100, args


def test_the_report_shows_progress_per_user(markup_run, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("recscope.viz.report.track", functools.partial(track, every=0))
    args = ["report", str(markup_run), "--out", str(tmp_path / "r"), "--users", USER, "--no-figures"]
    result = run_main(monkeypatch, capsys, *args, "--merchant-users", "5", "--methods", "occlusion")
    assert result.code == 0, result.err
    assert "report: explaining users: 1/1 done" in result.err and (tmp_path / "r" / "index.html").exists()


# ---------------------------------------------------------------------------------------
# what the CLI says about history ids it skipped and items that are not recommended
# ---------------------------------------------------------------------------------------


def test_recommend_names_the_history_ids_it_skipped(markup_run, monkeypatch, capsys):
    history = f"{ITEM},no-such-item,[red]ghost"
    result = run_main(monkeypatch, capsys, "recommend", str(markup_run), "--history", history, "-k", "3")
    assert result.code == 0, result.err
    assert "skipped 2 history item(s) this run does not know: 'no-such-item', '[red]ghost'" in result.err
    as_json = run_main(monkeypatch, capsys, "recommend", str(markup_run), "--history", history, "--json")
    assert json.loads(as_json.out)["unknown"] == ["no-such-item", "[red]ghost"]
    nothing_known = run_main(monkeypatch, capsys, "recommend", str(markup_run), "--history", "x,y")
    assert_one_line_error(nothing_known, 2, "'x'")


def test_explain_says_when_an_item_is_owned_or_outside_the_top_k(markup_run, monkeypatch, capsys):
    from recscope.recommend import Recommender

    rec = Recommender.load(markup_run)
    owned = rec.data.item_ids[int(rec.history(USER)[-1])]
    last = rec.recommend(USER, k=30)[-1]
    result = run_main(monkeypatch, capsys, "explain", str(markup_run), "--user", USER, "--item", owned)
    assert result.code == 0, result.err
    assert "already in the history, not recommended" in result.out and "score" not in result.out.split("\n")[1]
    result = run_main(monkeypatch, capsys, "explain", str(markup_run), "--user", USER, "--item", last.item_id)
    assert result.code == 0, result.err
    assert f"#{last.rank} " in result.out and "outside the top 10" in result.out


@pytest.mark.parametrize("history", ["", ",,,"])
def test_a_history_without_ids_is_named(markup_run, monkeypatch, capsys, history):
    result = run_main(monkeypatch, capsys, "recommend", str(markup_run), "--history", history)
    assert_one_line_error(result, 2, "--history", "holds no item id")


# ---------------------------------------------------------------------------------------
# 6. the CLI is the top layer
# ---------------------------------------------------------------------------------------


def test_nothing_in_the_package_imports_the_cli():
    """The CLI is the top layer: the demo and a torchrun process print through recscope.views."""
    importing = re.compile(r"^\s*(from recscope\.cli import|from recscope import cli\b|import recscope\.cli)", re.M)
    package = ROOT / "src" / "recscope"
    found = [str(p.relative_to(package)) for p in package.rglob("*.py") if importing.search(p.read_text())]
    assert found == [], found
