"""The HTML report from the csv + catalog path: one self-contained file, data escaped, nothing lost."""

import base64
import hashlib
import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import HOSTILE_BRAND, HOSTILE_TITLE, HOSTILE_USER, LONG_USER
from recscope.cli import app
from recscope.explain.api import METHODS
from recscope.recommend import Recommender
from recscope.viz.plain import in_ten
from recscope.viz.report import payload

runner = CliRunner()


def page(report_run) -> str:
    return (report_run["report"] / "index.html").read_text(encoding="utf-8")


def page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def test_the_page_is_one_file_that_asks_for_nothing(report_run):
    html = page(report_run)
    # no external script, style, image, font or link of any kind
    assert not re.search(r"<(script|link|img|iframe)[^>]*(src|href)=", html)
    assert "@import" not in html and "url(" not in html
    assert html.count("<script") == 2  # the data and the code, nothing smuggled in
    # the policy allows exactly the inline script it carries, so injected handlers cannot run
    script = re.search(r"<script>(.*?)</script>\s*</body>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html and "default-src 'none'" in html


def test_data_strings_never_become_markup_and_come_back_whole(report_run):
    html = page(report_run)
    for hostile in (HOSTILE_TITLE, HOSTILE_BRAND, HOSTILE_USER):
        assert hostile not in html
    assert "<img src=x" not in html and "</script><script>" not in html
    data = page_data(html)
    titles = {i["title"] for h in data["histories"] for i in h["history"] + h["recs"]}
    assert HOSTILE_TITLE in titles  # escaped on the way in, whole on the way out
    brands = {b for h in data["histories"] for i in h["history"] for b in i["attrs"].get("brand", [])}
    assert HOSTILE_BRAND in brands
    assert f"user {HOSTILE_USER}" in [h["label"] for h in data["histories"]]
    assert "<" not in payload({"t": "</script><!--"}) and json.loads(payload({"t": "a&<b>"})) == {"t": "a&<b>"}


def test_every_method_matches_the_python_api(report_run):
    data = page_data(page(report_run))
    rec = Recommender.load(report_run["run"])
    assert [m["name"] for m in data["methods"]] == list(METHODS)
    assert data["default_method"] == rec.default_method() == rec.info.state["explain_eval"]["default"]
    h = data["histories"][0]
    assert h["user"] == "U00001"
    for method in ("shapley", "occlusion", "attention"):
        # the page carries word attributions (and so their sentence clause) for the default method
        expected = rec.explain(user="U00001", top=10, method=method, words=method == data["default_method"])
        assert [r["id"] for r in h["recs"]] == [e.item_id for e in expected]
        got = h["explanations"][method]
        for j, e in enumerate(expected):
            assert got["weights"][j] == [float(f"{x.weight:.4g}") for x in e.history]
            assert got["sentences"][j] == e.sentence
            removed = [x.position for x in e.counterfactual.removed]
            assert [h["length"] - len(h["history"]) + p for p in got["counterfactuals"][j]["removed"]] == removed
        # the history's attribute bars come from the method's own attribute attributions (attention's
        # from Shapley values, and it says so); the item's own are an exact split, kept once
        by = got["attributes_method"]
        assert by == expected[0].attributes_method == ("shapley" if method == "attention" else method)
        for j, e in enumerate(expected):
            assert h["attributes"][by][j] == [[key, float(f"{w:.4g}")] for key, w in e.attributes_history.items()]
            assert [key for key, _ in h["candidate_attributes"][j]] == list(e.attributes_candidate)
            assert got["counterfactuals"][j]["kind"] == e.counterfactual.kind
    assert h["explanations"]["shapley"]["attributes_method"] != h["explanations"]["occlusion"]["attributes_method"]
    # methods disagree, so switching method changes what the page shows
    assert h["explanations"]["shapley"]["weights"] != h["explanations"]["attention"]["weights"]
    layers, heads = rec.config.model.n_layers, rec.config.model.n_heads
    assert (data["layers"], data["heads"]) == (layers, heads) == (2, 2)
    assert len(h["attention"]) == layers and len(h["attention"][0]) == heads
    assert len(h["attention"][0][0]) == len(h["history"])


def test_colour_scales_are_in_the_data_and_follow_the_figures_rule(report_run):
    from recscope.viz.figures import colour_limits

    html = page(report_run)
    raw = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1)
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    for h in page_data(html)["histories"]:
        for got in h["explanations"].values():
            top = max(abs(w) for row in got["weights"] for w in row)  # ±max|weight|, nothing clipped
            assert got["scale"]["high"] == pytest.approx(top, rel=1e-3) and got["scale"]["low"] == -got["scale"]["high"]
            assert got["scale"]["note"] == colour_limits(got["weights"]).note
        assert h["attention_scale"]["low"] == 0
        assert h["attention_scale"]["high"] == pytest.approx(max(max(map(max, head)) for head in h["attention"]))


def test_a_long_history_is_shown_whole(report_run):
    data = page_data(page(report_run))
    long = next(h for h in data["histories"] if h["user"] == LONG_USER)
    assert long["length"] == 60 and len(long["history"]) == 60
    assert all(len(row) == 60 for row in long["explanations"]["shapley"]["weights"])


def test_faithfulness_and_merchant_view_are_in_the_page(report_run):
    data = page_data(page(report_run))
    faith = data["faithfulness"]
    assert set(faith["methods"]) == set(METHODS) and faith["users"] == 30
    view = data["merchant"]
    assert view["users"] >= 60 and view["k"] == 10
    assert {"brand", "category", "price"} <= set(view["recommended"]) <= set(view["catalog"])
    assert sum(view["recommended"]["brand"].values()) == 10 * view["users"]
    assert abs(sum(view["popularity"]["recommended"]) - 1) < 1e-6
    assert abs(sum(view["popularity"]["interactions"]) - 1) < 1e-6
    assert 0 < view["coverage"]["share"] <= 1
    fields = {d["field"] for d in view["drivers"]}
    assert {"id", "brand", "category"} <= fields
    # weighed by the method explain-eval chose for the run, and saying so; shares of the push
    assert view["method"] == view["fields_method"] == view["default_method"] == data["default_method"]
    assert view["method"] == faith["default"]
    shares = [d["share"] for d in view["drivers"]]
    assert 0.5 < sum(shares) <= 1 + 1e-9 and shares == sorted(shares, reverse=True)
    # the measurements in words, for every method measured
    words = data["trust"]
    assert set(words["methods"]) == set(METHODS) and words["measured_on"].startswith("the top 10 of 30 test shoppers")
    exit_rate = faith["methods"][faith["default"]]["topk_exit_rate"]
    assert f"in {in_ten(exit_rate)} cases" in words["methods"][faith["default"]]["lead"]


def test_figures_are_written_beside_the_page(report_run):
    figures = report_run["report"] / "figures"
    names = {p.name for p in figures.iterdir()}
    for expected in ("01_why.png", "01_attention.png", "01_attributes.png", "deletion_curves.png", "drivers.png"):
        assert expected in names
        width, height = Image.open(figures / expected).size
        assert width >= 500 and height >= 250
    # a 60-item history keeps rows readable: the heatmap grows instead of squeezing
    long = Image.open(figures / "02_why.png").size
    assert long[1] > Image.open(figures / "01_why.png").size[1]


def test_the_page_stays_small(report_run):
    size = (report_run["report"] / "index.html").stat().st_size
    assert size < 1_500_000, f"{size:,} bytes for 3 histories"


def test_an_unknown_user_is_named(report_run, tmp_path):
    result = runner.invoke(app, ["report", str(report_run["run"]), "--users", "U00001,nobody", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "nobody" in str(result.exception) + result.output
    assert not (tmp_path / "index.html").exists()
