"""What if a user's live history were edited: the top-K before and after, what entered and left."""

from __future__ import annotations

from fastapi import APIRouter

from recscope.serve.deps import NotFound, ServiceDep
from recscope.serve.live import item_index_or_none, known_ids, require_known, user_history
from recscope.serve.schemas import WhatIfIn, WhatIfOut

router = APIRouter(prefix="/what-if", tags=["what-if"])


@router.post("")
def what_if(body: WhatIfIn, svc: ServiceDep) -> WhatIfOut:
    """``Recommender.what_if`` on the live history (training history + stored events); removing an
    item the history does not hold is 422 naming it, adding an item the run does not know is 404."""
    rec = svc.recommender
    history = user_history(svc, body.user_id)
    require_known(rec, history)
    unknown = [i for i in body.add if item_index_or_none(rec, i) is None]
    if unknown:
        raise NotFound(
            f"cannot add {', '.join(repr(i) for i in unknown)}: not an item of the run",
            fix=f"add item ids the run was trained on (e.g. {', '.join(rec.data.item_ids[1:4])})",
        )
    result = rec.what_if(history=known_ids(rec, history), remove=body.remove, add=body.add, k=body.k)
    result["unknown"] = history.unknown
    return WhatIfOut(**result)
