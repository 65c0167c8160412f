"""What if a user's live history were edited: the top-K before and after, what entered and left."""

from __future__ import annotations

from fastapi import APIRouter

from recscope.serve.deps import NotFound, ReadAccess, ServiceDep
from recscope.serve.schemas import WhatIfIn, WhatIfOut, errors

router = APIRouter(prefix="/what-if", tags=["what-if"])


@router.post("", responses=errors(404, 503), dependencies=ReadAccess)
def what_if(body: WhatIfIn, svc: ServiceDep) -> WhatIfOut:
    """``Recommender.what_if`` on the live history (training history + stored events), dismissed
    items hidden before and after; removing an item the history does not hold is 422 naming it,
    adding an item the catalog does not hold is 404."""
    rec = svc.recommender
    unknown = [i for i in body.add if rec.data.find(i) is None]
    if unknown:
        raise NotFound(
            f"cannot add {', '.join(repr(i) for i in unknown)}: not an item of the catalog",
            fix=f"add item ids of the catalog (e.g. {', '.join(rec.data.item_ids[1:4])})",
        )
    with svc.model():  # the history's dismissed items are hidden (Recommender.what_if)
        result = rec.what_if(user=body.user_id, remove=body.remove, add=body.add, k=body.k)
    return WhatIfOut(model_version=svc.model_version, **result)
