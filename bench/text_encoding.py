"""Time encoding Beauty's item titles with the default text encoder: once with an empty cache
(model load, ONNX export, every title), then again (every title from the cache).

    python bench/text_encoding.py [--data s3rec:../shared/data/beauty]

Writes bench/results/text_encoding.json. The cache is a fresh temporary folder, so the first
pass pays for everything a first run on a new machine pays for.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402
from recscope.cpu import use_threads  # noqa: E402
from recscope.data import load_dataset  # noqa: E402
from recscope.features import text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="s3rec:../shared/data/beauty")
    args = parser.parse_args()
    threads = use_threads(0)
    data = load_dataset(args.data)
    texts = data.item_texts()
    with tempfile.TemporaryDirectory() as cache:
        tic = time.perf_counter()
        first = text.encode_texts(texts, cache=cache)
        cold = time.perf_counter() - tic
        backend = text._ENCODERS[text.DEFAULT_ENCODER].backend
        text._ENCODERS.clear()  # a rerun is a new process: nothing loaded
        tic = time.perf_counter()
        again = text.encode_texts(texts, cache=cache)
        warm = time.perf_counter() - tic
    print(first.describe(), f"-> {cold:.1f} s in all")
    print(again.describe(), f"-> {warm:.2f} s in all")
    write(
        "text_encoding",
        {
            "data": args.data,
            "items": data.n_items,
            "distinct_texts": first.encoded,
            "threads": threads,
            "backend": backend,
            "empty_cache_seconds": round(cold, 1),
            "cached_seconds": round(warm, 2),
            "bars": {"empty_cache_seconds": 60, "cached_seconds": 2},
        },
    )


if __name__ == "__main__":
    main()
