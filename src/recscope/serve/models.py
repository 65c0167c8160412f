"""The store's tables (SQLAlchemy 2 typed ORM). Alembic's migrations must build exactly these.

Times are epoch seconds (UTC) as floats, like the training data's timestamps. Ids of any
length are kept as text; where a row is looked up by an id, a SHA-256 of it (``*_key``)
carries the index, so a 10 kB id never meets PostgreSQL's limit on an index entry.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

KEY_LENGTH = 64  # hex SHA-256
REQUEST_ID_MAX = 128
METHOD_MAX = 64  # an explanation method's name
FEEDBACK_ID_MAX = 128  # a client's feedback_id: kept whole in a unique index (at most 512 bytes of UTF-8)


def key(text: str) -> str:
    """The indexed stand-in for an id: hex SHA-256 of its UTF-8 (surrogates kept)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Base(DeclarativeBase):
    pass


class Event(Base):
    """An interaction posted by a client; ``id`` is the arrival order."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_key: Mapped[str] = mapped_column(String(KEY_LENGTH), unique=True)
    event_id: Mapped[str] = mapped_column(Text)
    user_key: Mapped[str] = mapped_column(String(KEY_LENGTH), index=True)
    user_id: Mapped[str] = mapped_column(Text)
    item_id: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[float] = mapped_column(Float)
    timestamp_given: Mapped[bool]  # False: the store stamped it on arrival
    value: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)


class Item(Base):
    """An item added or updated after training."""

    __tablename__ = "items"

    item_key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    item_id: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    added_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Served(Base):
    """One answered request: who asked (None: anonymous), which model version answered and, for a
    list served with explanations, by which explanation method (None: no explanations)."""

    __tablename__ = "served"

    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_MAX), primary_key=True)
    user_key: Mapped[str | None] = mapped_column(String(KEY_LENGTH), index=True)
    user_id: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    method: Mapped[str | None] = mapped_column(String(METHOD_MAX))  # explanation method; None: none shown


class ServedItem(Base):
    """One shown item of a served list (an impression), rank 0 first."""

    __tablename__ = "served_items"

    request_id: Mapped[str] = mapped_column(
        String(REQUEST_ID_MAX), ForeignKey("served.request_id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)


class Feedback(Base):
    """A user's action on an item of a served list; ``feedback_id`` (the client's, optional) is
    unique: the database itself refuses a second row with it, whichever worker writes it."""

    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_user_action", "user_key", "action"),
        Index("ix_feedback_feedback_id", "feedback_id", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(REQUEST_ID_MAX), ForeignKey("served.request_id", ondelete="CASCADE"), index=True
    )
    user_key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    user_id: Mapped[str] = mapped_column(Text)
    item_id: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)
    feedback_id: Mapped[str | None] = mapped_column(String(FEEDBACK_ID_MAX))  # NULL: the client gave none


class HiddenItem(Base):
    """An item kept out of every list: one of the run's or one added since. ``for_good``: it was
    deleted (DELETE /items of a trained item), so it can never be shown again."""

    __tablename__ = "hidden_items"

    item_key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    item_id: Mapped[str] = mapped_column(Text)
    for_good: Mapped[bool] = mapped_column(Boolean)
    hidden_at: Mapped[float] = mapped_column(Float)


class Change(Base):
    """One change every worker must follow, in commit order (``seq``): an item added, updated or
    removed (``kind`` "item", ``subject`` its id), an item hidden or shown again ("hidden", its id)
    or the model version to serve ("model", the version id)."""

    __tablename__ = "changes"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class Job(Base):
    """A background job of the service (``kind`` "finetune": ``recscope finetune`` run as a
    process, ``serve.jobs``), kept in the store so that every worker answers for it.

    ``status`` is "running", "succeeded" or "failed"; a job is finished (``finished_at``) by the
    worker that started it when its process exits, or by any worker that finds its process gone
    (``pid`` on ``host``) without a result. ``request`` holds what the client asked, ``progress``
    the last progress read at the end, ``result`` the command's JSON, ``error`` why it failed."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_kind_status", "kind", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    pid: Mapped[int | None] = mapped_column(Integer)  # None: not started yet
    host: Mapped[str] = mapped_column(Text)
    folder: Mapped[str] = mapped_column(Text)  # its progress, output and error files
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)


class Tombstone(Base):
    """A forgotten user (DELETE /users/{id}, ``recscope forget``): written in the transaction that
    deleted every stored row of theirs, and read by every history source, so the run's training
    events of the user are hidden from then on. ``deleted`` counts the rows removed per table;
    ``first_received``: when the earliest of their deleted events had arrived (None: none were
    stored), for telling which fine-tuned versions read them. A user forgotten twice has two rows."""

    __tablename__ = "tombstones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_key: Mapped[str] = mapped_column(String(KEY_LENGTH), index=True)
    user_id: Mapped[str] = mapped_column(Text)
    forgotten_at: Mapped[float] = mapped_column(Float)
    deleted: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_received: Mapped[float | None] = mapped_column(Float)
