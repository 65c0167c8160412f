"""One sentence per explained item, grounded in the numbers.

It cites only history items with a clearly positive weight: at least a quarter of all
positive weight, and at least a quarter of the item's lead over the first item outside
the top-K (``margin``), so a push too small to matter is never called a reason; and, when
the explanation carries it, only if taking those items out together really lowers the
item's own score by that quarter of its lead (``Explanation.cited_drop``). It names an
attribute value ("same brand: Velo") only when the cited items share it with the item and
that field pushed the score up on both sides: the history's brand (``attributes_history``,
by the explanation's own ``attributes_method``) and the item's own brand
(``attributes_candidate``), so the sentence never disagrees with the bars shown beside it.
It quotes the counterfactual only when the removed items carried the item (its own score
fell below the cut-off), never when other items merely rose past it. An item that is not
recommended (outside the top-K, or already owned) is said to be so. When nothing stands
out it says so. When the explanation carries word attributions (``Explanation.words``) and
the heaviest run of the item's top words (or its longest part) also stands in a cited item's
title, it says so: "its title shares 'Smart 3' with “Voltra Phone Smart 3”"
(:func:`recscope.explain.words.shared_phrase`).
"""

from __future__ import annotations

from recscope.explain.base import DISMISSED, HIDDEN, OUTSIDE_TOP_K, OWNED, Explanation
from recscope.explain.words import shared_phrase
from recscope.histories import DISMISS

SHARE = 0.25  # a cited item carries at least this share of all positive weight (and of the lead)


def cited(expl: Explanation, margin: float = 0.0, most: int = 2) -> list:
    """The history items a sentence may name as reasons, by their weights (see the module docstring)."""
    positive = [h for h in expl.history if h.weight > 0]
    total = sum(h.weight for h in positive)
    if total <= 0:
        return []
    floor = max(SHARE * total, SHARE * abs(margin))
    return [h for h in sorted(positive, key=lambda h: -h.weight) if h.weight >= floor][:most]


def confirmed(expl: Explanation, margin: float = 0.0) -> list:
    """:func:`cited`, kept only if removing those items lowers the item's own score enough."""
    items = cited(expl, margin)
    drop = expl.cited_drop
    if items and drop is not None and (drop <= 0 or drop < SHARE * abs(margin)):
        return []
    return items


def supported(expl: Explanation, shared: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The shared fields whose attribution is positive in the history and on the item itself."""
    out = {}
    for field, values in (shared or {}).items():
        own = [w for key, w in expl.attributes_candidate.items() if key == field or key.startswith(f"{field}=")]
        if values and own and own[0] > 0 and expl.attributes_history.get(field, 0.0) > 0:
            out[field] = values
    return out


def _did(items: list, verb: str) -> str:
    """What the user did with the cited ``items``: "bought “A” and dismissed “B”" (a dismissal the
    model read is never said to be a purchase)."""
    parts = []
    for said, group in (
        (verb, [h for h in items if h.event != DISMISS]),
        ("dismissed", [h for h in items if h.event == DISMISS]),
    ):
        if group:
            parts.append(f"{said} " + " and ".join(f"“{h.title}”" for h in group))
    return " and ".join(parts)


def sentence(
    expl: Explanation, shared: dict[str, list[str]] | None = None, margin: float = 0.0, verb: str = "bought"
) -> str:
    """``shared`` maps a field to the values the cited items share with the candidate;
    ``margin`` is the item's score minus the score of the first item outside the top-K."""
    if expl.status == OWNED:
        return "Already in your history: not recommended (owned items are never recommended)."
    if expl.status == DISMISSED:
        return "You said you are not interested in it: it is not recommended to you again."
    if expl.status == HIDDEN:
        return "Hidden in the catalog (out of stock or removed): it is in no list, for anyone."
    if expl.status == OUTSIDE_TOP_K:
        text = f"Ranked {expl.rank:,} of {expl.candidates:,}, outside your top {expl.k}: not recommended."
        items = cited(expl)
        if expl.target_dependent and items:
            text += f" What pushes it up most: {' and '.join(f'“{h.title}”' for h in items)}."
        return text
    if not expl.target_dependent:
        top = expl.top(2)
        names = " and ".join(f"“{h.title}”" for h in top)
        return f"The model read your history most closely at {names} (attention; the same for every recommendation)."
    items = confirmed(expl, margin)
    if not items:
        return "Recommended from your history as a whole; no single past item stands out."
    text = f"Because you {_did(items, verb)}"
    facts = [f"same {field}: {', '.join(values)}" for field, values in supported(expl, shared).items()]
    if facts:
        text += f" ({'; '.join(facts[:2])})"
    shared_words = shared_phrase(expl.words, [h.position for h in items])
    if shared_words is not None:
        phrase, title = shared_words
        text += f"; its title shares '{phrase}' with “{title}”"
    text += "."
    cf = expl.counterfactual
    if cf is not None and cf.carried and cf.removed:
        if len(cf.removed) <= 2:
            gone = " and ".join(f"“{h.title}”" for h in cf.removed)
            text += f" Without {gone}, it would drop out of your top {cf.k}."
        else:  # no short list of items carries it: say how many it takes
            text += f" It leaves your top {cf.k} only once {len(cf.removed)} of your past items are taken away."
    return text
