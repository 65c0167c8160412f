"""The loaders' fuzz at length: thousands of generated inputs per loader, every failure counted.

The inputs and the property are those of tests/test_fuzz_loaders.py (tests/loader_fuzz.py);
here no case stops the run: each one that breaks the property (a wrong count, events out of
order, an unlocated DataError, any other exception) is recorded with its input.

    python bench/fuzz_loaders.py --examples 5000 --out bench/results/fuzz_loaders.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _common import commit, machine  # noqa: E402
from loader_fuzz import STRATEGIES, configs, run_case  # noqa: E402


def fuzz(kind: str, examples: int, seed: int) -> dict:
    outcomes = {"loaded": 0, "error": 0}
    failures: list[dict] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: every failure is kept as drawn
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data(), config=configs)
    def one(data, config):
        case = data.draw(STRATEGIES[kind])
        try:
            outcomes[run_case(kind, case, config)] += 1
        except Exception as e:  # a failure of the property: recorded, the run goes on
            failures.append(
                {"input": repr(case)[:2000], "config": repr(config), "exception": f"{type(e).__name__}: {e}"[:2000]}
            )
            if len(failures) <= 3:
                traceback.print_exc()

    start = time.perf_counter()
    seeded = one
    seeded._hypothesis_internal_use_seed = seed  # reproducible runs
    seeded()
    return {
        "examples": sum(outcomes.values()) + len(failures),
        **outcomes,
        "failures": len(failures),
        "failure_cases": failures[:20],
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="generated inputs per loader")
    parser.add_argument("--loaders", nargs="*", default=sorted(STRATEGIES), choices=sorted(STRATEGIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz_loaders.json")
    args = parser.parse_args()
    start = time.perf_counter()
    results = {}
    for kind in args.loaders:
        results[kind] = fuzz(kind, args.examples, args.seed)
        r = results[kind]
        print(
            f"{kind:10s} {r['examples']:6d} examples: {r['loaded']} loaded, {r['error']} DataError, "
            f"{r['failures']} failures, {r['seconds']} s",
            flush=True,
        )
    total = {
        "examples": sum(r["examples"] for r in results.values()),
        "failures": sum(r["failures"] for r in results.values()),
        "seconds": round(time.perf_counter() - start, 2),
    }
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit(),
        "machine": machine(),
        **total,
        "loaders": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"{total['examples']} examples, {total['failures']} failures, {total['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
