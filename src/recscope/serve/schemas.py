"""Request and response bodies of the service: every request model refuses unknown fields.

The error bodies are here too, with ``errors(...)``: the ``responses=`` a route declares for the
refusals it can answer, so the OpenAPI document lists each status code with its body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from recscope.serve.explanation import Explanation
from recscope.serve.models import FEEDBACK_ID_MAX
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
    served_items: int = Field(ge=0, description="items shown in those lists")
    feedback: int = Field(ge=0)


class ForgetOut(Strict):
    user_id: str
    deleted: Deleted  # rows removed
    forgotten_at: float = Field(
        description="epoch seconds of the tombstone written with the deletion (committed before this answer): "
        "from then on no route shows the user's training events, and the versions trained on them say so "
        "(GET /model: forgotten)"
    )


class RecommendIn(Request):
    history: list[Id] = Field(
        description="item ids, oldest first; empty (a first visit) or with no id the catalog knows: the fallback list"
    )
    k: int = Field(10, ge=1, le=1000)
    explain: bool = False
    method: str | None = None
    counterfactual: bool = Field(False, description="with explain: also each item's counterfactual")
    exclude: list[Id] = Field(default_factory=list, description="item ids never to recommend in this answer")
    exclude_attributes: list[str] = Field(
        default_factory=list, description='filters "field=value": items with that value are not recommended'
    )
    include_attributes: list[str] = Field(
        default_factory=list,
        description='filters "field=value" (e.g. category=Phones): only items with that value are recommended; '
        "filters on one field are ORed, on different fields ANDed",
    )
    fallback: bool = Field(
        True, description="false: a history with no item the catalog knows is 422 rather than the fallback list"
    )


class RecommendedItem(Strict):
    rank: int = Field(ge=1)
    item_id: str
    title: str
    score: float
    sentence: str | None = None
    explanation: Explanation | None = None  # with explain=true


class FallbackOut(Strict):
    """Which list a visitor the model cannot read gets, and why they get it."""

    kind: Literal["popular"] = Field(
        description="popular: the items with the most events in the run's data, scored by that count"
    )
    reason: Literal["unknown_user", "empty_history", "no_known_items"] = Field(
        description="unknown_user: neither the run nor the store knows the user; empty_history: no items given; "
        "no_known_items: none of the history's items is in the catalog (named in unknown_items)"
    )


class RecommendationsOut(Strict):
    request_id: str
    model_version: str
    items: list[RecommendedItem]
    unknown_items: list[str] = Field(default_factory=list, description="history ids the run does not know: skipped")
    source: Literal["model", "fallback"] = Field(
        "model", description="model: the model's list for the history; fallback: the list named in fallback"
    )
    fallback: FallbackOut | None = Field(None, description="with source fallback: which list and why")


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


FeedbackId = Annotated[str, Field(min_length=1, max_length=FEEDBACK_ID_MAX, pattern=r"^[^\x00]+$")]


class FeedbackIn(Request):
    request_id: Id = Field(description="the request_id of the served list")
    user_id: Id
    item_id: Id = Field(description="an item of that list")
    action: Action
    feedback_id: FeedbackId | None = Field(
        None,
        description="the client's id for this feedback: re-sending it stores nothing (200, duplicate true); "
        "the same id with other content is 409",
    )


class FeedbackOut(Strict):
    request_id: str
    user_id: str
    item_id: str
    action: Action
    feedback_id: str | None = None
    duplicate: bool = Field(False, description="true: feedback with this feedback_id was stored before; nothing stored")


class WhatIfIn(Request):
    user_id: Id
    remove: list[Id] = Field(default_factory=list, description="item ids the live history holds")
    add: list[Id] = Field(default_factory=list, description="item ids of the run, appended to the history")
    k: int = Field(10, ge=1, le=1000)


class Ranked(Strict):
    """One item of a top-K (``Recommendation``)."""

    rank: int = Field(ge=1)
    item_id: str
    title: str
    score: float


class WhatIfOut(Strict):
    model_version: str  # the version that ranked both lists
    before: list[Ranked]  # rank order
    after: list[Ranked]
    entered: list[str]
    left: list[str]
    unknown: list[str]  # stored history ids the run does not know: skipped


Scalar = str | bool | int | float | None


class ModelIn(Request):
    version: str | None = Field(None, description="a version of the run; default: the run's current one")


class VersionOut(Strict):
    """A version of the run: ``recscope.versions.Version`` (id, created, source, parent, details,
    index) and what its ``details`` say of it, with whether it is served."""

    id: str
    created: float  # epoch seconds
    source: str  # "train", or how it was made from ``parent`` (a fine-tune)
    parent: str | None  # the version it was made from
    details: dict[str, Any]  # its version.json details, whole
    index: dict[str, Any] | None  # its ANN index, when built
    promoted: bool = Field(
        description="made current when it was published: a trained version always, a fine-tuned one "
        "when it measured not worse than its parent (verdict promoted)"
    )
    verdict: str | None = Field(description='a fine-tune\'s verdict: "promoted" or "kept" (None: not measured)')
    reason: str | None = Field(description="why it was promoted or kept")
    metrics: dict[str, Any] | None = Field(
        description="a fine-tune's measurement: candidate and parent NDCG@10 and HR@10 on the newest events, "
        "the tolerance, the cases, and the difference (candidate minus parent NDCG@10 with a 90% paired "
        "bootstrap interval over the cases: NDCG@10, low, high, level, resamples)"
    )
    lineage: dict[str, Any] | None = Field(
        description="what a fine-tune learned from: parent, since, until, events, feedback, negatives, "
        "new_items, replay_users (and the tombstones it honoured); a retrained run's: parent run, data, store_until"
    )
    serving: bool = Field(description="this worker serves it now")
    current: bool = Field(description="the run's current version")
    forgotten: int = Field(
        default=0,
        ge=0,
        description="users it was trained on who have since been forgotten (DELETE /users/{id}): only a "
        "version trained without them (recscope retrain, or a sharded run's forget) is free of them",
    )


class ModelOut(Strict):
    version: str  # served now
    current: str | None  # the run's current version (None: the run predates versions)
    versions: list[VersionOut]  # every version of the run, oldest first (recscope.versions.Version)


class FinetuneIn(Request):
    since: str | None = Field(
        None,
        description="learn from the store's events since this version id or time (ISO-8601 or epoch "
        "seconds); default: since the serving version was made",
    )
    budget: Number | None = Field(None, gt=0, description="seconds the fine-tune may train; default: the config's")


class Open(BaseModel):
    """A body another program writes (``recscope finetune``): the keys named here, and any it adds."""

    model_config = ConfigDict(extra="allow")


class JobProgress(Open):
    stage: str = Field(description="starting, loading, training, evaluating, publishing or done")
    done: float = Field(description="the share done, 0 … 1")
    message: str
    pid: int | None = Field(description="the job's process")


class FinetuneMetrics(Open):
    candidate: dict[str, float]  # {"NDCG@10": x, "HR@10": x} of the new version on the held-out newest events
    parent: dict[str, float]  # ... of the version it was made from
    tolerance: float  # how much worse (NDCG@10) the candidate may be and still be promoted
    cases: int  # held-out events measured
    # {"NDCG@10": candidate minus parent, "low", "high": its paired bootstrap interval, "level": 0.9, "resamples"}
    difference: dict[str, float] | None = None


class FinetuneResult(Open):
    """What ``recscope finetune --json`` prints."""

    version: str | None = Field(description="the new version (None: nothing to learn)")
    parent: str | None
    promoted: bool
    verdict: Literal["promoted", "kept", "nothing_to_learn"]
    reason: str
    metrics: FinetuneMetrics | dict[str, Any]
    lineage: dict[str, Any] | None = None
    seconds: float


class JobOut(Strict):
    job_id: str
    job: str  # the same id (the name issue 23 gives it)
    kind: Literal["finetune"]
    status: Literal["running", "succeeded", "failed"]
    request: dict[str, Any]  # what was asked: since, budget
    started: float  # epoch seconds
    finished: float | None
    seconds: float  # running for, or ran for
    pid: int | None  # its process (None: not started yet)
    progress: JobProgress
    result: FinetuneResult | None = Field(description="succeeded: what recscope finetune printed")
    error: str | None = Field(description="failed: why")


class ItemIn(Request):
    title: str | None = Field(
        None,
        min_length=1,
        description="required to add an item or replace an added one's title and attributes; "
        "a body of hidden alone changes only that (the run's items take nothing else)",
    )
    attributes: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict, description="field: value or [values]")
    hidden: bool | None = Field(
        None, description="true: in no list (recommendations, similar, fallback, what-if) until set false"
    )


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
    hidden: bool = Field(False, description="in no list (PUT hidden true, or deleted)")
    deleted: bool = Field(
        False, description="a trained item deleted (DELETE /items/{id}): hidden for good, it cannot be shown again"
    )


class ItemsPage(Strict):
    items: list[ItemOut] = Field(description="as GET /items/{id} shows each: the run's items, then those added since")
    total: int = Field(ge=0, description="items in the catalog")


class ItemDeletedOut(Strict):
    item_id: str
    source: Literal["run", "store"]
    removed: bool = Field(
        description="true: an added item, gone from the store and from every worker's catalog (GET is 404 now); "
        "false: an item of the run, which the model keeps reading in histories: hidden for good instead"
    )
    hidden: Literal[True] = Field(True, description="in no list, either way")


class UserOut(Strict):
    user_id: str
    source: Literal["run", "store"] = Field(description="run: the run was trained on them; store: new, events only")
    run_events: int = Field(ge=0, description="events of theirs in the run's training data")
    stored_events: int = Field(ge=0, description="events of theirs the store holds (posted since training)")


class UsersPage(Strict):
    users: list[UserOut] = Field(description="the run's users (training order), then those only the store knows")
    total: int = Field(ge=0, description="users the run or the store knows")


class SimilarReason(Strict):
    """Why the model scores an item after the asked one: computed for this pair, never a template."""

    shared: dict[str, list[str]] = Field(description="field -> the values both items have (the catalog)")
    reads: dict[str, float | None] = Field(
        description='the asked item\'s token parts ("id", "text", each field) -> how much each pushed this score'
    )
    own: dict[str, float | None] = Field(description="this item's own fields -> their share of its score")
    method: str = Field(description="the attribution method of reads")
    sentence: str = Field(description="the numbers above in words")


class SimilarItem(Ranked):
    reason: SimilarReason | None = Field(None, description="with explain=true")


class SimilarOut(Strict):
    request_id: str = Field(description="the list as logged (anonymous): send it with feedback on its items")
    model_version: str
    item_id: str = Field(description="the item asked about (never in items)")
    items: list[SimilarItem]


# -- error bodies ---------------------------------------------------------------------------


class ErrorOut(Strict):
    """recscope's own refusal (a ``RecscopeError``): what was wrong, and how to fix it."""

    error: str
    fix: str | None = None


class UnavailableOut(Strict):
    """503: the service cannot answer now; ``reason`` says why, the Retry-After header when to retry."""

    error: str
    fix: str | None = None
    reason: Literal["loading", "busy"] = Field(
        description="loading: the model or store is not loaded yet (starting); busy: the request waited "
        "busy_after seconds (recscope serve --busy-after) for the model"
    )


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
    404: ((ErrorOut,), "an unknown user, item, served list, model version or job"),
    409: ((ErrorOut,), "a write the stored state refuses (or a job already running)"),
    413: ((ErrorOut, DetailOut), "the body is over the size limit (by Content-Length: error; chunked: detail)"),
    422: ((ErrorOut, ValidationErrorOut), "bad input: fields the schema refuses (detail), or a value recscope refuses"),
    503: ((UnavailableOut,), "not loaded yet, or busy (waited --busy-after s): see reason, retry after Retry-After"),
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status code with its body and what it means."""
    return {code: {"model": Union[ERRORS[code][0]], "description": ERRORS[code][1]} for code in codes}  # noqa: UP007
