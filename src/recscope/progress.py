"""Visible progress for every step that can take more than a few seconds.

On a terminal it is a rich progress bar (on stderr, gone when the step ends); in a pipe
or a log it is a plain line every ``every`` seconds and one at the end, so a long step
never looks hung.

    for user in track(users, "explain-eval: explaining test users"):
        ...
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

_stderr = Console(stderr=True)
_live: Progress | None = None  # the bar on screen, if any


def track(
    items: Iterable[T],
    description: str,
    *,
    total: int | None = None,
    console: Console | None = None,
    every: float = 10.0,
) -> Iterator[T]:
    """Yield ``items`` while showing how far along they are and how long it has taken.

    A ``track`` inside another one (the users of each method) adds a line under the bar
    already on screen, as rich draws one live display at a time.
    """
    global _live
    console = console or _stderr
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    if not console.is_terminal:
        yield from _lines(items, description, total, console, every)
    elif _live is not None:
        task = _live.add_task(description, total=total)
        try:
            for item in items:
                yield item
                _live.advance(task)
        finally:
            _live.remove_task(task)
    else:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        if total:
            columns.append(TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            _live = progress
            try:
                yield from progress.track(items, total=total, description=description)
            finally:
                _live = None


def _lines(items: Iterable[T], description: str, total: int | None, console: Console, every: float) -> Iterator[T]:
    tic = last = time.perf_counter()
    done = 0

    def say(text: str) -> None:
        console.print(f"{description}: {text}", markup=False, highlight=False, soft_wrap=True)
        console.file.flush()

    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= every and (total is None or done < total):
            last = now
            left = f", about {(now - tic) / done * (total - done):.0f} s left" if total else ""
            say(f"{_count(done, total)} ({now - tic:.0f} s{left})")
    if time.perf_counter() - tic >= every:
        say(f"{_count(done, total)} done in {time.perf_counter() - tic:.0f} s")


def _count(done: int, total: int | None) -> str:
    return f"{done:,}/{total:,}" if total else f"{done:,}"
