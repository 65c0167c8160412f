"""The live web view: ``GET /ui`` (``/ui?user=ID`` opens that shopper) is one page that draws a
shopper's live top-K with the report's renderer (``viz/assets/report.js``).

Read-only unless the service was started with ``recscope serve --ui-writes``
(``Settings.ui_writes``): a merchant exploring real shoppers must not change what they are
recommended. Read-only, the page sends GET requests only; its buttons ask "what if they bought
this" or "what if they were not interested in it" of ``GET /ui/data?user=ID&add=...&hide=...``,
which explains the shopper's live history with those actions appended (or hidden) and stores
nothing, not even the list it showed. With writes on, the page says so in a banner and its View,
Buy and Not interested buttons post real events and feedback (``POST /events``, ``POST
/feedback``) for the shopper shown.

``GET /ui/data`` answers the report's data contract for that one case, with ``live`` beside it:
the model version, the served list's ``request_id`` (for feedback; only a real shopper's list on a
page that writes is logged, else null), the latest events, what was skipped and what is
simulated. Without ``user``, ``add`` is an anonymous session's history (kept by the page, in its
tab); ``POST /ui/data`` takes one as a body. ``GET /ui/versions?user=ID`` feeds the page's "Model
versions" panel: every version with its verdict, parent and helpful shares, and for the shopper
the items whose rank moved most between the serving version and its parent, with each version's
explanation sentence (``recscope.viz.versions``; read-only). ``GET /ui/items?q=`` and ``GET /ui/shoppers?q=`` feed
the page's search boxes. The page asks for nothing beyond this origin: its scripts and styles are
inline and allowed by hash in a Content-Security-Policy header, and it fetches only ``connect-src
'self'``.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Annotated

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from pydantic import Field

from recscope.data import Dataset
from recscope.errors import DataError
from recscope.histories import Event, History, resolve
from recscope.pseudonyms import Pseudonyms
from recscope.recommend import Recommender
from recscope.serve.deps import NotFound, ReadAccess, Service, ServiceDep
from recscope.serve.live import add_stored_items, adhoc_history, user_history
from recscope.serve.schemas import Strict, errors
from recscope.snapshot import Snapshot
from recscope.viz.report import asset, history_data, page_header, page_methods, source_hash, templates
from recscope.viz.versions import versions_data

router = APIRouter(prefix="/ui", tags=["ui"])

PAGE_ASSETS = resources.files("recscope.serve") / "ui"
RECENT = 8  # latest history events the page lists
NO_STORE = {"Cache-Control": "no-store"}
# items a GET may simulate or carry as a session: ~10 URL bytes each for ids like P0001, well
# within a request line the server reads (16 kB); the page sends a longer session's newest ones
MAX_ITEMS = 100
SIMULATED = "purchase"  # the kind of event a "what if they bought it" appends

K = Annotated[int, Query(ge=1, le=100, description="how many items")]
Method = Annotated[str | None, Query(description="explanation method (default: the run's measured best)")]
Search = Annotated[str, Query(max_length=200, description="part of an id or title, any case")]
Limit = Annotated[int, Query(ge=1, le=50)]
User = Annotated[str | None, Query(min_length=1, description="the shopper; none: add= is an anonymous history")]
Add = Annotated[
    list[str],
    Query(
        max_length=MAX_ITEMS,
        default_factory=list,
        description="item ids appended to the history as purchases, in simulation only (nothing is stored)",
    ),
]
Hide = Annotated[
    list[str],
    Query(max_length=MAX_ITEMS, default_factory=list, description="item ids dismissed in simulation only"),
]


class SessionIn(Strict):
    history: list[str] = Field(min_length=1, max_length=1000, description="item ids, oldest first")
    exclude: list[str] = Field(default_factory=list, max_length=1000, description="items the shopper dismissed")
    k: int = Field(10, ge=1, le=100)
    method: str | None = None


class ItemHit(Strict):
    item_id: str
    title: str


# ------------------------------------------------------------------------------ the page
@lru_cache(maxsize=2)
def _page(writes: bool) -> tuple[str, str]:
    """(html, Content-Security-Policy): the same for every request of a service, so built once."""
    scripts = [asset("report.js"), (PAGE_ASSETS / "live.js").read_text(encoding="utf-8")]
    style = asset("report.css") + (PAGE_ASSETS / "ui.css").read_text(encoding="utf-8")
    env = templates(jinja2.PackageLoader("recscope.serve", "ui"))
    html = env.get_template("ui.html.j2").render(
        title="recscope live", scripts=[Markup(s) for s in scripts], style=Markup(style), writes=writes
    )
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(f"'{source_hash(s)}'" for s in scripts),
            f"style-src '{source_hash(style)}'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return html, policy


def _writes(request: Request) -> bool:
    return bool(request.app.state.settings.ui_writes)


@router.get("", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> HTMLResponse:
    """The live view; ``?user=ID`` opens that shopper (read by the page's script)."""
    html, policy = _page(_writes(request))
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        **NO_STORE,
    }
    return HTMLResponse(html, headers=headers)


# ------------------------------------------------------------------------------ its data
@router.get("/data", responses=errors(404, 503), dependencies=ReadAccess)
def shopper_data(
    request: Request,
    svc: ServiceDep,
    add: Add,
    hide: Hide,
    user: User = None,
    k: K = 10,
    method: Method = None,
):
    """The report's data contract for the shopper's live history (training data + stored events),
    with ``add`` bought and ``hide`` dismissed in simulation (stored nowhere); without ``user``,
    for the anonymous history ``add`` with ``hide`` dismissed."""
    if user is None:
        if not add:
            raise DataError(
                "no history to explain: neither user nor add was given",
                fix="give user=ID (a shopper's live history) or add=ITEM, one per item (an anonymous history)",
            )
        return _json(live_case(svc, None, k, method, items=add, hide=hide))
    shown, user = user, _real_id(request, svc, user)
    log = _writes(request) and not (add or hide)
    return _json(live_case(svc, user, k, method, add=add, hide=hide, log=log, shown=shown))


@router.post("/data", responses=errors(503))
def session_data(body: SessionIn, svc: ServiceDep):
    """The same for an anonymous session's history; ``exclude`` are the items it dismissed."""
    return _json(live_case(svc, None, body.k, body.method, items=body.history, hide=body.exclude))


def live_case(
    svc: Service,
    user: str | None,
    k: int,
    method: str | None,
    *,
    items: list[str] | None = None,
    add: Sequence[str] = (),
    hide: Sequence[str] = (),
    log: bool = False,
    shown: str | None = None,
) -> dict:
    """One live case in the report's data contract, explained by ``method`` only (the page asks
    again when the method changes): the shopper's live history (``user``, its stored dismissals
    hidden) or the anonymous history ``items``; ``add`` appended as purchases and ``hide`` hidden,
    in simulation only. ``log``: the list is served like any other (logged, with a request id for
    feedback), for a page that acts as the shopper; otherwise nothing is written. ``shown``: what
    the page calls the shopper (their pseudonym, Settings.pseudonymise; default their id)."""
    shown = shown or user
    rec = svc.recommender
    method = method or rec.default_method()
    page_methods(rec, [method])  # an unknown method is a 422 that lists the known ones
    unknown = [i for i in add if rec.data.find(i) is None]
    if unknown:
        raise NotFound(
            f"cannot simulate buying {', '.join(repr(i) for i in unknown[:5])}: not an item of the catalog",
            fix=f"add item ids of the catalog (e.g. {', '.join(rec.data.item_ids[1:4])})",
        )
    with svc.model():  # the model and the catalog, one request at a time
        history = user_history(svc, user) if user is not None else adhoc_history(rec, items or [])
        stored = list(history.dismissed)  # read with the history (events of it when the model reads them)
        hidden = sorted(set(stored) | set(hide))
        history = _simulate(rec, history, add)
        # the history itself, its events' kinds with it (items the catalog does not know are skipped, and named)
        explained = rec.explain(history=history, top=k, k=k, method=method, exclude=hidden)
        label = "anonymous shopper" if user is None else f"shopper {shown}"
        case = history_data(rec, history.indices, {method: explained}, method, label=label, user=shown, history=history)
    request_id = None
    if log:
        request_id = uuid.uuid4().hex
        svc.store.log_served(request_id, user, svc.model_version, [(e.item_id, e.score) for e in explained], method)
    return {
        **page_header(rec, k, page_methods(rec), page="live"),
        "histories": [case],
        "faithfulness": None,
        "merchant": None,
        "live": {
            "user": shown,
            "method": method,
            "request_id": request_id,
            "model_version": svc.model_version,
            "in_run": history.in_run,
            "events": len(history.items),
            "recent": [_recent(rec, e) for e in history.items[-RECENT:][::-1]],
            "unknown": history.unknown,
            "dismissed": stored if user is not None else hidden,
            "simulated": {"add": list(add), "hide": sorted(set(hide))} if user is not None else None,
        },
    }


# the serving version's parent as the service would serve it (the store's items added, its hidden
# items hidden), built again when the store changes: (run, version) -> (the store's change seq, it)
_parents: dict[tuple[str, str], tuple[int, Recommender]] = {}


def _parent(svc: Service, run, version_id: str) -> Recommender:
    """The Recommender of ``version_id`` over the store's catalog (called under ``svc.model()``)."""
    seq, key = svc.store.last_change(), (str(run), version_id)
    cached = _parents.get(key)
    if cached is None or cached[0] != seq:
        rec = Recommender(Snapshot.load(run, version_id))
        add_stored_items(rec, svc.store)
        _parents.clear()  # one app serves one run: the last parent asked for only
        _parents[key] = cached = (seq, rec)
    return cached[1]


@router.get("/versions", responses=errors(404, 503), dependencies=ReadAccess)
def versions_panel(request: Request, svc: ServiceDep, user: User = None, k: K = 10, method: Method = None):
    """The run's model versions (verdict, parent, when, helpful shares per explanation method) and,
    for ``user``, the items whose rank moved most between the serving version and its parent, each
    with both versions' explanation sentences (``recscope.viz.versions``). Stores nothing."""
    from recscope import versions

    run = request.app.state.settings.run
    shown, user = user, None if user is None else _real_id(request, svc, user)
    rec = svc.recommender
    method = method or rec.default_method()
    page_methods(rec, [method])  # an unknown method is a 422 that lists the known ones
    shares = svc.store.helpful_shares()
    serving = svc.model_version
    known = {v.id: v for v in versions.listing(run)} if run is not None else {}
    parent_id = known[serving].parent if serving in known else None
    cases, parent = [], None
    with svc.model():
        if user is not None:
            history = rec.histories.history(user)  # whole: each version reads it as it does (Recommender.read)
            cases = [(rec, history, list(history.dismissed))]
        if parent_id in known and user is not None:
            parent = _parent(svc, run, parent_id)
        data = versions_data(run, serving, cases, parent=parent, k=k, method=method, shares=shares)
    return _json({**data, "user": shown})


def _pseudonyms(request: Request, svc: Service) -> Pseudonyms | None:
    """The page's pseudonyms when the service shows them (Settings.pseudonymise), made once per app."""
    settings = request.app.state.settings
    if not settings.pseudonymise:
        return None
    names = getattr(request.app.state, "pseudonyms", None)
    if names is None:
        names = request.app.state.pseudonyms = Pseudonyms.for_run(settings.run, svc.recommender.data.user_ids)
    return names


def _real_id(request: Request, svc: Service, user: str) -> str:
    """The user id the page's ``user`` stands for: itself, or the shopper its pseudonym names."""
    names = _pseudonyms(request, svc)
    if names is None:
        return user
    found = names.find(user)
    if found is None:
        raise NotFound(
            f"no shopper of the run has the pseudonym {user!r}",
            fix="this service shows pseudonyms only (--pseudonymise): pick a shopper from the search box",
        )
    return found


def _simulate(rec: Recommender, history: History, add: Sequence[str]) -> History:
    """``history`` with ``add`` appended as purchases made now, given in this request (stored nowhere)."""
    if not add:
        return history
    now = time.time()
    events = [*history.items, *(Event(item_id, SIMULATED, now, "request") for item_id in add)]
    return resolve(rec.data, history.user_id, events, history.in_run, rec.snapshot.reads_dismissals)


def _recent(rec: Recommender, event: Event) -> dict:
    index = rec.data.find(event.item_id)
    title = rec.data.title(index) if index is not None else event.item_id  # not in the catalog: its id
    return {"id": event.item_id, "title": title, "event": event.event, "source": event.source}


def _json(data: dict) -> Response:
    return Response(json.dumps(data, allow_nan=False), media_type="application/json", headers=NO_STORE)


# ------------------------------------------------------------------------------ search
_catalogs: dict[int, tuple[Dataset, int, list[tuple[str, str, str, str]]]] = {}


def _catalog(data: Dataset) -> list[tuple[str, str, str, str]]:
    """(id, title, id casefolded, title casefolded) per item of the catalog, in catalog order;
    built again only when the catalog grows (cached by identity: a Dataset is not hashable)."""
    size = len(data.item_ids)
    cached = _catalogs.get(id(data))
    if cached is None or cached[0] is not data or cached[1] != size:
        titles = [(item_id, data.title(i)) for i, item_id in enumerate(data.item_ids) if i]  # 0 is padding
        rows = [(item_id, title, item_id.casefold(), title.casefold()) for item_id, title in titles]
        _catalogs.clear()  # one app serves one run
        _catalogs[id(data)] = cached = (data, size, rows)
    return cached[2]


@router.get("/items", responses=errors(503))
def search_items(q: Search, svc: ServiceDep, limit: Limit = 10) -> list[ItemHit]:
    """Items of the run whose id or title holds ``q``: the exact id first, then ids that start
    with it, then titles that start with it, then the rest, each in catalog order."""
    needle = q.strip().casefold()
    if not needle:
        return []
    tiers: list[list[ItemHit]] = [[], [], [], []]
    with svc.model():  # not while the catalog grows
        catalog = _catalog(svc.recommender.data)
    for item_id, title, low_id, low_title in catalog:
        if low_id == needle:
            tiers[0].append(ItemHit(item_id=item_id, title=title))
        elif low_id.startswith(needle):
            tiers[1].append(ItemHit(item_id=item_id, title=title))
        elif low_title.startswith(needle):
            tiers[2].append(ItemHit(item_id=item_id, title=title))
        elif needle in low_id or needle in low_title:
            tiers[3].append(ItemHit(item_id=item_id, title=title))
    return [hit for tier in tiers for hit in tier][:limit]


@router.get("/shoppers", dependencies=ReadAccess)
def search_shoppers(request: Request, svc: ServiceDep, q: Search = "", limit: Limit = 10) -> list[str]:
    """Shoppers of the run whose id holds ``q`` (ids that start with it first); empty: the first few.
    Forgotten shoppers (the store's tombstones) are never offered."""
    needle = q.strip().casefold()
    forgotten = svc.store.forgotten()
    names = _pseudonyms(request, svc)
    if names is not None:  # the pseudonyms are searched, never the ids (no id -> pseudonym oracle)
        return names.search(needle, limit, hidden=forgotten)
    users = (u for u in svc.recommender.data.user_ids if u not in forgotten)
    if not needle:
        return list(itertools.islice(users, limit))
    starts, inside = [], []
    for u in users:
        if u.casefold().startswith(needle):
            starts.append(u)
            if len(starts) >= limit:
                break
        elif needle in u.casefold():
            inside.append(u)
    return (starts + inside)[:limit]
