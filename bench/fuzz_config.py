"""A long property-based fuzz of config loading: any --set string, YAML file or run.json config
either loads a valid config or raises ConfigError, never another exception.

    python bench/fuzz_config.py --examples 20000 --out bench/results/fuzz_config.json

The properties and strategies are the test suite's (tests/test_config_fuzz.py, 200
examples each there); this runs them far longer and records what it found.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_config_fuzz as fz  # noqa: E402
from recscope import config  # noqa: E402


def properties(tmp: Path) -> dict:
    path = tmp / "config.yaml"

    def set_overrides(pairs):
        fz.loads_or_config_error(lambda: config.load(None, [f"{k}={v}" for k, v in pairs]))

    def raw_set_strings(items):
        fz.loads_or_config_error(lambda: config.load(None, items))

    def yaml_files(document):
        path.write_text(yaml.safe_dump(document))
        fz.loads_or_config_error(lambda: config.load(path))

    def yaml_bytes(blob):
        path.write_bytes(blob)
        fz.loads_or_config_error(lambda: config.load(path))

    def run_json_config(raw):
        fz.loads_or_config_error(lambda: config.Config.from_dict(raw, "run.json"))

    return {
        "set_overrides": (set_overrides, st.lists(st.tuples(fz.set_keys, fz.yaml_scalars), min_size=1, max_size=3)),
        "raw_set_strings": (raw_set_strings, st.lists(st.text(max_size=40), min_size=1, max_size=2)),
        "yaml_files": (yaml_files, st.one_of(fz.sections, fz.values)),
        "yaml_bytes": (yaml_bytes, st.binary(max_size=256)),
        "run_json_config": (run_json_config, st.one_of(fz.sections, fz.values)),
    }


def _counting(prop, calls: list[int]):
    def run(value):
        calls[0] += 1
        prop(value)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="examples per property")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/fuzz_config.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (prop, strategy) in properties(Path(tmp)).items():
            calls = [0]
            test = settings(
                max_examples=args.examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )(given(strategy)(_counting(prop, calls)))
            tic = time.perf_counter()
            failure = None
            try:
                test()
            except Exception as e:  # the minimal failing example, as hypothesis reports it
                failure = "".join(traceback.format_exception_only(type(e), e)).strip()
            seconds = time.perf_counter() - tic
            results[name] = {"examples_run": calls[0], "seconds": round(seconds, 1), "failure": failure}
            print(f"{name}: {calls[0]} examples in {seconds:.1f} s: {failure or 'no failure'}", flush=True)
    record = {
        "command": "python bench/fuzz_config.py " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version()},
        "properties": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
