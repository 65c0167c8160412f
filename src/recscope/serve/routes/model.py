"""The model the service serves: which version, and switching to another without a restart.

``recscope versions RUN --promote ID`` changes the run's current version (under the run's lock);
``PUT /model`` makes the running service serve it, or any version of the run, in one swap: a
request already computing finishes on the model it started with, the next one gets the new one.
The switch is written to the store, so every worker over it (and every host) follows within
``Settings.follow_every`` seconds, and a worker that starts later serves it too.

``POST /model/finetune`` starts ``recscope finetune`` as a background job (``serve.jobs``) and
answers 202 at once; ``GET /model/jobs/{id}`` reports its progress, then its result. A promoted
version reaches every worker the same way as ``PUT /model``: the command writes the switch to
the store. ``PUT /model`` serves any version, a fine-tune's that was kept unserved included.

``GET /model/feedback`` says, per version and explanation method, how shoppers judged the
explanations they were shown: the "explanation helpful" / "explanation unhelpful" feedback on the
lists that version served by that method (``Store.helpful_shares``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from recscope import forget, versions
from recscope.errors import RunError
from recscope.serve import jobs
from recscope.serve.deps import Conflict, FollowerDep, NotFound, ReadAccess, ServiceDep, StoreDep, WriteAccess
from recscope.serve.schemas import FinetuneIn, JobOut, ModelIn, ModelOut, Strict, VersionOut, errors
from recscope.serve.store import JobRunning, Store

router = APIRouter(prefix="/model", tags=["model"])


class HelpfulOut(Strict):
    """What shoppers said of the explanations one version showed by one method."""

    method: str | None = Field(description="the explanation method; null: lists served without explanations")
    helpful: int = Field(description="items of its lists marked explanation_helpful (the same item twice: once)")
    unhelpful: int = Field(description="... marked explanation_unhelpful")
    votes: int = Field(description="helpful + unhelpful")
    share: float | None = Field(description="helpful / votes; null before any vote")
    lists: int = Field(description="lists the version served by this method, voted on or not")


class VersionFeedbackOut(Strict):
    version: str
    serving: bool
    methods: list[HelpfulOut]  # by method, lists without explanations (method null) first


class FeedbackOut(Strict):
    version: str  # served now
    versions: list[VersionFeedbackOut]  # the run's versions oldest first, then any other the store names


def _version(version: versions.Version, serving: str, current: str | None, forgotten: int = 0) -> VersionOut:
    details = version.details
    verdict = details.get("verdict")
    return VersionOut(
        **version.to_dict(),
        promoted=verdict in (None, "promoted"),  # a version without a verdict was made current when published
        verdict=verdict,
        reason=details.get("reason"),
        metrics=details.get("metrics"),
        lineage=details.get("lineage"),
        serving=version.id == serving,
        current=version.id == current,
        forgotten=forgotten,
    )


def _state(request: Request) -> ModelOut:
    svc, run = request.app.state.service, request.app.state.settings.run
    current = versions.current(run)
    forgotten = forget.forgotten_counts(run, svc.recommender.data.user_ids, svc.store)
    return ModelOut(
        version=svc.model_version,
        current=current,
        versions=[_version(v, svc.model_version, current, forgotten.get(v.id, 0)) for v in versions.listing(run)],
    )


def _job(state: jobs.JobState, store: Store) -> JobOut:
    job = state.job
    error = job.error
    if error:  # the job opens the store by its URL (password included, from its environment): an error may quote it
        error = error.replace(jobs.store_url(store), store.engine.url.render_as_string(hide_password=True))
    return JobOut(
        job_id=job.id,
        job=job.id,
        kind=job.kind,
        status=job.status,
        request=job.request,
        started=job.started_at,
        finished=job.finished_at,
        seconds=(job.finished_at or time.time()) - job.started_at,
        pid=job.pid,
        progress={"pid": job.pid, **state.progress},
        result=job.result,
        error=error,
    )


@router.get("")
def served(request: Request, svc: ServiceDep) -> ModelOut:
    """The version served, the run's current one (what training or ``--promote`` last set) and all of them."""
    return _state(request)


@router.get("/feedback", dependencies=ReadAccess)
def feedback(
    request: Request,
    svc: ServiceDep,
    store: StoreDep,
    version: Annotated[str | None, Query(min_length=1, description="one version only")] = None,
) -> FeedbackOut:
    """The share of "explanation helpful" per model version and explanation method, from the
    feedback the store holds on the lists each version served (``Store.helpful_shares``)."""
    from recscope.viz.versions import share_rows

    shares = store.helpful_shares(version)
    known = [v.id for v in versions.listing(request.app.state.settings.run)] if request.app.state.settings.run else []
    order = [v for v in known if version in (None, v)]
    order += sorted({s.version for s in shares} - set(order))
    return FeedbackOut(
        version=svc.model_version,
        versions=[
            VersionFeedbackOut(
                version=v,
                serving=v == svc.model_version,
                methods=[HelpfulOut(**row) for row in share_rows([s for s in shares if s.version == v])],
            )
            for v in order
        ],
    )


@router.put("", responses=errors(404), dependencies=WriteAccess)
def switch(body: ModelIn, request: Request, svc: ServiceDep, follower: FollowerDep) -> ModelOut:
    """Serve ``version`` (default: the run's current one) from the next request on, here and on
    every other worker of the store (within ``Settings.follow_every`` seconds)."""
    settings = request.app.state.settings
    known = [v.id for v in versions.listing(settings.run)]
    if body.version is not None and body.version not in known:
        raise NotFound(
            f"the run has no model version {body.version!r}",
            fix=f"use one of {', '.join(known) or '(none: the run predates versions)'}",
        )
    target = body.version or versions.current(settings.run) or svc.model_version
    follower.switch(target)
    return _state(request)


@router.post("/finetune", status_code=202, responses=errors(409), dependencies=WriteAccess)
def finetune(body: FinetuneIn, request: Request, response: Response, store: StoreDep) -> JobOut:
    """Start ``recscope finetune`` on the run and the service's store, as a process of its own, and
    answer at once; ``GET /model/jobs/{id}`` (the Location header) reports its progress and result.
    409 while a fine-tune job is running (one per run at a time)."""
    run = request.app.state.settings.run
    if run is None:
        raise RunError("no run to fine-tune", fix="serve a run (recscope serve RUN)")
    try:
        job = jobs.start_finetune(store, Path(run), since=body.since, budget=body.budget)
    except JobRunning as e:
        raise Conflict(e.problem, fix=e.fix) from None
    response.headers["Location"] = f"/model/jobs/{job.id}"
    state = jobs.state(store, job.id)
    assert state is not None, "a job just stored"
    return _job(state, store)


@router.get("/jobs/{job_id}", responses=errors(404))
def job(job_id: str, store: StoreDep) -> JobOut:
    """A job's progress while it runs ({stage, done, message}), then its result or why it failed."""
    state = jobs.state(store, job_id)
    if state is None:
        recent = ", ".join(j.id for j in store.jobs(limit=5))
        raise NotFound(
            f"the store has no job {job_id!r}",
            fix=f"use the job id POST /model/finetune answered ({recent or 'no jobs yet'})",
        )
    return _job(state, store)
