"""The service's API fuzz at length: many more Schemathesis cases per operation, every failure counted.

The property and the loop are tests/test_serve_fuzz.py's (``fuzz``): positive and negative cases
of each operation of the app's own OpenAPI document, in-process over ASGI, with the API key sent
and known ids swapped in; checks: no 5xx, status code, content type and body as documented,
negative data refused. Here no failure stops the run: each is recorded with a curl line.

    python bench/serve_fuzz.py --examples 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _common import write  # noqa: E402
from recscope.cli import app as cli  # noqa: E402
from recscope.recommend import Recommender  # noqa: E402
from recscope.serve.app import create_app  # noqa: E402
from recscope.serve.settings import Settings  # noqa: E402
from test_serve_fuzz import KEY, SPEC, TINY, Known, fuzz, operations  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="cases per operation and mode (positive, negative)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        trained = CliRunner().invoke(
            cli, ["train", "--data", SPEC, "--out", str(run), "--config", TINY, "--set", "train.epochs=2"]
        )
        assert trained.exit_code == 0, trained.output
        app = create_app(Settings(run=run, db=f"sqlite:///{Path(tmp) / 'store.sqlite'}", api_key=KEY))
        known = Known.seed(app, Recommender.load(run), {"X-API-Key": KEY})
        results = []
        for operation in operations():
            begun = time.perf_counter()
            outcome = fuzz(app, known, operation=operation, examples=args.examples, seed_=args.seed)
            seconds = round(time.perf_counter() - begun, 1)
            results.append(
                {
                    "operation": operation,
                    "examples": outcome.examples,
                    "statuses": {str(k): v for k, v in sorted(outcome.statuses.items())},
                    "failures": len(outcome.failures),
                    "failure_cases": outcome.failures[:10],
                    "seconds": seconds,
                }
            )
            print(
                f"{operation:62s} {outcome.examples:6d} examples {len(outcome.failures):4d} failures {seconds:7.1f} s",
                flush=True,
            )
    write(
        "serve_fuzz",
        {
            "command": f"python bench/serve_fuzz.py --examples {args.examples} --seed {args.seed}",
            "data": f"{SPEC}, configs/tiny.yaml, train.epochs=2; SQLite store; API key sent",
            "examples_per_operation_and_mode": args.examples,
            "operations": len(results),
            "examples": sum(r["examples"] for r in results),
            "failures": sum(r["failures"] for r in results),
            "seconds": round(time.perf_counter() - start, 1),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
