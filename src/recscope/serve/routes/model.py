"""The model the service serves: which version, and switching to another without a restart.

``recscope versions RUN --promote ID`` changes the run's current version (under the run's lock);
``PUT /model`` makes the running service serve it, or any version of the run, in one swap: a
request already computing finishes on the model it started with, the next one gets the new one.
The switch is written to the store, so every worker over it (and every host) follows within
``Settings.follow_every`` seconds, and a worker that starts later serves it too.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from recscope import versions
from recscope.serve.deps import FollowerDep, NotFound, ServiceDep, WriteAccess
from recscope.serve.schemas import ModelIn, ModelOut, errors

router = APIRouter(prefix="/model", tags=["model"])


def _state(request: Request) -> ModelOut:
    svc, run = request.app.state.service, request.app.state.settings.run
    return ModelOut(
        version=svc.model_version,
        current=versions.current(run),
        versions=[v.to_dict() for v in versions.listing(run)],
    )


@router.get("")
def served(request: Request, svc: ServiceDep) -> ModelOut:
    """The version served, the run's current one (what training or ``--promote`` last set) and all of them."""
    return _state(request)


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
