"""The service's OpenAPI document, as the repository commits it (``docs/openapi.json``).

Clients are generated from the committed file (``datamodel-codegen``, ``openapi-python-client``),
so it must say what the app answers: ``tests/test_openapi.py`` compares it with the app's own
document and validates real responses against a client generated from it. After changing a
route or a schema, regenerate it::

    python -m recscope.serve.openapi docs/openapi.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def document() -> dict[str, Any]:
    """The app's OpenAPI document (it does not depend on the run, the store or the keys)."""
    from recscope.serve.app import create_app
    from recscope.serve.settings import Settings

    return create_app(Settings()).openapi()


def text() -> str:
    """The document as the committed file holds it: indented, keys in the app's order."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m recscope.serve.openapi OUT.json", file=sys.stderr)
        return 2
    Path(argv[0]).write_text(text(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
