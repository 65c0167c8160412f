"""One writer per run directory: ``RUN/.lock``.

    with RunLock(run, "train"):
        ...  # write the run's files

The lock file is created with O_CREAT|O_EXCL (atomic: of two processes, exactly one
creates it) and holds who owns it: pid, host, command, start time. It is removed when
the block ends, by an exception, Ctrl-C or SIGTERM (turned into SystemExit while the
lock is held). A lock left by a process that died without cleaning up (SIGKILL, power
loss) is stale: if its host is this one and its pid is gone, the next writer takes it
over and says so. A lock from another host is never taken over: we cannot see whether
its process is alive.

The lock is re-entrant within a process (the demo holds it and calls ``fit``, which
takes it again). Readers (recommend, explain, report) do not take it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from rich.console import Console

from recscope.errors import RunError

LOCK_NAME = ".lock"
UNREADABLE_GRACE = 2.0  # seconds an unreadable lock is given to be written before it counts as stale
_held: dict[Path, RunLock] = {}  # resolved run directory -> this process's lock on it


class RunLock:
    def __init__(self, run: str | Path, command: str, console: Console | None = None, *, create: bool = True):
        """``create``: make the run directory (and its parents) if missing; removed again if left empty."""
        self.run = Path(run)
        self.create = create
        self.path = self.run / LOCK_NAME
        self.command = command
        self.console = console or Console(stderr=True)
        self._depth = 0
        self._created: list[Path] = []  # directories we made, deepest first
        self._previous_sigterm = None
        self._owner: RunLock | None = None
        self._mine = ""  # the lock file's text while we hold it

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> RunLock:
        key = self.run.resolve()
        owner = _held.get(key)
        if owner is not None:  # this process holds it already
            owner._depth += 1
            self._owner = owner
            return self
        self._acquire()
        self._depth = 1
        _held[key] = self
        self._trap_sigterm()
        return self

    def __exit__(self, *exc) -> None:
        if self._owner is not None:
            self._owner._depth -= 1
            self._owner = None
            return
        self._depth -= 1
        if self._depth == 0:
            _held.pop(self.run.resolve(), None)
            self._release()
            self._restore_sigterm()

    # ------------------------------------------------------------------ acquire / release
    def _acquire(self) -> None:
        if self.run.exists() and not self.run.is_dir():
            raise RunError(f"{self.run} is a file, not a run directory", fix="pass another --out")
        if not self.run.exists():
            if not self.create:
                raise RunError(f"{self.run} does not exist", fix="pass the --out directory of `recscope train`")
            self._created = [p for p in (self.run, *self.run.parents) if not p.exists()]
            self.run.mkdir(parents=True)
        me = _describe(self.command)
        for _ in range(20):  # a lock being written, or taken over by someone else: look again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                text = _read(self.path)
                holder = _parse(text)
                if holder is None and _age(self.path) < UNREADABLE_GRACE:
                    time.sleep(0.1)  # created a moment ago, its owner is still writing it
                    continue
                if holder is not None and not _stale(holder):
                    raise RunError(
                        f"{self.run} is being written by another recscope process: pid {holder.get('pid')} "
                        f"on {holder.get('host')} ({holder.get('command')}, since {holder.get('started')})",
                        fix=f"wait for it to finish or stop it; if that process is gone, delete {self.path}",
                    ) from None
                if text is not None and self._take_over(text):
                    what = f"pid {holder.get('pid')} is gone" if holder else "it is unreadable"
                    self.console.print(f"note: took over the stale lock {self.path} ({what})", highlight=False)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self._mine = json.dumps(me)
            return
        raise RunError(f"could not lock {self.run}", fix="another process keeps taking it; try again")

    def _take_over(self, stale_text: str) -> bool:
        """Move the stale lock aside (rename is atomic: one process wins) and drop it."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # another process moved it first
        if _read(aside) != stale_text:  # a fresh lock was created between our read and the rename
            os.rename(aside, self.path)
            return False
        aside.unlink()
        return True

    def _release(self) -> None:
        try:
            if _read(self.path) == self._mine:  # never remove a lock someone else took over
                self.path.unlink()
        except FileNotFoundError:
            pass
        for directory in self._created:  # only while empty: a failed start leaves nothing behind
            try:
                directory.rmdir()
            except OSError:
                break

    # ------------------------------------------------------------------ SIGTERM
    def _trap_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def holds(run: str | Path) -> bool:
    """Whether this process holds the lock on ``run``."""
    return Path(run).resolve() in _held


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds the stack, so every `with RunLock` releases


def _describe(command: str) -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "argv": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "process_start": _process_start(os.getpid()),
    }


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""


def _parse(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _stale(holder: dict) -> bool:
    """True when the holder ran on this host and its process is gone (or its pid was reused)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    except (OverflowError, ValueError):
        return True
    recorded = holder.get("process_start")
    return recorded is not None and _process_start(pid) not in (None, recorded)


def _process_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in () may hold spaces
    except (OSError, ValueError, IndexError):
        return None
