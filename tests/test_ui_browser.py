"""The live web view in a real browser (Debian's chromium driven by Playwright) against real
`recscope serve` processes on 127.0.0.1. As started by default the page is read-only: every button
clicked, no write request leaves it and the store gains nothing, while its "what if" buttons show
what a purchase or a dismissal would change. Started with --ui-writes it says it acts as the
shopper, a purchase is stored, changes the top-K and the page says why. Nothing leaves the host,
no console error, and hostile titles and ids run nothing and show as text."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import quote

import httpx2 as httpx
import pytest

from conftest import HOSTILE_ID, HOSTILE_TITLE, HOSTILE_USER, LONG_TITLE, RTL_TITLE, playwright_or_skip
from servers import Server
from test_versions_view import tuned  # noqa: F401  (a fixture: the tiny run fine-tuned once)

SHOTS = Path(os.environ.get("RECSCOPE_UI_SHOTS", "/tmp"))  # where the screenshots go, to look at
USER = "U00007"

expect = playwright_or_skip().expect


@pytest.fixture(scope="module")
def measured_run(hostile_run, tmp_path_factory) -> Path:
    """The hostile run with its faithfulness measured (recscope explain-eval), so the pages have
    something to say about how far to trust each method."""
    from typer.testing import CliRunner

    from recscope.cli import app

    run = tmp_path_factory.mktemp("ui-measured") / "run"
    shutil.copytree(hostile_run, run)
    result = CliRunner().invoke(app, ["explain-eval", str(run), "--users", "20", "--word-users", "0"])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def served(measured_run, tmp_path_factory) -> tuple[str, Path]:
    """A `recscope serve` process over the hostile run, as started by default (read-only page), on a
    free loopback port; and its store's file."""
    root = tmp_path_factory.mktemp("ui-browser")
    store = root / "store.sqlite"
    with Server(measured_run, "--db", f"sqlite:///{store}", log=root / "serve.log") as server:
        yield server.base, store


@pytest.fixture(scope="module")
def base(served) -> str:
    return served[0]


@pytest.fixture(scope="module")
def writes(measured_run, tmp_path_factory) -> tuple[str, Path]:
    """The same, started with --ui-writes: the page acts as the shopper."""
    root = tmp_path_factory.mktemp("ui-browser-writes")
    store = root / "store.sqlite"
    with Server(measured_run, "--db", f"sqlite:///{store}", "--ui-writes", log=root / "serve.log") as server:
        yield server.base, store


def rows(store: Path) -> dict[str, int]:
    """What a click could add to the store: events, served lists and feedback."""
    with sqlite3.connect(store) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events", "served", "feedback")}


@pytest.fixture
def page(browser):
    """A fresh tab (its own sessionStorage) recording every console error and request."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.errors, page.requests, page.methods = [], [], []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: (page.requests.append(r.url), page.methods.append((r.method, r.url))))
    yield page
    context.close()


def listed(page) -> list[str]:
    return page.eval_on_selector_all("#recs li button[data-action=purchase]", "bs => bs.map(b => b.dataset.item)")


def open_shopper(page, base: str, user: str) -> list[str]:
    page.goto(f"{base}/ui?user={quote(user, safe='')}")
    page.wait_for_selector("#recs li button[data-action=purchase]")
    return listed(page)


def act(page, button: str) -> None:
    """Click and wait for the redraw: the page is aria-busy from the click until it has drawn again."""
    page.click(button)
    page.wait_for_selector("body:not([aria-busy])")


def wait_for_result(page, item_id: str) -> None:
    """The catalog search answers as the shopper types: wait until ``item_id`` is the first hit
    (Playwright's own waits: its string predicates are eval, which the page's policy refuses)."""
    expect(page.locator("#results li .rid").first).to_have_text(item_id)


def stayed_home(page, base: str) -> None:
    assert page.errors == []
    assert page.requests and all(url.startswith(base + "/") for url in page.requests), "a request left the host"


def writes_sent(page) -> list[tuple[str, str]]:
    return [(method, url) for method, url in page.methods if method not in ("GET", "HEAD", "OPTIONS")]


def test_read_only_every_button_sends_no_write_and_stores_nothing(page, served):
    """The default page, every button clicked: only GET requests, the store unchanged, the real
    shopper's history unchanged, and the what-if answers shown as simulations."""
    base, store = served
    before = rows(store)
    history = httpx.get(f"{base}/users/{USER}/history").json()["items"]
    page.goto(f"{base}/ui")
    expect(page.locator("#mode")).to_contain_text("Read-only: nothing you do here is stored.")
    page.locator("#suggested button").first.click()  # a suggested shopper
    page.wait_for_selector("#recs li button[data-action=purchase]")
    first = page.text_content("#shopper-title")
    page.screenshot(path=str(SHOTS / "ui-readonly-open.png"), full_page=True)
    open_shopper(page, base, USER)
    for label in ("What if they buy it?", "What if not interested?"):
        assert page.locator("#recs li").first.get_by_role("button", name=label, exact=True).count() == 1
    for label in ("View", "Buy", "Not interested"):
        assert page.locator("#recs li").first.get_by_role("button", name=label, exact=True).count() == 0
    real = listed(page)
    bought = page.text_content("#recs li:nth-child(1) .title")
    act(page, "#recs li:nth-child(1) button[data-action=purchase]")
    lead = page.text_content("#changes-lead")
    assert lead.startswith(f"What if shopper {USER} bought “\u2068{bought}\u2069”?") and "nothing was stored" in lead
    assert real[0] not in listed(page) and page.is_visible("#simulation")
    assert page.locator("#recent li").first.locator(".tag").text_content() == "what if: bought"
    page.screenshot(path=str(SHOTS / "ui-readonly-whatif.png"), full_page=True)
    # every what-if button of every item, as the list stands after each click
    for n in range(1, 11):
        for action in ("purchase", "dismiss"):
            button = f"#recs li:nth-child({n}) button[data-action={action}]"
            if page.locator(button).count():
                act(page, button)
    assert "Simulating 11 purchases and 10 dismissals" in page.text_content("#simulation-note")
    page.fill("#search", "p0010")
    wait_for_result(page, "P0010")
    act(page, "#results li button")
    # how far to trust the weights, in words from the run's measurements; the numbers one click away
    words = httpx.get(f"{base}/ui/data", params={"user": USER}).json()["trust"]
    default = words["default"]
    assert page.text_content("#trust-lead").startswith(words["methods"][default]["lead"])
    assert f"Take away the 3 past items {default} weighs most and the recommended item drops out of the top 10 in" in (
        page.text_content("#trust-lead")
    )
    assert page.is_hidden("#trust-table")
    page.click("#trust summary")
    assert page.is_visible("#trust-table") and "Kendall tau" in page.text_content("#trust-table")
    page.screenshot(path=str(SHOTS / "ui-readonly-trust.png"), full_page=True)
    page.select_option("#method", value="occlusion")
    page.wait_for_selector("body:not([aria-busy])")
    act(page, "#reset-simulation")
    assert listed(page) == real and page.is_hidden("#simulation"), "back to the real history"
    act(page, "#open")
    page.click("#anonymous")
    page.fill("#search", "p0011")
    wait_for_result(page, "P0011")
    act(page, "#results li button")
    for action in ("purchase", "dismiss"):
        act(page, f"#recs li:nth-child(1) button[data-action={action}]")
    assert "Kept in this tab only." in page.text_content("#changes-lead")
    clicked = page.evaluate("document.querySelectorAll('button').length")
    assert clicked >= 25 and first
    assert writes_sent(page) == [], "a read-only page sent a write request"
    assert rows(store) == before, "a read-only page stored something"
    assert httpx.get(f"{base}/users/{USER}/history").json()["items"] == history
    stayed_home(page, base)


def test_with_writes_on_the_banner_says_so_and_a_click_is_stored(page, writes):
    base, store = writes
    before = rows(store)
    open_shopper(page, base, "U00031")
    expect(page.locator("#mode")).to_contain_text("Acting as the shopper.")
    assert page.locator("#mode").is_visible() and "--ui-writes" in page.text_content("#mode")
    page.screenshot(path=str(SHOTS / "ui-writes-open.png"), full_page=False)
    item = listed(page)[0]
    act(page, "#recs li:nth-child(1) button[data-action=purchase]")
    assert [m for m, _ in writes_sent(page)] == ["POST", "POST"]  # the event, then feedback on the list
    after = rows(store)
    assert after["events"] == before["events"] + 1 and after["feedback"] == before["feedback"] + 1
    assert after["served"] == before["served"] + 2, "the list shown before and after the purchase"
    stored = httpx.get(f"{base}/users/U00031/history").json()["items"]
    assert (stored[-1]["item_id"], stored[-1]["event"], stored[-1]["source"]) == (item, "purchase", "store")
    stayed_home(page, base)


def test_buying_an_item_changes_the_top_k_and_the_page_says_why(page, writes):
    base = writes[0]
    before = open_shopper(page, base, USER)
    page.screenshot(path=str(SHOTS / "recscope_ui_open.png"), full_page=True)
    assert len(before) == 10 and page.text_content("#shopper-title") == f"Shopper {USER}"
    for label in ("View", "Buy", "Not interested"):
        assert page.locator("#recs li").first.get_by_role("button", name=label, exact=True).count() == 1
    bought = page.text_content("#recs li:nth-child(1) .title")
    act(page, "#recs li:nth-child(1) button[data-action=purchase]")
    after = listed(page)
    page.screenshot(path=str(SHOTS / "recscope_ui_after_buy.png"), full_page=True)
    assert after != before and before[0] not in after
    assert f"You bought “\u2068{bought}\u2069”" in page.text_content("#changes-lead")  # isolated: see quoted()
    entered = page.locator("#changes li.entered")
    assert entered.count() == len(set(after) - set(before)) >= 1
    why = entered.first.locator(".because").text_content()
    assert f"“\u2068{bought}\u2069” pushed it" in why, "the new item's reason names the bought item"
    assert page.locator("#recs li.entered .move.new").count() == entered.count()
    assert bought in page.text_content("#changes li.left"), "the bought item left: it is owned now"
    # the detail opens on the first new item, with its sentence; the newest history row is the purchase
    new_rank = page.locator("#changes li.entered").first.text_content().split("#")[1].split(":")[0]
    assert f"#{new_rank}" in page.text_content("#detail-title")
    assert page.locator("#recent li").first.text_content().startswith(bought)
    rows = page.eval_on_selector_all("#heatmap svg > text[text-anchor=end]", "ts => ts.map(t => t.textContent)")
    assert f". {bought}" in rows[-1], "the purchase is the heatmap's newest row"
    stayed_home(page, base)


def test_not_interested_and_view_post_and_redraw(page, writes):
    base = writes[0]
    user = "U00013"
    before = open_shopper(page, base, user)
    act(page, "#recs li:nth-child(2) button[data-action=dismiss]")
    after = listed(page)
    assert before[1] not in after and after[:8] == before[:1] + before[2:9]
    assert "dismissed" in page.text_content("#changes li.left")
    assert "1 dismissed" in page.text_content("#shopper-note")
    act(page, "#recs li:nth-child(3) button[data-action=view]")
    assert listed(page)[2] != after[2] and page.locator("#recent li .tag").first.text_content() == "view"
    # a method switch asks the service again and redraws the heatmap with that method
    cells = page.eval_on_selector_all("#heatmap svg text", "ts => ts.map(t => t.textContent)")
    page.select_option("#method", value="occlusion")
    expect(page.locator("#heatmap-note")).to_contain_text("moved the recommendation, by occlusion;")
    assert page.eval_on_selector_all("#heatmap svg text", "ts => ts.map(t => t.textContent)") != cells
    page.select_option("#layer", value="0")
    page.select_option("#head", value="1")
    assert page.get_attribute("#attention rect.selected-column", "data-col") == "1"
    stayed_home(page, base)


def test_an_anonymous_shopper_builds_a_history_from_the_catalog_search(page, base):
    page.goto(f"{base}/ui")
    page.click("#anonymous")
    assert page.text_content("#shopper-title") == "Anonymous shopper"
    page.fill("#search", "p0010")
    wait_for_result(page, "P0010")
    act(page, "#results li button")
    lead = page.text_content("#changes-lead")
    assert lead.startswith("What if this anonymous shopper bought") and "P0010" not in listed(page)
    before = listed(page)
    act(page, "#recs li:nth-child(1) button[data-action=purchase]")
    assert listed(page) != before and "kept in this tab only" in page.text_content("#shopper-note")
    page.reload()  # the session survives a reload of the tab
    page.wait_for_selector("#recs li button")
    assert page.text_content("#shopper-note").startswith("2 items")
    stayed_home(page, base)


def test_hostile_ids_and_titles_run_nothing_and_show_as_text(page, base):
    open_shopper(page, base, HOSTILE_USER)
    page.screenshot(path=str(SHOTS / "recscope_ui_hostile.png"), full_page=True)
    assert page.text_content("#shopper-title") == f"Shopper {HOSTILE_USER}"
    recent = page.text_content("#recent")
    assert HOSTILE_TITLE in recent and RTL_TITLE in recent and LONG_TITLE[:50] in recent
    ids = page.eval_on_selector_all("#recent li", "lis => lis.map(li => li.getAttribute('title'))")
    assert f"id {HOSTILE_ID}" in ids
    # the RTL override stays inside its title: the tag after it is still drawn to its right
    rtl = page.locator("#recent li", has_text="RTL title")
    assert rtl.locator(".tag").bounding_box()["x"] > rtl.locator("span").first.bounding_box()["x"]
    labels = " ".join(page.eval_on_selector_all("#heatmap svg text", "ts => ts.map(t => t.textContent)"))
    assert HOSTILE_TITLE[:30] in labels
    page.fill("#search", "window.__pwned=1</script>")
    wait_for_result(page, "P0004")
    assert page.locator("#results li .rtitle").first.get_attribute("title") == LONG_TITLE
    act(page, "#results li button")
    page.fill("#search", "'><svg")
    wait_for_result(page, HOSTILE_ID)
    act(page, "#results li button")
    assert page.locator("#recent li").first.get_attribute("title") == f"id {HOSTILE_ID}"
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img, main svg svg, script[src], iframe, i").count() == 0, "no markup came from the data"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1400 + 300, f"a 10 kB title stretched the page to {width}px"
    stayed_home(page, base)


def test_the_model_versions_panel_shows_what_the_fine_tune_changed(page, tuned, tmp_path):  # noqa: F811
    """A run fine-tuned once (promoted): the panel lists both versions with verdict and helpful
    shares, and the shopper's top movers with rank before → after and both versions' sentences,
    as GET /ui/versions computes them; all as text, nothing leaves the host, nothing is stored."""
    from recscope.serve.store import Store

    run, child = tuned["run"], tuned["child"]
    store = tmp_path / "store.sqlite"
    with Store.open(f"sqlite:///{store}") as s:  # votes on lists the new version explained
        s.log_served("r1", "U00130", child, [("P1", 1.0), ("P2", 0.5), ("P3", 0.2)], method="occlusion")
        for item, action in (
            ("P1", "explanation_helpful"),
            ("P2", "explanation_helpful"),
            ("P3", "explanation_unhelpful"),
        ):
            s.add_feedback("r1", "U00130", item, action)
    before = rows(store)
    with Server(run, "--db", f"sqlite:///{store}", log=tmp_path / "serve.log") as server:
        base = server.base
        user = httpx.get(f"{base}/ui/shoppers", params={"limit": 50}).json()[30]
        page.goto(f"{base}/ui?user={quote(user, safe='')}")
        page.wait_for_selector("#versions-view:not([hidden]) #versions-table tbody tr")
        page.wait_for_selector("body:not([aria-busy])")
        panel = httpx.get(f"{base}/ui/versions", params={"user": user, "k": 10}).json()
        page.locator("#versions-view").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "versions-panel.png"), full_page=True)
        table = page.locator("#versions-table tbody tr")
        expect(table).to_have_count(2)
        expect(table.first).to_have_attribute("data-version", child)  # newest first
        expect(table.first.locator(".badge")).to_have_text("serving")
        expect(table.first.locator("td.shares")).to_have_text("occlusion: 66.7% helpful of 3 votes")
        expect(table.first).to_contain_text("promoted")
        expect(table.nth(1)).to_contain_text("no lists served")
        movers = panel["movers"][0]
        assert movers, panel
        items = page.locator("#movers > li")
        expect(items).to_have_count(len(movers))
        for n, m in enumerate(movers):
            li = items.nth(n)
            expect(li).to_have_attribute("data-item", m["id"])
            rank = lambda r: "not ranked" if r is None else f"#{r}"  # noqa: E731
            expect(li.locator(".mover-rank")).to_contain_text(f"{rank(m['before'])} → {rank(m['after'])}")
            expect(li.locator("dd.before")).to_have_text(m["sentence_before"] or "not ranked by this version")
            expect(li.locator("dd.after")).to_have_text(m["sentence_after"] or "not ranked by this version")
        stayed_home(page, base)
        assert writes_sent(page) == []
    assert rows(store) == before  # the panel stores nothing
