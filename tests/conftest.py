"""Fixtures shared by the test modules."""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

# One text-embedding cache per test session (and its servers, which inherit the environment):
# tests never read or write the user's own ~/.cache, and the session encodes each title once.
os.environ["RECSCOPE_CACHE"] = tempfile.mkdtemp(prefix="recscope-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY = ROOT / "configs" / "tiny.yaml"
TINY_SPEC = "synthetic:users=200,items=120,seed=5"  # the shop of ``tiny_run``
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browsers are never downloaded


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the repository (../shared/data); tests using them skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent: expected the real datasets in {SHARED_DATA}")
    return SHARED_DATA


# Strings a shop's data might hold that must reach a page as text, never as markup.
HOSTILE_TITLE = '<img src=x onerror="window.__pwned=1">'
HOSTILE_BRAND = "</script><script>window.__pwned=1</script>"
HOSTILE_USER = "<svg onload=window.__pwned=1>"
LONG_USER = "U-long"  # 60 purchases: the page must stay readable
HOSTILE_ID = "P\"'><svg onload=window.__pwned=1>"  # replaces P0002, in the events and the catalog
RTL_TITLE = "\u202eRTL title \u05de\u05d5\u05e6\u05e8 \u2067<i>isolate</i>"  # P0003
LONG_TITLE = "<script>window.__pwned=1</script>" + "L" * 10_000  # P0004


def _built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder ``name``, built by ``build(folder)`` once for the whole test run however many
    pytest-xdist workers ask for it: the first builds it under a file lock, the others wait and
    read it. What is built here is read only (a test that writes works on a copy)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above each worker's own
    folder = base / name
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build left
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def _train(out: Path, data: str, *more: str) -> Path:
    """``recscope train`` with configs/tiny.yaml into ``out`` (a few seconds)."""
    from typer.testing import CliRunner

    from recscope.cli import app

    result = CliRunner().invoke(app, ["train", "--data", data, "--out", str(out), "--config", str(TINY), *more])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny run of the synthetic shop (200 users, 120 items, seed 5, 2 epochs), shared by the
    session: read it, never write it. A test whose service keeps its store in the run (Settings
    without ``db``) or that trains, evaluates or promotes in it works on a copy of its own
    (``shutil.copytree``: faster than training again)."""

    def build(root: Path) -> None:
        _train(root / "run", TINY_SPEC, "--set", "train.epochs=2")

    return _built_once(tmp_path_factory, "tiny", build) / "run"


@pytest.fixture(scope="session")
def hostile_run(tmp_path_factory) -> Path:
    """A tiny run trained from csv + catalog with hostile titles, a hostile item id and a shopper
    whose id is markup and whose history holds all of them; shared by the session, read only."""
    return _built_once(tmp_path_factory, "hostile", _build_hostile_run) / "run"


def _build_hostile_run(root: Path) -> None:
    import polars as pl

    from recscope.data.synthetic import ShopConfig, generate

    events, catalog = generate(ShopConfig(users=150, items=80, seed=5))

    def rename(column: str) -> pl.Expr:
        return pl.when(pl.col(column) == "P0002").then(pl.lit(HOSTILE_ID)).otherwise(pl.col(column)).alias(column)

    titles = {"P0001": HOSTILE_TITLE, "P0003": RTL_TITLE, "P0004": LONG_TITLE}
    catalog = catalog.with_columns(
        rename("item_id"),
        pl.col("item_id").replace_strict(titles, default=pl.col("title")).alias("title"),
        pl.when(pl.col("item_id") == "P0001").then(pl.lit(HOSTILE_BRAND)).otherwise(pl.col("brand")).alias("brand"),
    )
    hostile = pl.DataFrame(
        {
            "user_id": [HOSTILE_USER] * 6,
            "item_id": ["P0001", HOSTILE_ID, "P0003", "P0004", "P0005", "P0006"],
            "timestamp": [float(i) for i in range(6)],
        }
    )
    events = pl.concat([events.select("user_id", "item_id", "timestamp").with_columns(rename("item_id")), hostile])
    events.write_csv(root / "events.csv")
    catalog_file = root / "catalog.csv"
    catalog.write_csv(catalog_file)
    _train(root / "run", f"csv:{root / 'events.csv'}", "--catalog", str(catalog_file), "--set", "train.epochs=2")


def playwright_or_skip():
    """Playwright's sync API, for a module of tests in Debian's chromium: call it at the module's
    top, so the module skips, naming what to install, without either."""
    missing = "playwright is not installed (make setup installs it)"
    playwright = pytest.importorskip("playwright.sync_api", reason=missing)
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is absent: apt-get install chromium chromium-driver", allow_module_level=True)
    return playwright


@pytest.fixture(scope="module")
def browser():
    """Headless chromium, one per module (the module has called ``playwright_or_skip``)."""
    playwright = playwright_or_skip()
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def report_run(tmp_path_factory) -> dict:
    """A run trained from csv + catalog (with hostile strings), measured, and its report.

    Returns {"run", "report", "interactions", "catalog", "users"}; built once for the test run.
    """
    root = _built_once(tmp_path_factory, "report", _build_report_run)
    return {
        "run": root / "run",
        "report": root / "report",
        "interactions": root / "events.csv",
        "catalog": root / "catalog.csv",
        "users": REPORT_USERS,
    }


REPORT_USERS = ["U00001", LONG_USER, HOSTILE_USER]  # the users report_run's report shows


def _build_report_run(root: Path) -> None:
    import polars as pl
    from typer.testing import CliRunner

    from recscope.cli import app
    from recscope.data.synthetic import ShopConfig, generate

    events, catalog = generate(ShopConfig(users=250, items=120, seed=5))
    events = events.select("user_id", "item_id", "timestamp")
    catalog = catalog.with_columns(
        pl.when(pl.col("item_id") == "P0001").then(pl.lit(HOSTILE_TITLE)).otherwise(pl.col("title")).alias("title"),
    )
    first_brand = catalog.filter(pl.col("item_id") == "P0001")["brand"].item()
    catalog = catalog.with_columns(
        pl.when(pl.col("brand") == first_brand).then(pl.lit(HOSTILE_BRAND)).otherwise(pl.col("brand")).alias("brand")
    )
    items = catalog["item_id"].to_list()
    long = pl.DataFrame(
        {
            "user_id": [LONG_USER] * 60,
            "item_id": [items[(7 * i) % len(items)] for i in range(59)] + ["P0001"],
            "timestamp": [float(i) for i in range(60)],
        }
    )
    hostile = pl.DataFrame(
        {"user_id": [HOSTILE_USER] * 6, "item_id": ["P0001", *items[2:7]], "timestamp": [float(i) for i in range(6)]}
    )
    interactions = root / "events.csv"
    pl.concat([events, long, hostile]).write_csv(interactions)
    catalog_file = root / "catalog.csv"
    catalog.write_csv(catalog_file)

    runner = CliRunner()
    run = root / "run"
    sets = ["train.epochs=3", "model.max_len=60", "model.n_layers=2"]
    args = ["train", "--data", f"csv:{interactions}", "--catalog", str(catalog_file), "--out", str(run)]
    result = runner.invoke(app, [*args, "--config", str(TINY), *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["explain-eval", str(run), "--users", "30", "--json"])
    assert result.exit_code == 0, result.output
    report = root / "report"
    result = runner.invoke(
        app, ["report", str(run), "--users", ",".join(REPORT_USERS), "--out", str(report), "--merchant-users", "60"]
    )
    assert result.exit_code == 0, result.output
