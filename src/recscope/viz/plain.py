"""Figures in words a merchant reads: the run's faithfulness measurements as sentences.

    trust(rec.info.state.explain_eval)   # None until `recscope explain-eval RUN` has measured

explain-eval (:mod:`recscope.explain.faithfulness`) counts, per method, how often taking the
``EXIT_REMOVED`` past items the method weighs most out of a history drops the recommended item
out of the top-K (``topk_exit_rate``), against taking out as many random past items; and on the
synthetic shop, whose purchases have planted causes, how often the method names the cause first
(``planted_hit@1``). Both are shares of cases already, so they say plainly what a weight is
worth: "take away the 3 past items shapley weighs most and the item drops out of the top 10 in
about 5 of 10 cases (3 random past items: about 1 of 10)". The engineers' measures
(comprehensiveness, sufficiency, Kendall tau, milliseconds) stay beside each sentence as
``numbers``, to be shown on request. Both pages (the report and the live view) draw these
strings as text.
"""

from __future__ import annotations

import math

from recscope.explain.faithfulness import EXIT_REMOVED

FEW = 20  # planted-cause cases up to this many are told as a count ("5 of the 8 purchases measured")


def in_ten(share: float) -> str:
    """A share of cases as "N of 10", rounded, saying so: "about 5 of 10", "9 of 10", "none of 10",
    "fewer than 1 of 10", "more than 9 of 10" (never "10 of 10" for 96%)."""
    if not math.isfinite(share):
        return "an unknown number of 10"
    tenths = share * 10
    if tenths <= 0:
        return "none of 10"
    if tenths >= 10:
        return "10 of 10"
    if tenths < 0.5:
        return "fewer than 1 of 10"
    if tenths >= 9.5:
        return "more than 9 of 10"
    n = round(tenths)
    return f"{n} of 10" if abs(tenths - n) < 0.05 else f"about {n} of 10"


def _number(value, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def method_trust(name: str, m: dict, k: int) -> dict:
    """One method's sentences and numbers: ``{"lead", "planted", "numbers": [[label, text], ...]}``."""
    exit_rate, exit_random = m.get("topk_exit_rate"), m.get("topk_exit_rate_random")
    lead = f"Not measured for {name}."
    if exit_rate is not None and math.isfinite(exit_rate):
        lead = (
            f"Take away the {EXIT_REMOVED} past items {name} weighs most and the recommended item drops out of "
            f"the top {k} in {in_ten(exit_rate)} cases"
        )
        if exit_random is not None and math.isfinite(exit_random):
            lead += f" ({EXIT_REMOVED} random past items: {in_ten(exit_random)})"
        lead += "."
    planted = None
    hit = m.get("planted_hit@1")
    if hit is not None and math.isfinite(hit):
        cases = m.get("planted_cases")
        planted = "On this synthetic shop, where the real reason for each purchase is known, it names that reason "
        if cases and cases <= FEW:  # a handful: the count itself, not a rate that suggests more
            planted += f"first for {round(hit * cases)} of the {cases} purchases measured."
        else:
            planted += f"first for {in_ten(hit)} purchases" + (f" ({cases} measured)." if cases else ".")
    if m.get("target_dependent") is False:
        lead += " It gives every recommended item the same weights, so it cannot say why one item and not another."
    numbers = [
        [
            f"top-{k} exit without its top {EXIT_REMOVED}",
            f"{_number(exit_rate)} (random items {_number(exit_random)})",
        ],
        [
            "comprehensiveness: mean score drop without its top 1..5",
            f"{_number(m.get('comprehensiveness'))} (random {_number(m.get('comprehensiveness_random'))})",
        ],
        [
            "sufficiency: mean score drop keeping only them (lower is better)",
            f"{_number(m.get('sufficiency'))} (random {_number(m.get('sufficiency_random'))})",
        ],
        ["Kendall tau with leave-one-out", _number(m.get("kendall_tau_loo"))],
    ]
    if hit is not None:
        numbers.append(["planted cause first / in its top 3", f"{_number(hit)} / {_number(m.get('planted_hit@3'))}"])
    numbers.append(["milliseconds per explanation", _number(m.get("ms_per_explanation"), 1)])
    return {"lead": lead, "planted": planted, "numbers": numbers}


def trust(measured: dict | None) -> dict | None:
    """The faithfulness measurements (``explain-eval``'s result, as the run records it) in words,
    per method; None when the run has not been measured."""
    if not measured or not measured.get("methods"):
        return None
    k = int(measured.get("k") or 10)
    return {
        "measured_on": f"the top {k} of {measured.get('users', '?')} test shoppers",
        "default": measured.get("default"),
        "k": k,
        "removed": EXIT_REMOVED,
        "methods": {name: method_trust(name, m, k) for name, m in measured["methods"].items()},
    }
