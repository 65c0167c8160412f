"""Errors a user can act on: what was wrong, where, and how to fix it.

The CLI prints these as one line (``error: <what, where>; how to fix: <fix>``) and exits
with status 2, without a traceback. Anything else reaching the CLI is either an OSError
(one line naming the file, status 2) or a bug in recscope: one line naming it and the
file holding its traceback, status 1 (``recscope.cli.main``).
"""

from __future__ import annotations


class RecscopeError(Exception):
    """Base of every error caused by input the user gave us."""

    def __init__(self, problem: str, *, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return self.problem if not self.fix else f"{self.problem}; how to fix: {self.fix}"


class ConfigError(RecscopeError):
    """A config file or ``--set`` override is wrong."""


class DataError(RecscopeError):
    """An input file is missing or malformed. Names the file, row and column."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        fix: str | None = None,
        row_label: str = "line",  # "row" for files without lines (parquet)
    ):
        self.file, self.row, self.column = file, row, column
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"{row_label} {row}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {problem}" if prefix else problem, fix=fix)


class RunError(RecscopeError):
    """A run directory is missing, incomplete, or asked about something it does not know."""


class StoreError(RecscopeError):
    """The event and feedback store refused a request: names the field, id or record."""
