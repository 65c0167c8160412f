"""The report in a real browser (Debian's chromium driven by Playwright): it works offline, reacts
to clicks and to the method, layer and head controls, and runs nothing that came from the data."""

import pytest

from conftest import HOSTILE_TITLE, HOSTILE_USER, LONG_USER, TINY, playwright_or_skip
from recscope.viz.plain import in_ten

playwright_or_skip()


@pytest.fixture
def page(browser, report_run):
    """The report opened from disk, with every console error and request recorded."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors, page.requests = [], []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    url = (report_run["report"] / "index.html").as_uri()
    page.goto(url)
    page.url_of_report = url
    yield page
    page.close()


def cell_texts(page, container: str) -> list[str]:
    return page.eval_on_selector_all(f"#{container} svg text", "nodes => nodes.map(n => n.textContent)")


def selected_column(page, container: str) -> str:
    return page.get_attribute(f"#{container} rect.selected-column", "data-col")


def test_opens_offline_without_errors_or_requests(page):
    page.click("nav button[data-tab=faithfulness]")
    page.click("nav button[data-tab=merchant]")
    page.click("nav button[data-tab=about]")
    page.click("nav button[data-tab=why]")
    assert page.errors == []
    assert page.requests == [page.url_of_report], "the page fetched something besides itself"
    assert page.locator("#recs li").count() == 10
    assert page.locator("#faith-table tbody tr").count() == 6
    assert page.locator("#drivers svg rect").count() > 3


def test_clicking_a_recommendation_changes_the_heatmap_and_the_detail(page):
    assert selected_column(page, "heatmap") == "0"
    title = page.text_content("#detail-title")
    page.click("#recs li:nth-child(3)")
    assert selected_column(page, "heatmap") == "2"
    assert page.get_attribute("#recs li:nth-child(3)", "aria-selected") == "true"
    assert page.text_content("#detail-title") != title and "#3" in page.text_content("#detail-title")
    # a click on a heatmap cell selects its column too
    page.click("#heatmap rect[data-row='0'][data-col='5']")
    assert selected_column(page, "heatmap") == "5"
    assert page.errors == []


def test_switching_method_changes_the_values(page):
    before = cell_texts(page, "heatmap")
    page.select_option("#method", value="attention")
    after = cell_texts(page, "heatmap")
    assert after != before
    assert "same for every" in page.text_content("#method-note")
    page.select_option("#method", value="occlusion")
    assert cell_texts(page, "heatmap") not in (before, after)


def test_the_attribute_bars_follow_the_method_and_say_where_they_come_from(page):
    def bars():
        return cell_texts(page, "bars-history")

    page.select_option("#method", value="shapley")
    shapley = bars()
    assert "by shapley" in page.text_content("#attributes-note")
    page.select_option("#method", value="occlusion")
    assert "by occlusion" in page.text_content("#attributes-note") and bars() != shapley
    page.select_option("#method", value="attention")
    note = page.text_content("#attributes-note")
    assert "by shapley" in note and "attention has no notion of fields" in note
    assert bars() == shapley
    said = page.text_content("#counterfactual")
    assert any(words in said for words in ("what keeps it there", "not because", "never dropped")), said
    assert page.errors == []


def test_figures_read_as_words_with_the_numbers_one_step_away(page):
    """How faithful: sentences from the run's measurements first, the table in a closed details;
    the merchant view says which method weighed it; weights read as shares, the units in tooltips."""
    data = page.evaluate("JSON.parse(document.getElementById('data').textContent)")
    default = data["default_method"]
    exit_rate = data["faithfulness"]["methods"][default]["topk_exit_rate"]
    page.click("nav button[data-tab=faithfulness]")
    words = page.locator("#faith-words li")
    assert words.count() == len(data["faithfulness"]["methods"]) and words.first.get_attribute("data-method") == default
    lead = words.first.text_content()
    assert f"Take away the 3 past items {default} weighs most and the recommended item drops out of the top 10" in lead
    assert f"in {in_ten(exit_rate)} cases" in lead and "default" in lead
    assert page.is_hidden("#faith-table") and page.locator("#faith-table tbody tr").count() == 6
    page.click("#faith-details summary")
    assert page.is_visible("#faith-table") and page.is_visible("#deletion svg")
    page.screenshot(path="/tmp/ui-report-faithfulness.png", full_page=True)
    page.click("nav button[data-tab=merchant]")
    note = page.text_content("#merchant-note")
    assert data["merchant"]["method"] == default
    assert f"Weighed by {default}, the run's default method (the most faithful in its measurements)." in note
    assert page.text_content("#merchant-method") == f"Weighed by {default}"
    values = page.eval_on_selector_all("#drivers svg text.muted", "ts => ts.map(t => t.textContent)")
    assert values and all(v.split()[0].endswith("%") and "of recs" in v for v in values), values
    page.screenshot(path="/tmp/ui-report-merchant.png", full_page=True)
    page.click("nav button[data-tab=why]")
    cells = page.eval_on_selector_all("#heatmap svg text[text-anchor=middle]", "ts => ts.map(t => t.textContent)")
    assert cells and all(c.endswith("%") for c in cells)
    trust = page.text_content("#trust-lead")
    assert trust.startswith(data["trust"]["methods"][default]["lead"])
    assert "score units" not in page.text_content("#tab-why").replace("in the model's score units)", "")
    page.screenshot(path="/tmp/ui-report-why.png", full_page=True)
    assert page.errors == []


def test_the_heatmap_colour_scale_is_the_one_in_the_data(page):
    legend = page.eval_on_selector_all("#heatmap svg > text.muted", "ts => ts.map(t => t.textContent)")
    note = page.evaluate(
        "JSON.parse(document.getElementById('data').textContent).histories[0]"
        ".explanations[document.getElementById('method').value].scale.note"
    )
    assert note in legend and "the largest |value|" in note
    top = page.evaluate(
        "(() => { const d = JSON.parse(document.getElementById('data').textContent).histories[0];"
        " const w = d.explanations[document.getElementById('method').value].weights.flat().map(Math.abs);"
        " const i = w.indexOf(Math.max(...w)); return [i % d.history.length, Math.floor(i / d.history.length)]; })()"
    )
    fill = page.get_attribute(f"#heatmap rect[data-row='{top[0]}'][data-col='{top[1]}']", "fill")
    assert fill in ("rgb(43,108,176)", "rgb(197,48,48)"), "the largest |weight| takes the full colour"


def test_layer_and_head_controls_move_the_attention_view(page):
    page.select_option("#layer", value="0")
    page.select_option("#head", value="1")
    assert selected_column(page, "attention") == "1"  # layer 1 head 2
    page.select_option("#layer", value="1")
    assert selected_column(page, "attention") == "3"
    page.select_option("#head", value="mean")
    mean_column = selected_column(page, "attention")
    assert mean_column == "4"  # the extra "mean of heads" column
    page.click("#attention rect[data-row='0'][data-col='2']")  # layer 2 head 1
    assert page.input_value("#layer") == "1" and page.input_value("#head") == "0"


def test_data_strings_show_as_text_and_run_nothing(page, report_run):
    index = [o.split(" (")[0] for o in page.eval_on_selector_all("#user option", "os => os.map(o => o.textContent)")]
    page.select_option("#user", value=str(index.index(f"user {HOSTILE_USER}")))
    texts = " ".join(cell_texts(page, "heatmap")) + page.text_content("#tab-why")
    assert HOSTILE_TITLE[:30] in texts  # shown as text (shortened), not an <img>
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0
    page.click("nav button[data-tab=merchant]")
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


def test_a_sixty_item_history_stays_readable(page, report_run):
    options = page.eval_on_selector_all("#user option", "os => os.map(o => o.textContent)")
    page.select_option("#user", value=str(next(i for i, o in enumerate(options) if LONG_USER in o)))
    rows = page.locator("#heatmap rect[data-row][data-col='0']").count()
    assert rows == 60
    box = page.locator("#heatmap rect[data-row='0'][data-col='0']").bounding_box()
    assert box["height"] >= 14 and box["width"] >= 40  # cells big enough to read their values
    labels = page.eval_on_selector_all("#heatmap svg > text", "ts => ts.map(t => t.getBBox().x)")
    assert min(labels) >= 0, "row labels start inside the picture"


def test_a_bare_run_says_what_is_missing(browser, tmp_path):
    """Ids only (no catalog) and no explain-eval yet: the page says what to do instead of drawing nothing."""
    from typer.testing import CliRunner

    from recscope.cli import app
    from recscope.data.synthetic import ShopConfig, generate

    events = tmp_path / "events.csv"
    generate(ShopConfig(users=120, items=60, seed=4))[0].select("user_id", "item_id", "timestamp").write_csv(events)
    runner, run = CliRunner(), tmp_path / "run"
    args = ["train", "--data", f"csv:{events}", "--out", str(run), "--config", str(TINY), "--set", "train.epochs=1"]
    assert runner.invoke(app, args).exit_code == 0
    report = tmp_path / "report"
    args = ["report", str(run), "--out", str(report), "--sample", "2", "--methods", "attention", "--no-figures"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (report / "figures").exists()
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((report / "index.html").as_uri())
    # the run's default (measured or not) is always included beside the asked-for methods
    methods = page.eval_on_selector_all("#method option", "os => os.map(o => o.value)")
    assert methods == ["shapley", "attention"]
    assert "explain-eval" in page.text_content("#faith-note")
    assert "--catalog" in page.text_content("#drivers")
    assert page.locator("#popularity svg").count() == 1 and errors == []
    page.close()
