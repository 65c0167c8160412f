"""`recscope demo` on a small shop: every step runs and the report holds the shop's ground truth."""

import json
import re

from typer.testing import CliRunner

from recscope.cli import app


def test_demo_end_to_end_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        ["demo", "--out", str(out), "--data", "synthetic:users=300,items=150,seed=2", "--explain-users", "40"]
        + [a for s in ("train.epochs=3", "model.d_model=32", "model.max_len=20") for a in ("--set", s)],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "demo.json").read_text())
    page = out / "report" / "index.html"
    assert summary["report"] == str(page) and str(page) in result.output.replace("\n", "")
    assert f"recscope serve {out / 'run'}" in result.output.replace("\n", "")  # where the live half starts
    html = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)[1])
    first = data["histories"][0]
    assert first["label"].endswith("just before their last purchase")
    assert [r["id"] for r in first["recs"]] == [r["item_id"] for r in summary["recommendations"]]
    if first["note"]:  # the showcased purchase had a planted cause
        assert "Ground truth from the shop" in first["note"]
    assert len(data["histories"]) == 4 and data["merchant"]["users"] == 300
    assert data["faithfulness"]["users"] == 40
    figures = {p.name for p in (out / "report" / "figures").iterdir()}
    assert {"01_why.png", "deletion_curves.png", "drivers.png", "popularity.png"} <= figures
