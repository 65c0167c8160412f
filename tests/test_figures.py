"""Static figures: written as PNG and SVG, sized sensibly, titled, and safe with any text."""

import xml.etree.ElementTree as ET

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from recscope.errors import RecscopeError
from recscope.viz import figures as F

HOSTILE = ["$5 gift card for $10", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]


def titles(n: int) -> list[str]:
    base = [f"Hearth Coffee Maker Classic {i}" for i in range(n)]
    base[0] = "A very long product title that goes on and on, Premium Edition with Extra Accessories"
    for i, text in enumerate(HOSTILE[: max(n - 1, 0)]):
        base[i + 1] = text
    return base


def faithfulness() -> dict:
    """A small dict shaped like the JSON of `recscope explain-eval RUN --json`."""

    def method(scale: float, dependent: bool = True) -> dict:
        return {
            "comprehensiveness": scale,
            "sufficiency": 1 - scale,
            "target_dependent": dependent,
            "deletion_curve": [scale * k for k in (1.0, 1.4, 1.7, 1.9, 2.0)],
            "deletion_curve_random": [0.1, 0.2, 0.3, 0.4, 0.5],
            "keep_curve": [1 - scale * k for k in (0.5, 0.6, 0.7, 0.8, 0.9)],
            "keep_curve_random": [1.2, 1.0, 0.9, 0.8, 0.75],
        }

    return {
        "default": "shapley",
        "users": 200,
        "k": 10,
        "data": "synthetic",
        "methods": {"occlusion": method(0.9), "shapley": method(1.0), "attention": method(0.4, dependent=False)},
    }


def global_view() -> dict:
    """A hand-made dict in the schema of recscope.insights.global_view."""
    drivers = [
        {"label": label, "field": label.split("=")[0], "weight": w, "count": c}
        for label, w, c in [
            ("brand=Acme", 0.8, 900),
            ("category=Audio/Headphones", 0.5, 600),
            ("price=band3", 0.3, 1500),
            ("text", 0.2, 2000),
            ("brand=$5 <script>alert(1)</script>", 0.1, 20),
            ("id", -0.1, 2000),
        ]
    ]
    return {
        "users": 200,
        "k": 10,
        "method": "shapley",
        "drivers": drivers,
        "recommended": {
            "category": {"Audio": 900, "Kitchen": 700, "Beauty": 300, **{f"Cat{i}": 5 for i in range(20)}},
            "brand": {"Acme": 1200, "Hearth": 800},
        },
        "catalog": {
            "category": {"Audio": 40, "Kitchen": 30, "Beauty": 60, "Garden": 90, **{f"Cat{i}": 3 for i in range(20)}}
        },
        "coverage": {"recommended_items": 281, "catalog_items": 1200, "share": 0.234},
        "popularity": {
            "labels": ["top 1%", "1-5%", "5-20%", "20-50%", "bottom 50%"],
            "recommended": [0.31, 0.29, 0.25, 0.12, 0.03],
            "interactions": [0.18, 0.27, 0.30, 0.17, 0.08],
        },
    }


rng = np.random.default_rng(0)
ATTRIBUTION = rng.normal(0, 0.3, (12, 10))  # (T, K)
ATTENTION = rng.dirichlet(np.ones(12), size=(2, 2))  # (L, H, T)
ATTRIBUTES = {"brand=Acme": 1.2, "category=Audio/Headphones": 0.8, "price=band3": -0.4, "text": 0.3, "id": -0.9}

# name -> (draw(path), a fragment of the title, (min width, max width, min height, max height) in PNG pixels)
FIGURES = {
    "attribution": (
        lambda p: F.attribution_heatmap(
            ATTRIBUTION, titles(12), [f"{k + 1}. {t}" for k, t in enumerate(titles(10))], p, title="why these items"
        ),
        "why these items",
        (900, 2200, 600, 1400),
    ),
    "attention": (
        lambda p: F.attention_heatmap(ATTENTION, titles(12), p, title="final-position attention"),
        "final-position attention",
        (600, 1400, 500, 1200),
    ),
    "attribute_bars": (
        lambda p: F.attribute_bars(ATTRIBUTES, p, title="what drove Hearth Coffee Maker"),
        "what drove Hearth Coffee Maker",
        (600, 1200, 300, 800),
    ),
    "deletion": (lambda p: F.deletion_curves(faithfulness(), p), "Faithfulness", (1000, 1600, 400, 800)),
    "drivers": (lambda p: F.drivers_chart(global_view(), p), "What drives recommendations", (700, 1300, 300, 900)),
    "mix": (
        lambda p: F.recommended_mix(global_view(), p),
        "Recommended category vs the catalog",
        (700, 1300, 400, 1100),
    ),
    "popularity": (
        lambda p: F.popularity_chart(global_view(), p),
        "coverage 23.4% of 1,200 items",
        (700, 1300, 400, 800),
    ),
}


def svg_text(path) -> str:
    """All text in an SVG (parsing it as XML on the way); fails on any <script> element."""
    tree = ET.parse(path)
    assert not [el for el in tree.iter() if el.tag.rsplit("}", 1)[-1] == "script"]
    return " ".join("".join(el.itertext()) for el in tree.iter() if el.tag.rsplit("}", 1)[-1] == "text")


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_as_png_and_svg(name, tmp_path):
    draw, title, (w0, w1, h0, h1) = FIGURES[name]
    png = draw(tmp_path / "png" / f"{name}.png")  # parent directories are created
    assert png == tmp_path / "png" / f"{name}.png" and png.stat().st_size > 5_000
    width, height = Image.open(png).size
    assert w0 <= width <= w1 and h0 <= height <= h1, (width, height)
    svg = draw(tmp_path / f"{name}.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    assert title in svg_text(svg)
    assert not plt.get_fignums(), "every figure is closed after saving"


def test_fifty_item_history_stays_readable(tmp_path):
    T, K = 50, 10
    weights = rng.normal(0, 0.3, (T, K))
    weights[-1, 0] = 9.0  # one huge cell saturates the colour scale instead of washing out the rest
    rows = [f"past purchase number {i}" for i in range(T)]
    path = F.attribution_heatmap(weights, rows, [f"rec {k}" for k in range(K)], tmp_path / "h.svg", title="fifty")
    text = svg_text(path)
    assert "1. past purchase number 0" in text and "50. past purchase number 49" in text  # every row labelled
    assert "9.00" in text and text.count("\u2212") > 50, "values annotated, negatives with a real minus sign"
    height = Image.open(F.attribution_heatmap(weights, rows, rows[:K], tmp_path / "h.png", title="fifty")).size[1]
    assert height <= (F.MAX_HEIGHT + 2.5) * F.DPI
    att = F.attention_heatmap(rng.dirichlet(np.ones(T), size=(2, 4)), rows, tmp_path / "a.png")
    assert Image.open(att).size[1] <= (F.MAX_HEIGHT + 2.5) * F.DPI


def test_very_long_history_drops_annotations_and_thins_labels(tmp_path):
    T = 200
    rows = [f"item {i}" for i in range(T)]
    weights = rng.normal(0, 1, (T, 5))
    weights[-2] = 0.0  # the newest row's neighbour is unimportant: the newest row gets its label
    path = F.attribution_heatmap(weights, rows, list("abcde"), tmp_path / "h.svg", title="long")
    text = svg_text(path)
    assert "200. item 199" in text and "199. item 198" not in text, "labels never overlap"
    assert "of 200 rows unlabelled" in text and "the largest |weight|" in text
    assert "0.00" not in text and "\u22120." not in text, "no annotations at this size"


def drawn(monkeypatch) -> list:
    """Keep the figures the functions draw (instead of saving and closing them)."""
    figures = []
    monkeypatch.setattr(F, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def test_tall_heatmap_labels_the_rows_that_matter_and_clips_no_cell(tmp_path, monkeypatch):
    T, K = 200, 10
    weights = np.random.default_rng(1).normal(0, 0.3, (T, K))
    weights[57, 3] = 9.0  # the largest row, at an odd index, between rows that get no label
    weights[56, 0] = 2.0  # a close second right above it: its neighbour takes the room
    weights[121, 1] = -4.0
    figures = drawn(monkeypatch)
    rows = [f"past purchase {i}" for i in range(T)]
    F.attribution_heatmap(weights, rows, [f"rec {k}" for k in range(K)], tmp_path / "h.png", title="tall")
    ax = figures[0].axes[0]
    labels = {t.get_text(): t for t in ax.get_yticklabels()}
    assert "58. past purchase 57" in labels and labels["58. past purchase 57"].get_fontweight() == "bold"
    assert "122. past purchase 121" in labels and "57. past purchase 56" not in labels
    unlabelled = T - len(labels)
    assert 0 < unlabelled < T and f"{unlabelled} of 200 rows unlabelled" in ax.get_ylabel()
    low, high = ax.images[0].get_clim()
    assert low <= weights.min() and high >= weights.max() and low == -high == -9.0, "no cell clipped"
    assert "±9" in figures[0].axes[1].get_ylabel(), "the colour bar says the range"
    plt.close("all")


def test_colour_limits_fit_the_data():
    scale = F.colour_limits(np.array([[0.1, -9.5], [np.nan, 2.0]]))
    assert (scale.low, scale.high) == (-9.5, 9.5) and "±9.5" in scale.note
    attention = F.colour_limits(np.array([0.02, 0.31, 0.0]), signed=False)
    assert (attention.low, attention.high) == (0.0, 0.31) and "0 to 0.31" in attention.note
    assert (F.colour_limits(np.zeros((3, 2))).high, F.colour_limits([]).high) == (1.0, 1.0)


def test_label_rows_puts_the_important_rows_first():
    importance = np.zeros(20)
    importance[[7, 8, 15]] = [5.0, 4.0, 3.0]
    shown, bold = F.label_rows(importance, gap=3, first=3)
    assert 7 in shown and 8 not in shown and 15 in shown and bold == [7, 15]
    assert all(b - a >= 3 for a, b in zip(shown, shown[1:], strict=False)), "labels at least a gap apart"
    assert F.label_rows(importance, gap=1) == (list(range(20)), [])


def test_text_from_data_is_plain_text(tmp_path):
    long_title = "A very long product title that goes on and on, Premium Edition with Extra Accessories"
    path = F.attribution_heatmap(
        ATTRIBUTION[:4, :3], HOSTILE + [long_title], HOSTILE, tmp_path / "h.svg", title="$5 card <b>bold</b>"
    )
    text = svg_text(path)
    for s in [
        "$5 gift card for $10",
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "$5 card <b>bold</b>",
    ]:
        assert s in text, s
    assert "\\$" not in text, "the escape for mathtext does not show"
    assert long_title not in text and "A very long product title" in text and "…" in text
    assert F._label("$5 and $10") == r"\$5 and \$10"
    assert F.shorten("abc  def", 5) == "abc…" and F.shorten("short") == "short"
    bars = F.attribute_bars({s: 0.5 for s in HOSTILE}, tmp_path / "b.svg", title="$5 <script>x</script>")
    assert "<script>alert(1)</script>" in svg_text(bars)
    assert plt.rcParams["text.usetex"] is False


def test_attribute_bars_keep_the_largest_and_sum_the_rest(tmp_path):
    weights = {f"brand=B{i}": (-1) ** i * (i + 1) / 10 for i in range(20)}  # |weight| grows with i
    text = svg_text(F.attribute_bars(weights, tmp_path / "b.svg", title="bars", top=5))
    assert "other (15)" in text and "brand=B19" in text and "brand=B15" in text and "brand=B14" not in text
    assert "contribution to the score" in text and "pushed the score up" in text
    assert "other" not in svg_text(F.attribute_bars(dict(list(weights.items())[:6]), tmp_path / "c.svg", "t", top=5))
    assert F.attribute_bars({}, tmp_path / "empty.png", title="nothing").stat().st_size > 0


def test_deletion_curves_mark_the_default_and_the_baseline(tmp_path):
    text = svg_text(F.deletion_curves(faithfulness(), tmp_path / "d.svg"))
    assert "shapley (default)" in text and "random order (baseline)" in text
    assert "attention (same for every item)" in text and "occlusion (default)" not in text
    assert "remove the top-k" in text and "keep only the top-k" in text and "higher = more faithful" in text
    with_null = faithfulness()
    with_null["methods"]["occlusion"]["deletion_curve"] = [1.0, None, 2.0]  # JSON null, shorter curve
    assert F.deletion_curves(with_null, tmp_path / "n.png", title="custom").stat().st_size > 0
    with pytest.raises(RecscopeError, match="explain-eval"):
        F.deletion_curves({"methods": {}}, tmp_path / "x.png")


def test_merchant_figures(tmp_path):
    view = global_view()
    text = svg_text(F.recommended_mix(view, tmp_path / "m.svg", top=4))
    assert "Garden" in text, "a large catalog value never recommended is shown"
    assert "other (" in text and "share of recommendations" in text and "share of catalog items" in text
    assert "Acme" in svg_text(F.recommended_mix(view, tmp_path / "b.svg", field="brand"))
    with pytest.raises(RecscopeError, match="brand, category"):
        F.recommended_mix(view, tmp_path / "x.png", field="colour")
    text = svg_text(F.drivers_chart(view, tmp_path / "d.svg", top=3))
    assert "brand=Acme" in text and "price=band3" in text and "brand=$5" not in text and "top 3 of 6 values" in text
    bad = dict(view, popularity={"labels": ["a"], "recommended": [1.0], "interactions": []})
    with pytest.raises(RecscopeError, match="line up"):
        F.popularity_chart(bad, tmp_path / "p.png")


def test_format_comes_from_the_suffix(tmp_path):
    before = plt.rcParams["font.size"]
    with pytest.raises(RecscopeError, match=r"\.png or \.svg"):
        F.attribute_bars(ATTRIBUTES, tmp_path / "bars.pdf", title="t")
    assert not plt.get_fignums(), "a failed save still closes the figure"
    assert plt.rcParams["font.size"] == before, "the figure style does not leak into the caller's rcParams"
    png = F.attribute_bars(ATTRIBUTES, tmp_path / "BARS.PNG", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
