"""The live web view in a real browser (Debian's chromium driven by Playwright) against a real
`recscope serve` process on 127.0.0.1: a purchase changes the top-K and the page says why, the
buttons and the catalog search post what they should, nothing leaves the host, no console error,
and hostile titles and ids run nothing and show as text."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import HOSTILE_ID, HOSTILE_TITLE, HOSTILE_USER, LONG_TITLE, RTL_TITLE, playwright_or_skip
from servers import Server

SHOTS = Path(os.environ.get("RECSCOPE_UI_SHOTS", "/tmp"))  # where the screenshots go, to look at
USER = "U00007"

expect = playwright_or_skip().expect


@pytest.fixture(scope="module")
def base(hostile_run, tmp_path_factory) -> str:
    """A `recscope serve` process over the hostile run, on a free loopback port."""
    root = tmp_path_factory.mktemp("ui-browser")
    with Server(hostile_run, "--db", f"sqlite:///{root / 'store.sqlite'}", log=root / "serve.log") as server:
        yield server.base


@pytest.fixture
def page(browser, base):
    """A fresh tab (its own sessionStorage) recording every console error and request."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.errors, page.requests = [], []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    yield page
    context.close()


def listed(page) -> list[str]:
    return page.eval_on_selector_all("#recs li button[data-action=view]", "bs => bs.map(b => b.dataset.item)")


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


def test_buying_an_item_changes_the_top_k_and_the_page_says_why(page, base):
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


def test_not_interested_and_view_post_and_redraw(page, base):
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
    expect(page.locator("#heatmap-note")).to_contain_text("occlusion attribution")
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
    assert "added" in page.text_content("#changes-lead") and "P0010" not in listed(page)
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
