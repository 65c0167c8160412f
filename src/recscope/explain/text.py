"""One sentence per recommendation, grounded in the numbers.

It cites only history items with a clearly positive weight: at least a quarter of all
positive weight, and at least a quarter of the item's lead over the first item outside
the top-K (``margin``), so a push too small to matter is never called a reason. It names an
attribute only when the cited items share it with the recommended item, and mentions the
counterfactual only when re-ranking verified it. When nothing stands out it says so.
"""

from __future__ import annotations

from recscope.explain.base import Explanation

SHARE = 0.25  # a cited item carries at least this share of all positive weight


def cited(expl: Explanation, margin: float = 0.0, most: int = 2) -> list:
    """The history items a sentence may name as reasons (see the module docstring)."""
    positive = [h for h in expl.history if h.weight > 0]
    total = sum(h.weight for h in positive)
    if total <= 0:
        return []
    floor = max(SHARE * total, SHARE * abs(margin))
    return [h for h in sorted(positive, key=lambda h: -h.weight) if h.weight >= floor][:most]


def sentence(
    expl: Explanation, shared: dict[str, list[str]] | None = None, margin: float = 0.0, verb: str = "bought"
) -> str:
    """``shared`` maps a field to the values the cited items share with the candidate;
    ``margin`` is the item's score minus the score of the first item outside the top-K."""
    if not expl.target_dependent:
        top = expl.top(2)
        names = " and ".join(f"“{h.title}”" for h in top)
        return f"The model read your history most closely at {names} (attention; the same for every recommendation)."
    items = cited(expl, margin)
    if not items:
        return "Recommended from your history as a whole; no single past item stands out."
    names = " and ".join(f"“{h.title}”" for h in items)
    text = f"Because you {verb} {names}"
    facts = [f"same {field}: {', '.join(values)}" for field, values in (shared or {}).items() if values]
    if facts:
        text += f" ({'; '.join(facts[:2])})"
    text += "."
    cf = expl.counterfactual
    if cf is not None and cf.found and cf.removed:
        if len(cf.removed) <= 2:
            gone = " and ".join(f"“{h.title}”" for h in cf.removed)
            text += f" Without {gone}, it would drop out of your top {cf.k}."
        else:  # no short list of items carries it: say how many it takes
            text += f" It leaves your top {cf.k} only once {len(cf.removed)} of your past items are taken away."
    return text
