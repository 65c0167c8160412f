"""Request and response bodies of the service: every request model refuses unknown fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recscope.serve.store import DEFAULT_EVENT, MAX_BATCH


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(Strict):
    event_id: str = Field(min_length=1, description="the client's id: re-sending it is a no-op")
    user_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    event: str = Field(DEFAULT_EVENT, min_length=1, max_length=100)
    timestamp: float | str | None = Field(None, description="epoch seconds or ISO-8601 (no zone: UTC); default: now")
    value: float | None = None


class EventsIn(Strict):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventsOut(Strict):
    accepted: int
    duplicates: int


class HistoryItem(Strict):
    item_id: str
    event: str  # "interaction" for the run's training data, else the stored event's kind
    timestamp: float  # epoch seconds (the training data's own clock for source "run")
    source: str  # "run" (trained on) or "store" (posted since)


class HistoryOut(Strict):
    user_id: str
    items: list[HistoryItem]


class ForgetOut(Strict):
    user_id: str
    deleted: dict[str, int]  # events, served lists and feedback rows removed


class RecommendIn(Strict):
    history: list[str] = Field(min_length=1, description="item ids, oldest first")
    k: int = Field(10, ge=1, le=1000)
    explain: bool = False
    method: str | None = None


class RecommendedItem(Strict):
    rank: int
    item_id: str
    title: str
    score: float
    sentence: str | None = None
    explanation: dict[str, Any] | None = None


class RecommendationsOut(Strict):
    request_id: str
    model_version: str
    items: list[RecommendedItem]
    unknown_items: list[str] = Field(default_factory=list, description="history ids the run does not know: skipped")


class Liveness(Strict):
    status: str


class Readiness(Strict):
    status: str
    model: bool
    store: bool
    model_version: str | None = None


class ErrorOut(Strict):
    error: str
    fix: str | None = None


Action = Literal["click", "purchase", "dismiss", "explanation_helpful", "explanation_unhelpful"]


class FeedbackIn(Strict):
    request_id: str = Field(min_length=1, description="the request_id of the served list")
    user_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1, description="an item of that list")
    action: Action


class FeedbackOut(Strict):
    request_id: str
    user_id: str
    item_id: str
    action: str


class WhatIfIn(Strict):
    user_id: str = Field(min_length=1)
    remove: list[str] = Field(default_factory=list, description="item ids the live history holds")
    add: list[str] = Field(default_factory=list, description="item ids of the run, appended to the history")
    k: int = Field(10, ge=1, le=1000)


class WhatIfOut(Strict):
    before: list[dict[str, Any]]  # Recommendation.to_dict() rows, rank order
    after: list[dict[str, Any]]
    entered: list[str]
    left: list[str]
    unknown: list[str]  # stored history ids the run does not know: skipped


Scalar = str | bool | int | float | None


class ItemIn(Strict):
    title: str = Field(min_length=1)
    attributes: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict, description="field: value or [values]")


class ItemOut(Strict):
    item_id: str
    title: str
    attributes: dict[str, Any]
    source: Literal["run", "store"]  # the trained catalog, or added to the store since
    recommendable: bool  # the model can recommend it (items added after training: not yet)
