"""Request and response bodies of the service: every request model refuses unknown fields.

The error bodies are here too, with ``errors(...)``: the ``responses=`` a route declares for the
refusals it can answer, so the OpenAPI document lists each status code with its body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from recscope.serve.store import DEFAULT_EVENT, MAX_BATCH


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Request(Strict):
    """A request body takes JSON's types as the document names them: pydantic's lax mode would
    read "3" or true as 3, 0 as false, and false as a 0.0 timestamp (1970)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# What the store can keep of an id: non-empty, no NUL (SQLite and PostgreSQL text stop at it).
Id = Annotated[str, Field(min_length=1, pattern=r"^[^\x00]+$")]
Number = Annotated[float, Field(allow_inf_nan=False)]  # not NaN or Infinity: Python's JSON parser takes them


class EventIn(Request):
    event_id: Id = Field(description="the client's id: re-sending it is a no-op")
    user_id: Id
    item_id: Id
    event: Id = Field(DEFAULT_EVENT, max_length=100)
    timestamp: Number | str | None = Field(None, description="epoch seconds or ISO-8601 (no zone: UTC); default: now")
    value: Number | None = None


class EventsIn(Request):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventsOut(Strict):
    accepted: int = Field(ge=0)  # new events stored
    duplicates: int = Field(ge=0)  # re-sent events (same id, same content): already stored, not stored again


class HistoryItem(Strict):
    item_id: str
    event: str  # the event's kind (the data's event type, the stored event's); "interaction" when not known
    timestamp: float  # epoch seconds (the training data's own clock for source "run")
    source: Literal["run", "store", "request"]  # trained on, posted since, or given in the request
    value: float | None = None  # the event's value (a rating, ...), when it has one


class HistoryOut(Strict):
    user_id: str
    items: list[HistoryItem]


class Deleted(Strict):
    events: int = Field(ge=0)
    served: int = Field(ge=0)  # served lists (with their items)
    feedback: int = Field(ge=0)


class ForgetOut(Strict):
    user_id: str
    deleted: Deleted  # rows removed


class RecommendIn(Request):
    history: list[Id] = Field(min_length=1, description="item ids, oldest first")
    k: int = Field(10, ge=1, le=1000)
    explain: bool = False
    method: str | None = None
    counterfactual: bool = Field(False, description="with explain: also each item's counterfactual")
    exclude: list[Id] = Field(default_factory=list, description="item ids never to recommend in this answer")
    exclude_attributes: list[str] = Field(
        default_factory=list, description='filters "field=value": items with that value are not recommended'
    )


class RecommendedItem(Strict):
    rank: int = Field(ge=1)
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
    status: Literal["ok"]


class Readiness(Strict):
    status: Literal["ready", "loading", "store_unreachable", "catching_up"]
    model: bool = Field(description="the model version is loaded")
    store: bool = Field(description="the store answered a query just now")
    model_version: str | None = None
    worker: int = Field(description="the process id of the worker that answered")
    catalog_seq: int | None = Field(
        None, description="the last store change (item, version switch) this worker applied"
    )
    store_seq: int | None = Field(None, description="the store's newest change")
    lag_seconds: float | None = Field(
        None, description="how long the oldest change this worker has not applied has waited (0: caught up)"
    )
    error: str | None = Field(None, description="why the worker could not apply the store's changes, if it could not")


Action = Literal["click", "purchase", "dismiss", "explanation_helpful", "explanation_unhelpful"]


class FeedbackIn(Request):
    request_id: Id = Field(description="the request_id of the served list")
    user_id: Id
    item_id: Id = Field(description="an item of that list")
    action: Action


class FeedbackOut(Strict):
    request_id: str
    user_id: str
    item_id: str
    action: Action


class WhatIfIn(Request):
    user_id: Id
    remove: list[Id] = Field(default_factory=list, description="item ids the live history holds")
    add: list[Id] = Field(default_factory=list, description="item ids of the run, appended to the history")
    k: int = Field(10, ge=1, le=1000)


class WhatIfOut(Strict):
    before: list[dict[str, Any]]  # Recommendation.to_dict() rows, rank order
    after: list[dict[str, Any]]
    entered: list[str]
    left: list[str]
    unknown: list[str]  # stored history ids the run does not know: skipped


Scalar = str | bool | int | float | None


class ModelIn(Request):
    version: str | None = Field(None, description="a version of the run; default: the run's current one")


class ModelOut(Strict):
    version: str  # served now
    current: str | None  # the run's current version (None: the run predates versions)
    versions: list[dict[str, Any]]  # every version of the run, oldest first (recscope.versions.Version)


class ItemIn(Request):
    title: str = Field(min_length=1)
    attributes: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict, description="field: value or [values]")


class ItemOut(Strict):
    item_id: str
    title: str
    attributes: dict[str, Any]
    source: Literal["run", "store"]  # the trained catalog, or added to the store since
    recommendable: bool  # the model scores it (an added item: from its attribute fields)
    unused: list[str] = Field(
        default_factory=list,
        description='"field=value" pairs the model has no embedding for (a value or field no trained item has)',
    )


# -- error bodies ---------------------------------------------------------------------------


class ErrorOut(Strict):
    """recscope's own refusal (a ``RecscopeError``): what was wrong, and how to fix it."""

    error: str
    fix: str | None = None


class DetailOut(Strict):
    """The web framework's refusal: a body that is not UTF-8, or a chunked body over the limit."""

    detail: str


class FieldError(Strict):
    """One of pydantic's complaints about the request, as FastAPI sends it."""

    type: str
    loc: list[str | int]  # where: ["body", "events", 0, "user_id"], ["query", "k"], ...
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorOut(Strict):
    """A request the schema refuses: each field that is wrong, and why."""

    detail: list[FieldError]


ERRORS: dict[int, tuple[tuple[type[BaseModel], ...], str]] = {
    400: ((DetailOut,), "the body is not UTF-8 text"),
    401: ((ErrorOut,), "missing or wrong X-API-Key (when the service has one)"),
    404: ((ErrorOut,), "an unknown user, item or served list"),
    409: ((ErrorOut,), "a write the stored state refuses"),
    413: ((ErrorOut, DetailOut), "the body is over the size limit (by Content-Length: error; chunked: detail)"),
    422: ((ErrorOut, ValidationErrorOut), "bad input: fields the schema refuses (detail), or a value recscope refuses"),
    503: ((ErrorOut,), "the model is busy: the request waited Settings.busy_after seconds; retry after Retry-After"),
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status code with its body and what it means."""
    return {code: {"model": Union[ERRORS[code][0]], "description": ERRORS[code][1]} for code in codes}  # noqa: UP007
