"""Fixtures shared by the test modules."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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


@pytest.fixture(scope="session")
def report_run(tmp_path_factory) -> dict:
    """A run trained from csv + catalog (with hostile strings), measured, and its report.

    Returns {"run", "report", "interactions", "catalog", "users"}.
    """
    import polars as pl
    from typer.testing import CliRunner

    from recscope.cli import app
    from recscope.data.synthetic import ShopConfig, generate

    root = tmp_path_factory.mktemp("report")
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
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    sets = ["train.epochs=3", "model.max_len=60", "model.n_layers=2"]
    args = ["train", "--data", f"csv:{interactions}", "--catalog", str(catalog_file), "--out", str(run)]
    result = runner.invoke(app, [*args, "--config", str(tiny), *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["explain-eval", str(run), "--users", "30", "--json"])
    assert result.exit_code == 0, result.output
    users = ["U00001", LONG_USER, HOSTILE_USER]
    report = root / "report"
    result = runner.invoke(
        app, ["report", str(run), "--users", ",".join(users), "--out", str(report), "--merchant-users", "60"]
    )
    assert result.exit_code == 0, result.output
    return {"run": run, "report": report, "interactions": interactions, "catalog": catalog_file, "users": users}
