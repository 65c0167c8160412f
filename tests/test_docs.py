"""The markdown docs hold together: every link to a section or a file of the repository leads
somewhere, and no command names a path of one developer's machine."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)  # a "# comment" in code is no heading
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_slug_matches_github():
    assert slug("Side by side with RecBole's SASRec: Beauty") == "side-by-side-with-recboles-sasrec-beauty"
    assert slug("Load: Beauty run, loopback") == "load-beauty-run-loopback"
    assert slug("Earlier runs (Intel Xeon; `configs/beauty.yaml`)") == "earlier-runs-intel-xeon-configsbeautyyaml"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_links_lead_somewhere(path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{path.name}: links to nothing: {broken}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_no_developer_machine_paths(path):
    found = re.findall(r"(?<![\w.])/(?:work|home|Users)/[\w./-]+", path.read_text())
    assert not found, f"{path.name} names paths of one machine: {found}"


def test_the_benchmarks_open_with_a_summary_that_links_to_its_sections():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    summary = text[: text.index("## Lab notes")]
    assert len(summary.splitlines()) < 60, "the summary is no longer one screen"
    assert "0.0654" in summary and "0.981" in summary and "10.5×" in summary
    links = re.findall(r"\]\(#([^)]+)\)", summary)
    assert len(links) >= 10 and set(links) <= anchors(ROOT / "docs" / "benchmarks.md")
    assert "/tmp/" not in text, "a path of the session's scratch space"
