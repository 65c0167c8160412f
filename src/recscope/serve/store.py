"""The event and feedback store: SQLite in the run directory by default, PostgreSQL by URL.

It keeps what the live service needs beyond the trained run (DESIGN.md, "Live"): events
posted by clients (idempotent by their ``event_id``), items added or updated after
training, the items kept out of every list (hidden: the run's items too), every served list
(request id, items, scores, model version) and the feedback on it (idempotent by the
client's ``feedback_id`` when it gives one), so feedback joins to what was shown. A write
that returns has been committed and synced: on SQLite the journal is a WAL with
``synchronous=FULL`` (every commit fsyncs the log), on PostgreSQL the server's defaults
(``fsync``, ``synchronous_commit``) do it.

The schema is versioned with Alembic; ``Store.open`` upgrades any database to head.
Input a client can get wrong raises ``StoreError`` naming the field or id.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Float,
    Integer,
    Text,
    and_,
    cast,
    create_engine,
    delete,
    event,
    func,
    literal,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from recscope.errors import StoreError
from recscope.serve.models import (
    FEEDBACK_ID_MAX,
    METHOD_MAX,
    REQUEST_ID_MAX,
    Change,
    Event,
    Feedback,
    HiddenItem,
    Item,
    Job,
    Served,
    ServedItem,
    Tombstone,
    key,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
STORE_FILE = "store.sqlite"
ACTIONS = ("click", "purchase", "dismiss", "explanation_helpful", "explanation_unhelpful")  # HELPFUL, UNHELPFUL
EVENT_FIELDS = ("event_id", "user_id", "item_id", "event", "timestamp", "value")
DEFAULT_EVENT = "purchase"
MAX_BATCH = 10_000
_CHUNK = 500  # ids per IN (...) list: under SQLite's bound-parameter limit
_PG_MIGRATION_LOCK = 0x72656373  # pg_advisory_xact_lock key while migrating
_PG_CHANGE_LOCK = 0x72656374  # ... while writing a change: changes commit in the order of their seq
_PG_JOB_LOCK = 0x72656375  # ... while starting a job: of two workers starting one at once, one sees the other's
# The (namespace, key) form of the advisory locks a user's writers and a forget of that user take:
# its keys never meet the one-key locks above. Users share _PG_USER_BUCKETS locks (by their key), so
# a batch of any size holds at most that many: PostgreSQL's lock table (64 per connection by
# default) ran out with a lock per user once several batches of 10,000 users were in flight.
_PG_USER_LOCKS = 0x72656376
_PG_USER_BUCKETS = 64
_SQLITE_BUSY_SECONDS = 10  # a writer waits this long for another's lock
_RETRIES = 3  # put_item: another writer added the same item between our read and our insert
HIDDEN = "hidden"  # an item's state (Store.hide): kept out of every list until shown again
DELETED = "deleted"  # ... kept out of every list for good (DELETE /items of a trained item)


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    user_id: str
    item_id: str
    event: str
    timestamp: float  # epoch seconds, UTC
    value: float | None
    received_at: float


@dataclass(frozen=True)
class StoredItem:
    item_id: str
    title: str
    attributes: dict[str, Any]
    added_at: float
    updated_at: float


@dataclass(frozen=True)
class StoredChange:
    seq: int  # commit order: a follower that has seen seq n has seen every change up to n
    # "item" (added, updated or removed; subject: the item id), "hidden" (hidden or shown again;
    # the item id), "model" (subject: the version to serve) or "forget" (a user forgotten; subject:
    # the user's key, models.key, so the change log does not repeat their id)
    kind: str
    subject: str
    created_at: float


@dataclass(frozen=True)
class StoredTombstone:
    """A forgotten user: see ``models.Tombstone``."""

    user_id: str
    forgotten_at: float
    deleted: dict[str, int]  # rows removed: events, served, served_items, feedback
    first_received: float | None  # arrival of the earliest deleted event (None: none were stored)
    seq: int | None = None  # the change that told every worker (known to the writer only)


@dataclass(frozen=True)
class StoredFeedback:
    request_id: str
    user_id: str
    item_id: str
    action: str
    feedback_id: str | None
    created_at: float


@dataclass(frozen=True)
class ServedList:
    """A served list and what came of it: ``items`` rank order, ``feedback`` oldest first."""

    request_id: str
    user_id: str | None
    model_version: str
    created_at: float
    items: list[tuple[str, float]]  # (item_id, score)
    feedback: list[tuple[str, str, str]] = field(default_factory=list)  # (user_id, item_id, action)
    method: str | None = None  # the explanation method its explanations came from; None: none shown


HELPFUL, UNHELPFUL = "explanation_helpful", "explanation_unhelpful"


@dataclass(frozen=True)
class HelpfulShare:
    """What shoppers said of the explanations one model version showed by one method
    (``method`` None: lists served without explanations, where such feedback names no method).

    ``helpful`` and ``unhelpful`` count the items of served lists marked so (an item of a list
    marked the same twice counts once); ``lists`` is how many lists that version served by that
    method, feedback or not."""

    version: str
    method: str | None
    helpful: int
    unhelpful: int
    lists: int

    @property
    def votes(self) -> int:
        return self.helpful + self.unhelpful

    @property
    def share(self) -> float | None:
        """helpful / (helpful + unhelpful); None before any vote."""
        return self.helpful / self.votes if self.votes else None


JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED = "running", "succeeded", "failed"


@dataclass(frozen=True)
class StoredJob:
    """A background job of the service (``serve.jobs``): see ``models.Job``."""

    id: str
    kind: str  # "finetune"
    status: str  # JOB_RUNNING, JOB_SUCCEEDED or JOB_FAILED
    request: dict[str, Any]
    pid: int | None  # None: its process is not started yet
    host: str  # where its process runs (a pid means something there only)
    folder: str  # its files: progress, output, errors
    started_at: float
    finished_at: float | None
    progress: dict[str, Any] | None  # the last progress, kept when it finished
    result: dict[str, Any] | None  # the command's JSON (succeeded)
    error: str | None  # why it failed


class JobRunning(StoreError):
    """A job of the kind is running already: ``running`` is it."""

    def __init__(self, running: StoredJob):
        since = datetime.fromtimestamp(running.started_at, UTC)
        super().__init__(
            f"{running.kind} job {running.id} is running (since {since:%Y-%m-%d %H:%M:%S} UTC)",
            fix=f"wait for it to finish: GET /model/jobs/{running.id}",
        )
        self.running = running


def _show(value: str, limit: int = 60) -> str:
    """An id for an error message: quoted, and cut when it is long."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"


def _text(value: Any, name: str, where: str = "", *, max_length: int | None = None) -> str:
    at = f"{where}: " if where else ""
    if not isinstance(value, str) or not value:
        got = "missing" if value is None else f"{type(value).__name__} {value!r}"[:80]
        raise StoreError(f"{at}field {name!r} must be a non-empty string (got {got})")
    if "\x00" in value:
        raise StoreError(f"{at}field {name!r} contains a NUL character, which the store cannot keep")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise StoreError(f"{at}field {name!r} is not valid Unicode (a lone surrogate at {e.start})") from None
    if max_length is not None and len(value) > max_length:
        raise StoreError(f"{at}field {name!r} is longer than {max_length} characters")
    return value


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StoreError(f"{where}: field {name!r} must be a finite number (got {value!r})"[:200])
    return float(value)


def parse_timestamp(value: Any, where: str = "") -> float:
    """Epoch seconds from epoch seconds or an ISO-8601 string (no zone: UTC)."""
    at = f"{where}: " if where else ""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise StoreError(
                f"{at}field 'timestamp' {value!r} is neither ISO-8601 nor epoch seconds"[:200],
                fix="send e.g. 2024-05-01T12:00:00Z or 1714564800",
            ) from None
    else:
        return _number(value, "timestamp", where or "event")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class _NewEvent:
    event_key: str
    event_id: str
    user_id: str
    item_id: str
    event: str
    timestamp: float
    timestamp_given: bool
    value: float | None

    def same_as(self, other: _NewEvent | Event) -> bool:
        """Same content; a timestamp the store stamped itself does not count (a retry has a new one)."""
        same = (self.user_id, self.item_id, self.event, self.value) == (
            other.user_id,
            other.item_id,
            other.event,
            other.value,
        )
        if self.timestamp_given and other.timestamp_given:
            same = same and self.timestamp == other.timestamp
        return same and self.timestamp_given == other.timestamp_given


def _parse_event(raw: Any, index: int, now: float) -> _NewEvent:
    where = f"event {index}"
    if not isinstance(raw, Mapping):
        raise StoreError(f"{where}: must be an object with {', '.join(EVENT_FIELDS)} (got {type(raw).__name__})")
    unknown = sorted(str(k) for k in raw if k not in EVENT_FIELDS)
    if unknown:
        raise StoreError(f"{where}: unknown field {unknown[0]!r}", fix=f"an event has {', '.join(EVENT_FIELDS)}")
    event_id = _text(raw.get("event_id"), "event_id", where)
    where = f"event {index} (event_id {_show(event_id)})"
    stamp = raw.get("timestamp")
    value = raw.get("value")
    return _NewEvent(
        event_key=key(event_id),
        event_id=event_id,
        user_id=_text(raw.get("user_id"), "user_id", where),
        item_id=_text(raw.get("item_id"), "item_id", where),
        event=_text(DEFAULT_EVENT if raw.get("event") is None else raw["event"], "event", where, max_length=100),
        timestamp=now if stamp is None else parse_timestamp(stamp, where),
        timestamp_given=stamp is not None,
        value=None if value is None else _number(value, "value", where),
    )


def _attributes(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise StoreError(f"{where}: field 'attributes' must be an object of field: value or [values]")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        _text(name, "attributes", where)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise StoreError(f"{where}: attribute {name!r} holds {v}, not a finite number")
            if isinstance(v, str):
                if v:
                    _text(v, f"attributes.{name}", where)
            elif v is not None and not isinstance(v, int | float | bool):
                raise StoreError(
                    f"{where}: attribute {name!r} must be a string, number, true/false or a list of them"
                    f" (got {type(v).__name__})"
                )
        out[name] = list(value) if isinstance(value, list) else value
    return out


def _hide_password(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _chunks(values: list[str], size: int = _CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _sqlite_pragmas(engine: Engine) -> None:
    """Every SQLite connection: WAL, fsync on each commit, foreign keys, wait for a lock.

    Python's sqlite3 is told not to manage transactions (``isolation_level = None``);
    the ``begin`` hook issues ``BEGIN IMMEDIATE`` for writes, so a writer takes the lock
    before reading what it will change instead of failing on upgrade, and ``BEGIN`` for reads.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_SECONDS * 1000}")
        # Switching a fresh file to WAL does not wait on the busy handler: another process
        # opening it at the same moment gets "locked" at once, so wait here instead.
        deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
        while True:
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        write = connection.get_execution_options().get("recscope_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class _SQLiteTurns:
    """SQLite's writers take turns, woken in turn: a thread lock for the writers of this process,
    then an exclusive ``flock`` on ``<database>.writers`` for the other processes' (the service's
    workers). SQLite lets one writer in at a time, and a writer that finds the file locked sleeps
    in growing steps (its busy handler) instead of being woken when the lock frees, so writers
    that met there waited far longer than the writes took: one served list (1.3 ms alone) had a
    p99 of 534 ms with 16 threads writing at once, and 650 ms with 8 threads in each of two
    processes; a kernel lock wakes the next writer at once. Reentrant in a thread."""

    def __init__(self, database: str | None):
        self._threads = threading.RLock()
        self._path = f"{database}.writers"
        self._file: Any = None
        self._depth = 0

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            if self._depth == 0:
                if self._file is None:
                    self._file = open(self._path, "a+b")  # noqa: SIM115 (held open: a lock per process)
                fcntl.flock(self._file, fcntl.LOCK_EX)
            self._depth += 1
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        with self._threads:
            if self._file is not None:
                self._file.close()
                self._file = None


class Store:
    """Events, items added after training, served lists and feedback in one database."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._writer = engine.execution_options(recscope_write=True)
        self.dialect = engine.dialect.name
        # PostgreSQL's writers run side by side; SQLite's take turns (see _SQLiteTurns).
        self._turn = _SQLiteTurns(engine.url.database) if self.dialect == "sqlite" else contextlib.nullcontext()

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str | URL) -> Store:
        """Open (creating if need be) the store at a SQLAlchemy URL and migrate it to head."""
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() not in ("sqlite", "postgresql"):
                raise ArgumentError("the store runs on SQLite or PostgreSQL only")
            kwargs: dict[str, Any] = {}
            if parsed.get_backend_name() == "postgresql":
                kwargs["pool_pre_ping"] = True
            engine = create_engine(parsed, **kwargs)
        except (ArgumentError, ImportError) as e:
            raise StoreError(
                f"store URL {_hide_password(str(url))[:200]!r} is not usable: {e}",
                fix="use sqlite:///path/to/store.sqlite or postgresql+psycopg://user@host/db",
            ) from None
        if engine.dialect.name == "sqlite":
            if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.query):
                engine.dispose()
                raise StoreError(
                    "an in-memory SQLite store would lose every write when it closes",
                    fix="give a file: sqlite:///path/to/store.sqlite (or use Store.for_run)",
                )
            _sqlite_pragmas(engine)
        store = cls(engine)
        try:
            store._migrate()
        except BaseException:
            engine.dispose()
            raise
        return store

    @classmethod
    def for_run(cls, run_dir: str | Path) -> Store:
        """The run's own store: a SQLite file ``store.sqlite`` in the run directory."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise StoreError(f"{run_dir}: no such run directory for the store", fix="train a run first")
        return cls.open(URL.create("sqlite", database=str(run_dir / STORE_FILE)))

    def _migrate(self) -> None:
        from alembic import command
        from alembic.config import Config
        from alembic.util import CommandError

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        where = self.engine.url.render_as_string(hide_password=True)
        try:
            with self._writer.connect() as connection, connection.begin():
                if self.dialect == "postgresql":  # two services opening a fresh database
                    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except CommandError as e:
            raise StoreError(
                f"store {where}: its schema is not one this recscope knows ({e})",
                fix="upgrade recscope to the version that wrote this store",
            ) from None
        except OperationalError as e:
            raise StoreError(
                f"store {where} cannot be opened: {str(e.orig).strip().splitlines()[0]}",
                fix="check the URL, that the server is running, and that the path is writable",
            ) from None

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._turn, _SQLiteTurns):
            self._turn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction; committed (and synced) when the block ends without error."""
        with self._turn, Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def _read(self) -> Session:
        return Session(self.engine)

    # -- events ----------------------------------------------------------------------------

    def add_events(self, events: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> tuple[int, int]:
        """Store events in one transaction; returns (accepted, duplicates).

        An ``event_id`` seen before (in the store or earlier in the batch) with the same
        content is a duplicate; with different content the whole batch is refused, naming it.
        """
        batch = [events] if isinstance(events, Mapping) else list(events)
        if len(batch) > MAX_BATCH:
            raise StoreError(f"a batch of {len(batch)} events is over the limit of {MAX_BATCH}", fix="split it")
        now = time.time()
        first: dict[str, _NewEvent] = {}
        duplicates = 0
        for index, raw in enumerate(batch):
            new = _parse_event(raw, index, now)
            seen = first.get(new.event_key)
            if seen is None:
                first[new.event_key] = new
                continue
            if not new.same_as(seen):
                raise StoreError(
                    f"event {index}: event_id {_show(new.event_id)} appears twice in the batch with different content",
                    fix="give each event its own event_id",
                )
            duplicates += 1
        rows = [
            {
                "event_key": e.event_key,
                "event_id": e.event_id,
                "user_key": key(e.user_id),
                "user_id": e.user_id,
                "item_id": e.item_id,
                "event": e.event,
                "timestamp": e.timestamp,
                "timestamp_given": e.timestamp_given,
                "value": e.value,
            }
            for e in first.values()
        ]
        # Insert what is new and skip what is there (a concurrent writer of the same id waits
        # for the other to finish, no retries); then the skipped ones must match what is stored.
        insert = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(Event)
        statement = insert.on_conflict_do_nothing(index_elements=[Event.event_key]).returning(
            Event.event_key, sort_by_parameter_order=True
        )
        with self._write() as session:
            self._hold_users(session, (row["user_key"] for row in rows))
            received = time.time()  # after any forget of these users committed: younger than its tombstone
            for row in rows:
                row["received_at"] = received
            inserted = set(session.scalars(statement, rows)) if rows else set()
            skipped = [k for k in first if k not in inserted]
            for keys in _chunks(skipped):
                for old in session.scalars(select(Event).where(Event.event_key.in_(keys))):
                    new = first[old.event_key]
                    if old.event_id == new.event_id and not new.same_as(old):
                        raise StoreError(
                            f"event_id {_show(new.event_id)} was stored before with different content"
                            f" (user_id {_show(old.user_id)}, item_id {_show(old.item_id)},"
                            f" event {old.event!r}, timestamp {old.timestamp}, value {old.value})",
                            fix="a re-sent event must be identical; a new event needs a new event_id",
                        )
        return len(inserted), duplicates + len(skipped)

    def history(self, user_id: str) -> list[StoredEvent]:
        """A user's stored events, oldest first; equal timestamps in order of arrival."""
        user_id = _text(user_id, "user_id")
        with self._read() as session:
            rows = session.scalars(
                select(Event)
                .where(Event.user_key == key(user_id), Event.user_id == user_id)
                .order_by(Event.timestamp, Event.id)
            )
            return [
                StoredEvent(r.event_id, r.user_id, r.item_id, r.event, r.timestamp, r.value, r.received_at)
                for r in rows
            ]

    def live_history(self, user_id: str) -> tuple[list[StoredEvent], float | None]:
        """What a user's live history reads from the store, in one query (it runs on every
        request): their stored events and their dismissals merged oldest first (a dismissal is a
        StoredEvent of kind "dismiss" at the time it was given, ``event_id`` the list's request
        id; equal times: events first, each kind in order of arrival), and when they were last
        forgotten (None: never)."""
        user_id = _text(user_id, "user_id")
        user_key = key(user_id)
        part = literal(0, Integer).label("part")
        events = select(
            part, Event.event_id, Event.item_id, Event.event, Event.timestamp, Event.value, Event.received_at, Event.id
        ).where(Event.user_key == user_key, Event.user_id == user_id)
        dismissals = select(
            literal(1, Integer),
            Feedback.request_id,
            Feedback.item_id,
            literal("dismiss", Text),
            Feedback.created_at,
            cast(null(), Float),
            Feedback.created_at,
            Feedback.id,
        ).where(Feedback.user_key == user_key, Feedback.user_id == user_id, Feedback.action == "dismiss")
        forgotten = select(
            literal(2, Integer),
            cast(null(), Text),
            cast(null(), Text),
            cast(null(), Text),
            func.max(Tombstone.forgotten_at),
            cast(null(), Float),
            cast(null(), Float),
            literal(0, Integer),
        ).where(Tombstone.user_key == user_key, Tombstone.user_id == user_id)
        rows = union_all(events, dismissals, forgotten).subquery()
        with self._read() as session:
            found = session.execute(select(rows).order_by(rows.c.part == 2, rows.c.timestamp, rows.c.part, rows.c.id))
            out, when = [], None
            for kind, event_id, item_id, what, stamp, value, received, _ in found:
                if kind == 2:
                    when = stamp
                else:
                    out.append(StoredEvent(event_id, user_id, item_id, what, stamp, value, received))
            return out, when

    def events_by_user(self) -> dict[str, list[StoredEvent]]:
        """Every stored event: user id -> their events oldest first (as :meth:`history` orders
        them), users in the order of their first stored event (for ``recscope retrain``)."""
        out: dict[str, list[StoredEvent]] = {}
        with self._read() as session:
            rows = session.scalars(select(Event).order_by(Event.id))
            for r in rows:
                out.setdefault(r.user_id, []).append(
                    StoredEvent(r.event_id, r.user_id, r.item_id, r.event, r.timestamp, r.value, r.received_at)
                )
        for events in out.values():
            events.sort(key=lambda e: e.timestamp)  # stable: equal timestamps stay in order of arrival
        return out

    def users(self) -> list[tuple[str, int]]:
        """Every user with stored events, with how many, in the order of their first stored event."""
        first = func.min(Event.id)
        with self._read() as session:
            rows = session.execute(
                select(Event.user_id, func.count(), first).group_by(Event.user_key, Event.user_id).order_by(first)
            )
            return [(user_id, int(n)) for user_id, n, _ in rows]

    def event_counts(self, user_ids: Iterable[str]) -> dict[str, int]:
        """How many events the store holds for each of ``user_ids`` (a user without any is left out)."""
        wanted = set(user_ids)
        counts: dict[str, int] = {}
        with self._read() as session:
            for chunk in _chunks(sorted({key(u) for u in wanted})):
                rows = session.execute(
                    select(Event.user_id, func.count())
                    .where(Event.user_key.in_(chunk))
                    .group_by(Event.user_key, Event.user_id)
                )
                counts.update((u, int(n)) for u, n in rows if u in wanted)
        return counts

    def forget(self, user_id: str) -> dict[str, int]:
        """Delete a user's events, served lists (with their items) and feedback, and write their
        tombstone; returns the counts of events, served lists and feedback (:meth:`forget_user`
        has the tombstone, served items counted too)."""
        deleted = self.forget_user(user_id).deleted
        return {k: deleted[k] for k in ("events", "served", "feedback")}

    def forget_user(self, user_id: str) -> StoredTombstone:
        """Forget a user: delete every stored row of theirs (events, served lists with their shown
        items, feedback they gave or that was given on their lists) and write their tombstone and a
        "forget" change, all in one transaction: committed (and synced) when this returns, so an
        acknowledged forget survives a crash, and no reader ever sees the rows gone without the
        tombstone. Readers check the tombstone per request (:meth:`forgotten_at`), so every worker
        over this store, on any host, honours it from the commit on. Jobs and items hold nothing
        of a user. A user may be forgotten again (after posting new events): another tombstone."""
        user_id = _text(user_id, "user_id")
        user_key = key(user_id)
        mine = and_(Event.user_key == user_key, Event.user_id == user_id)
        with self._write() as session:
            self._hold_users(session, [user_key], forget=True)  # the user's writes in flight commit first
            first = session.scalar(select(func.min(Event.received_at)).where(mine))
            theirs = select(Served.request_id).where(Served.user_key == user_key, Served.user_id == user_id)
            events = session.execute(delete(Event).where(mine))
            feedback = session.execute(
                delete(Feedback).where(
                    or_(
                        and_(Feedback.user_key == user_key, Feedback.user_id == user_id),
                        Feedback.request_id.in_(theirs),
                    )
                )
            )
            shown = session.execute(delete(ServedItem).where(ServedItem.request_id.in_(theirs)))
            served = session.execute(delete(Served).where(Served.user_key == user_key, Served.user_id == user_id))
            deleted = {
                "events": events.rowcount,
                "served": served.rowcount,
                "served_items": shown.rowcount,
                "feedback": feedback.rowcount,
            }
            now = time.time()
            self._change(session, "forget", user_key)
            session.add(
                Tombstone(user_key=user_key, user_id=user_id, forgotten_at=now, deleted=deleted, first_received=first)
            )
            session.flush()
            seq = int(session.scalar(select(Change.seq).order_by(Change.seq.desc()).limit(1)))
            return StoredTombstone(user_id, now, deleted, first, seq)

    def forgotten_at(self, user_id: str) -> float | None:
        """When the user was last forgotten (epoch seconds), or None: never."""
        user_id = _text(user_id, "user_id")
        with self._read() as session:
            return session.scalar(
                select(func.max(Tombstone.forgotten_at)).where(
                    Tombstone.user_key == key(user_id), Tombstone.user_id == user_id
                )
            )

    def tombstones(self) -> list[StoredTombstone]:
        """Every tombstone, oldest first."""
        with self._read() as session:
            rows = session.scalars(select(Tombstone).order_by(Tombstone.id))
            return [StoredTombstone(r.user_id, r.forgotten_at, dict(r.deleted), r.first_received) for r in rows]

    def forgotten(self) -> dict[str, float]:
        """Every forgotten user id -> when they were last forgotten: O(tombstones)."""
        with self._read() as session:
            rows = session.execute(
                select(Tombstone.user_id, func.max(Tombstone.forgotten_at)).group_by(
                    Tombstone.user_key, Tombstone.user_id
                )
            )
            return {u: float(t) for u, t in rows}

    # -- items added after training ---------------------------------------------------------

    def put_item(
        self, item_id: str, title: str, attributes: Mapping[str, Any] | None = None, *, hidden: bool | None = None
    ) -> bool:
        """Add or replace an item's title and attributes; True when it is new to the store.
        ``hidden`` (None: as it was) hides it or shows it again in the same transaction, so the
        item is never seen in a list between the two (see :meth:`hide`)."""
        item_id = _text(item_id, "item_id")
        where = f"item {_show(item_id)}"
        title = _text(title, "title", where)
        attrs = _attributes(attributes, where)
        item_key = key(item_id)
        for attempt in range(_RETRIES):
            now = time.time()
            try:
                with self._write() as session:
                    row = session.get(Item, item_key)
                    if row is None:
                        session.add(
                            Item(
                                item_key=item_key,
                                item_id=item_id,
                                title=title,
                                attributes=attrs,
                                added_at=now,
                                updated_at=now,
                            )
                        )
                    else:
                        row.title, row.attributes, row.updated_at = title, attrs, now
                    self._change(session, "item", item_id)
                    if hidden is not None:
                        self._hide(session, item_id, hidden, for_good=False)
                    return row is None
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def get_item(self, item_id: str) -> StoredItem | None:
        item_id = _text(item_id, "item_id")
        with self._read() as session:
            row = session.get(Item, key(item_id))
            return None if row is None else _item(row)

    def items(self, item_ids: Iterable[str]) -> list[StoredItem]:
        """The stored items among ``item_ids`` (ids the store does not hold are left out)."""
        keys = sorted({key(i) for i in item_ids})
        with self._read() as session:
            found = [
                _item(r)
                for chunk in _chunks(keys)
                for r in session.scalars(select(Item).where(Item.item_key.in_(chunk)))
            ]
        return sorted(found, key=lambda i: (i.added_at, key(i.item_id)))

    def items_added(self) -> list[StoredItem]:
        """Every item added or updated after training, in the order they were first added."""
        with self._read() as session:
            return [_item(r) for r in session.scalars(select(Item).order_by(Item.added_at, Item.item_key))]

    def remove_item(self, item_id: str) -> bool:
        """Remove an added item from the store (and its hidden flag): every worker drops it from
        its catalog (a change they follow); its events stay, naming an item no longer known.
        True when the store held it (nothing changes otherwise)."""
        item_id = _text(item_id, "item_id")
        item_key = key(item_id)
        with self._write() as session:
            removed = session.execute(delete(Item).where(Item.item_key == item_key)).rowcount
            if removed:
                session.execute(delete(HiddenItem).where(HiddenItem.item_key == item_key))
                self._change(session, "item", item_id)
            return bool(removed)

    # -- hidden items (the run's too) ------------------------------------------------------

    def hide(self, item_id: str, hidden: bool = True, *, for_good: bool = False) -> str | None:
        """Keep an item out of every list, in every worker (a change they follow), or let it back
        in (``hidden`` False). ``for_good``: it can never be shown again (a deleted trained item).

        Returns the item's state after: ``HIDDEN``, ``DELETED`` (hidden for good) or None (shown).
        Showing an item hidden for good changes nothing and returns ``DELETED``: the caller names
        the refusal. The store does not know the trained catalog: the caller checks the item."""
        item_id = _text(item_id, "item_id")
        with self._write() as session:
            return self._hide(session, item_id, hidden, for_good=for_good)

    def _hide(self, session: Session, item_id: str, hidden: bool, *, for_good: bool) -> str | None:
        """:meth:`hide` in the writer's transaction; a change is recorded only when the state changes.
        Read after taking the writers' turn: two workers hiding one item at once neither insert it
        twice nor record two changes."""
        self._serialise_changes(session)
        row = session.get(HiddenItem, key(item_id))
        if row is not None and row.for_good:
            return DELETED
        if not hidden:
            if row is not None:
                session.delete(row)
                self._change(session, "hidden", item_id)
            return None
        if row is None:
            session.add(HiddenItem(item_key=key(item_id), item_id=item_id, for_good=for_good, hidden_at=time.time()))
        elif for_good:
            row.for_good, row.hidden_at = True, time.time()
        else:
            return HIDDEN
        self._change(session, "hidden", item_id)
        return DELETED if for_good else HIDDEN

    def hidden(self, item_ids: Iterable[str] | None = None) -> dict[str, str]:
        """The hidden items (among ``item_ids``; None: all of them): item id -> ``HIDDEN`` or ``DELETED``."""
        with self._read() as session:
            if item_ids is None:
                rows = list(session.scalars(select(HiddenItem)))
            else:
                keys = sorted({key(i) for i in item_ids})
                rows = [
                    r
                    for chunk in _chunks(keys)
                    for r in session.scalars(select(HiddenItem).where(HiddenItem.item_key.in_(chunk)))
                ]
        return {r.item_id: DELETED if r.for_good else HIDDEN for r in rows}

    # -- the change sequence workers follow -------------------------------------------------

    def _change(self, session: Session, kind: str, subject: str) -> None:
        """Record a change in the writer's transaction (it commits with the write it describes)."""
        self._serialise_changes(session)  # seq values are drawn before commit
        session.add(Change(kind=kind, subject=subject, created_at=time.time()))

    def _serialise_changes(self, session: Session) -> None:
        """Writers of changes take turns until their commit: on PostgreSQL an advisory lock held to
        the transaction's end (taken again in the same transaction, it is already held); SQLite's
        writers take turns anyway (``BEGIN IMMEDIATE``)."""
        if self.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CHANGE_LOCK})

    def _hold_users(self, session: Session, user_keys: Iterable[str], *, forget: bool = False) -> None:
        """Writers of users' rows and a forget of one of them take turns until their commit: on
        PostgreSQL a writer takes a shared advisory lock on each of its users' buckets (of
        :data:`_PG_USER_BUCKETS`; writers run side by side) and the forget an exclusive one on
        its user's, so it waits for every write of that user in flight (and of the others in its
        bucket: milliseconds) and is waited for by every later one.
        Without it a row committed while the forget ran outlived it, older than the tombstone, or
        a feedback on a list the forget deleted failed on its foreign key. SQLite's writers take
        turns anyway (``BEGIN IMMEDIATE``, issued here: the session begins lazily). Callers stamp
        their rows after this, so a row written after a forget is younger than its tombstone."""
        if self.dialect != "postgresql":
            session.connection()  # BEGIN IMMEDIATE: this writer's turn starts now, not at its first statement
            return
        keys = sorted({int(k[:8], 16) % _PG_USER_BUCKETS for k in user_keys})
        if not keys:
            return
        if forget:
            (only,) = keys
            session.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"), {"ns": _PG_USER_LOCKS, "k": only})
            return
        session.execute(
            text("SELECT count(pg_advisory_xact_lock_shared(:ns, k)) FROM unnest(CAST(:keys AS integer[])) AS k"),
            {"ns": _PG_USER_LOCKS, "keys": keys},
        )

    def set_serving(self, version: str) -> int:
        """Make ``version`` the model every worker serves; returns the change's seq."""
        version = _text(version, "version")
        with self._write() as session:
            self._change(session, "model", version)
            session.flush()
            return int(session.scalar(select(Change.seq).order_by(Change.seq.desc()).limit(1)))

    def serving(self) -> str | None:
        """The model version the workers serve (the last one set), or None if none was ever set."""
        with self._read() as session:
            return session.scalar(
                select(Change.subject).where(Change.kind == "model").order_by(Change.seq.desc()).limit(1)
            )

    def last_change(self) -> int:
        """The seq of the newest change (0: none yet)."""
        with self._read() as session:
            return int(session.scalar(select(Change.seq).order_by(Change.seq.desc()).limit(1)) or 0)

    def changes_since(self, seq: int, limit: int = 10_000) -> list[StoredChange]:
        """The changes after ``seq``, oldest first (at most ``limit``: call again from the last one)."""
        with self._read() as session:
            rows = session.scalars(select(Change).where(Change.seq > seq).order_by(Change.seq).limit(limit))
            return [StoredChange(r.seq, r.kind, r.subject, r.created_at) for r in rows]

    def ping(self) -> bool:
        """True when the database answers a query."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except OperationalError:
            return False

    # -- served lists and feedback ----------------------------------------------------------

    def log_served(
        self,
        request_id: str,
        user_id: str | None,
        model_version: str,
        items: Sequence[tuple[str, float]],
        method: str | None = None,
    ) -> None:
        """Record a served list: ``items`` as (item_id, score) in rank order; user None if
        anonymous; ``method``: the explanation method of the explanations shown with it (None:
        none were), for :meth:`helpful_shares`."""
        request_id = _text(request_id, "request_id", max_length=REQUEST_ID_MAX)
        where = f"request {_show(request_id)}"
        if user_id is not None:
            user_id = _text(user_id, "user_id", where)
        model_version = _text(model_version, "model_version", where)
        if method is not None:
            method = _text(method, "method", where, max_length=METHOD_MAX)
        shown = []
        for rank, pair in enumerate(items):
            try:
                item_id, score = pair
            except (TypeError, ValueError):
                raise StoreError(f"{where}: items[{rank}] must be (item_id, score)") from None
            shown.append(
                (_text(item_id, f"items[{rank}].item_id", where), _number(score, f"items[{rank}].score", where))
            )
        try:
            with self._write() as session:
                if user_id is not None:
                    self._hold_users(session, [key(user_id)])
                session.add(
                    Served(
                        request_id=request_id,
                        user_key=None if user_id is None else key(user_id),
                        user_id=user_id,
                        model_version=model_version,
                        created_at=time.time(),
                        method=method,
                    )
                )
                session.flush()
                session.add_all(
                    ServedItem(request_id=request_id, rank=rank, item_id=item_id, score=score)
                    for rank, (item_id, score) in enumerate(shown)
                )
        except IntegrityError:
            raise StoreError(f"{where}: request_id is already logged", fix="give each request its own id") from None

    def served(self, request_id: str) -> ServedList | None:
        """A served list with its items and the feedback on it (the impressions join)."""
        request_id = _text(request_id, "request_id")
        with self._read() as session:
            row = session.get(Served, request_id) if len(request_id) <= REQUEST_ID_MAX else None
            if row is None:
                return None
            items = session.execute(
                select(ServedItem.item_id, ServedItem.score)
                .where(ServedItem.request_id == request_id)
                .order_by(ServedItem.rank)
            )
            feedback = session.execute(
                select(Feedback.user_id, Feedback.item_id, Feedback.action)
                .where(Feedback.request_id == request_id)
                .order_by(Feedback.id)
            )
            return ServedList(
                request_id=row.request_id,
                user_id=row.user_id,
                model_version=row.model_version,
                created_at=row.created_at,
                items=[(i, s) for i, s in items],
                feedback=[(u, i, a) for u, i, a in feedback],
                method=row.method,
            )

    def helpful_shares(self, version: str | None = None) -> list[HelpfulShare]:
        """The "explanation helpful" share per model version and explanation method (of
        ``version`` only, when given), from the feedback joined to the lists it was given on;
        every (version, method) that served a list is there, votes or not. Sorted by version,
        then method (None, no explanations, first)."""
        votes = (
            select(Served.model_version, Served.method, Feedback.request_id, Feedback.item_id, Feedback.action)
            .join(Served, Served.request_id == Feedback.request_id)
            .where(Feedback.action.in_((HELPFUL, UNHELPFUL)))
            .distinct()  # an item of a list marked the same twice counts once
            .subquery()
        )
        counted = select(votes.c.model_version, votes.c.method, votes.c.action, func.count()).group_by(
            votes.c.model_version, votes.c.method, votes.c.action
        )
        lists = select(Served.model_version, Served.method, func.count()).group_by(Served.model_version, Served.method)
        if version is not None:
            counted = counted.where(votes.c.model_version == version)
            lists = lists.where(Served.model_version == version)
        with self._read() as session:
            served = {(v, m): int(n) for v, m, n in session.execute(lists)}
            tally: dict[tuple[str, str | None], dict[str, int]] = {}
            for v, m, action, n in session.execute(counted):
                tally.setdefault((v, m), {})[action] = int(n)
        keys = sorted(served.keys() | tally.keys(), key=lambda vm: (vm[0], vm[1] is not None, vm[1] or ""))
        return [
            HelpfulShare(
                v,
                m,
                tally.get((v, m), {}).get(HELPFUL, 0),
                tally.get((v, m), {}).get(UNHELPFUL, 0),
                served.get((v, m), 0),
            )
            for v, m in keys
        ]

    def add_feedback(
        self, request_id: str, user_id: str, item_id: str, action: str, feedback_id: str | None = None
    ) -> StoredFeedback | None:
        """Record a user's action on an item of a served list; the list must exist and show the item.

        ``feedback_id`` (the client's; optional) makes the write idempotent: when feedback with that
        id is stored already, nothing is written and that earlier feedback is returned, for the
        caller to tell a re-sent copy (same content) from a different one reusing the id. The
        database enforces it (a unique index): of two writers racing with one id, the second
        inserts nothing and reads the first's row. None: this feedback was stored now."""
        request_id = _text(request_id, "request_id")
        where = f"feedback on request {_show(request_id)}"
        user_id = _text(user_id, "user_id", where)
        item_id = _text(item_id, "item_id", where)
        if feedback_id is not None:
            feedback_id = _text(feedback_id, "feedback_id", where, max_length=FEEDBACK_ID_MAX)
        if action not in ACTIONS:
            raise StoreError(f"{where}: field 'action' is {str(action)[:60]!r}", fix=f"use one of {', '.join(ACTIONS)}")
        with self._write() as session:
            self._hold_users(session, [key(user_id)])  # a forget of the user deletes the list: not in between
            if feedback_id is not None:
                earlier = self._feedback_with_id(session, feedback_id)
                if earlier is not None:
                    return earlier
            served = session.get(Served, request_id) if len(request_id) <= REQUEST_ID_MAX else None
            if served is None:
                raise StoreError(
                    f"{where}: field 'request_id' names no served list",
                    fix="send the request_id of the recommendations the feedback is about",
                )
            if served.user_id is not None and served.user_id != user_id:
                raise StoreError(
                    f"{where}: field 'user_id' {_show(user_id)} is not the user it was served to",
                )
            shown = session.scalar(
                select(ServedItem.rank).where(ServedItem.request_id == request_id, ServedItem.item_id == item_id)
            )
            if shown is None:
                raise StoreError(f"{where}: field 'item_id' {_show(item_id)} was not in that list")
            row = {
                "request_id": request_id,
                "user_key": key(user_id),
                "user_id": user_id,
                "item_id": item_id,
                "action": action,
                "created_at": time.time(),
                "feedback_id": feedback_id,
            }
            if feedback_id is None:
                session.add(Feedback(**row))
                return None
            insert = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(Feedback).values(**row)
            stored = session.scalar(
                insert.on_conflict_do_nothing(index_elements=[Feedback.feedback_id]).returning(Feedback.id)
            )
            if stored is None:  # another writer stored this id since our read (it waited for its commit)
                earlier = self._feedback_with_id(session, feedback_id)
                assert earlier is not None, "a conflict on feedback_id leaves the other writer's row"
                return earlier
            return None

    def feedback(self, feedback_id: str) -> StoredFeedback | None:
        """The feedback stored with the client's ``feedback_id``, if any."""
        feedback_id = _text(feedback_id, "feedback_id")
        if len(feedback_id) > FEEDBACK_ID_MAX:
            return None
        with self._read() as session:
            return self._feedback_with_id(session, feedback_id)

    @staticmethod
    def _feedback_with_id(session: Session, feedback_id: str) -> StoredFeedback | None:
        row = session.scalar(select(Feedback).where(Feedback.feedback_id == feedback_id))
        if row is None:
            return None
        return StoredFeedback(row.request_id, row.user_id, row.item_id, row.action, row.feedback_id, row.created_at)

    # -- background jobs (serve.jobs) --------------------------------------------------------

    def start_job(self, job_id: str, kind: str, request: Mapping[str, Any], host: str, folder: str) -> StoredJob:
        """Record a new running job of ``kind``; ``JobRunning`` when one of that kind is running
        already. Writers take turns (``BEGIN IMMEDIATE``; an advisory lock on PostgreSQL), so of two
        workers starting a job at the same moment, the second sees the first's."""
        with self._write() as session:
            if self.dialect == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_JOB_LOCK})
            running = session.scalar(select(Job).where(Job.kind == kind, Job.status == JOB_RUNNING).limit(1))
            if running is not None:
                raise JobRunning(_job(running))
            row = Job(
                id=job_id,
                kind=kind,
                status=JOB_RUNNING,
                request=dict(request),
                pid=None,
                host=host,
                folder=folder,
                started_at=time.time(),
                finished_at=None,
                progress=None,
                result=None,
                error=None,
            )
            session.add(row)
            session.flush()
            return _job(row)

    def job_started(self, job_id: str, pid: int) -> None:
        """The job's process is running as ``pid`` (on the job's host)."""
        with self._write() as session:
            session.execute(update(Job).where(Job.id == job_id).values(pid=pid))

    def finish_job(
        self,
        job_id: str,
        status: str,
        *,
        progress: Mapping[str, Any] | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """End a running job (``status`` succeeded or failed); False when it had ended already:
        the first of two workers finishing it at once wins, the other changes nothing."""
        if status not in (JOB_SUCCEEDED, JOB_FAILED):
            raise StoreError(f"field 'status' is {status!r}", fix=f"use {JOB_SUCCEEDED!r} or {JOB_FAILED!r}")
        values = {
            "status": status,
            "finished_at": time.time(),
            "progress": None if progress is None else dict(progress),
            "result": None if result is None else dict(result),
            "error": error,
        }
        with self._write() as session:
            done = session.execute(update(Job).where(Job.id == job_id, Job.status == JOB_RUNNING).values(**values))
            return bool(done.rowcount)

    def job(self, job_id: str) -> StoredJob | None:
        with self._read() as session:
            row = session.get(Job, job_id) if 0 < len(job_id) <= 32 else None
            return None if row is None else _job(row)

    def jobs(self, kind: str | None = None, status: str | None = None, limit: int = 100) -> list[StoredJob]:
        """The jobs (of ``kind``, with ``status``), newest first."""
        query = select(Job).order_by(Job.started_at.desc()).limit(limit)
        if kind is not None:
            query = query.where(Job.kind == kind)
        if status is not None:
            query = query.where(Job.status == status)
        with self._read() as session:
            return [_job(r) for r in session.scalars(query)]

    def dismissed(self, user_id: str) -> set[str]:
        """Items this user dismissed: never to be recommended to them again."""
        user_id = _text(user_id, "user_id")
        with self._read() as session:
            return set(
                session.scalars(
                    select(Feedback.item_id).where(
                        Feedback.user_key == key(user_id), Feedback.user_id == user_id, Feedback.action == "dismiss"
                    )
                )
            )


def _job(row: Job) -> StoredJob:
    return StoredJob(
        row.id,
        row.kind,
        row.status,
        dict(row.request),
        row.pid,
        row.host,
        row.folder,
        row.started_at,
        row.finished_at,
        None if row.progress is None else dict(row.progress),
        None if row.result is None else dict(row.result),
        row.error,
    )


def _item(row: Item) -> StoredItem:
    return StoredItem(row.item_id, row.title, dict(row.attributes), row.added_at, row.updated_at)
