"""Shapley's positions budget: faithfulness and time of item explanations against the budget.

    python bench/shapley_budget.py RUN [--users 300] [--min-len 2] [--positions 0 6000 4000 3000]

The same test users' top-10s (chosen as `recscope explain-eval` chooses them, optionally only
histories of at least --min-len items) are explained by Shapley with each positions budget
(0: the sub-history budget alone, as before the positions budget) and measured as
`recscope explain-eval` measures a method: comprehensiveness, sufficiency, top-10 exit rate
against random removals, Kendall tau against leave-one-out, and ms per explained item (one
torch thread, as a worker serves). Beside them, each budget's agreement with a reference of 64
sampled orders (Kendall tau and the overlap of the top 3): how much sampling noise it adds.
Writes bench/results/shapley_budget_<name>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).parent))
from _common import load_average, write  # noqa: E402
from recscope.explain.faithfulness import _Case, _measure, _random_baselines, faithfulness_cases  # noqa: E402
from recscope.explain.shapley import BUDGET, ShapleyExplainer, sampled_shapley, shapley  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402

REFERENCE_ORDERS = 64


class Budgeted(ShapleyExplainer):
    """Shapley with a given positions budget (None: the sub-history budget alone)."""

    def __init__(self, model, table, positions: int | None):
        super().__init__(model, table)
        self.positions = positions

    @torch.no_grad()
    def attribute(self, history, targets, events=None):
        def value(masks):
            return self.values(history, masks, targets, events)

        return shapley(value, len(history), len(targets), BUDGET, self.positions)


def agreement(explainer, reference: list[torch.Tensor], chosen: list[_Case]) -> dict:
    taus, overlap = [], []
    for case, ref in zip(chosen, reference, strict=True):
        weights = explainer.attribute(case.read, case.targets, case.events)
        for w, r in zip(weights, ref, strict=True):
            tau = kendalltau(w.numpy(), r.numpy()).statistic
            if not np.isnan(tau):
                taus.append(tau)
            top = set(torch.argsort(w, descending=True)[:3].tolist())
            overlap.append(len(top & set(torch.argsort(r, descending=True)[:3].tolist())) / min(3, len(w)))
    return {"tau_vs_reference": float(np.mean(taus)), "top3_overlap_vs_reference": float(np.mean(overlap))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--min-len", type=int, default=2)
    parser.add_argument("--positions", type=int, nargs="+", default=[0, 6000, 4000, 3000])
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as one worker thread explains
    rec = Recommender.load(args.run)
    model, table = rec.model, rec.snapshot.table
    chosen = faithfulness_cases(rec, args.users, min_len=args.min_len)
    lengths = [len(c.read) for c in chosen]
    print(f"{len(chosen)} cases, history length median {np.median(lengths):.0f}, max {max(lengths)}")
    random = _random_baselines(model, table, chosen, 10)
    reference_explainer = ShapleyExplainer(model, table)
    reference = []
    for case in chosen:
        n, k = len(case.read), len(case.targets)

        def value(masks, case=case):
            return reference_explainer.values(case.read, masks, case.targets, case.events)

        reference.append(shapley(value, n, k) if 2**n <= BUDGET else sampled_shapley(value, n, k, REFERENCE_ORDERS))
    results = {}
    for positions in args.positions:
        explainer = Budgeted(model, table, positions or None)
        measured = _measure(explainer, model, table, chosen, 10, random)
        keep = ("comprehensiveness", "comprehensiveness_random", "sufficiency", "sufficiency_random")
        keep += ("topk_exit_rate", "topk_exit_rate_random", "topk_exit_rate_by_length", "kendall_tau_loo")
        keep += ("ms_per_explanation", "ms_p99")
        keep += ("planted_hit@1", "planted_hit@3", "planted_cases")  # on data with planted causes
        row = {key: measured[key] for key in keep if key in measured} | agreement(explainer, reference, chosen)
        results[str(positions or "sub-histories only")] = row
        print(positions or "sub-histories only", {k: v for k, v in row.items() if not isinstance(v, dict)})
    write(
        f"shapley_budget_{args.name or rec.data.name}",
        {
            "run": args.run,
            "data": rec.data.name,
            "users": len(chosen),
            "min_len": args.min_len,
            "history_length": {"median": float(np.median(lengths)), "max": int(max(lengths))},
            "sub_history_budget": BUDGET,
            "reference_orders": REFERENCE_ORDERS,
            "load_average_after": load_average(),
            "budgets": results,
        },
    )


if __name__ == "__main__":
    main()
