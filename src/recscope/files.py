"""Writing a file whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object], *, per_process: bool = False) -> None:
    """``write(tmp)`` fills a temporary sibling of ``path``, which is then renamed over ``path``:
    a reader never sees half a file, and a crash never leaves one under the name.

    The sibling is ``NAME.tmp`` (the files of a run, which one writer holding the run's lock
    writes at a time; the demo clears such a leftover by that name). ``per_process``:
    ``.NAME.PID.tmp``, for a file several processes may write at once without a lock (two
    building the same retrieval index do not write into each other's). A ``write`` that fails
    leaves no sibling behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" if per_process else f"{path.name}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
