"""Visible progress for every step that can take more than a few seconds.

On a terminal it is a rich progress bar (on stderr, gone when the step ends); in a pipe
or a log it is a plain line every ``every`` seconds and one at the end, so a long step
never looks hung.

    for user in track(users, "explain-eval: explaining test users"):
        ...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

_stderr = Console(stderr=True)


def track(
    items: Iterable[T],
    description: str,
    *,
    total: int | None = None,
    console: Console | None = None,
    every: float = 10.0,
) -> Iterator[T]:
    """Yield ``items`` while showing how far along they are and how long it has taken."""
    console = console or _stderr
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    if console.is_terminal:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        if total:
            columns.append(TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            yield from progress.track(items, total=total, description=description)
        return
    yield from _lines(items, description, total, console, every)


def _lines(items: Iterable[T], description: str, total: int | None, console: Console, every: float) -> Iterator[T]:
    tic = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= every:
            last = now
            console.print(f"{description}: {_count(done, total)} ({now - tic:.0f} s)", markup=False, highlight=False)
    if time.perf_counter() - tic >= every:
        console.print(
            f"{description}: {_count(done, total)} done in {time.perf_counter() - tic:.0f} s",
            markup=False,
            highlight=False,
        )
    sys.stderr.flush()


def _count(done: int, total: int | None) -> str:
    return f"{done:,}/{total:,}" if total else f"{done:,}"
