"""kill -9 of ``recscope serve`` in the middle of a stream of event posts, then a restart on the
same SQLite store: every acknowledged event is there with its content, a batch is all or nothing,
and a client's retry of what was not acknowledged is taken once (issue 9's durability bar)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx2 as httpx

from recscope.serve.store import Store
from servers import Server

KEY = {"X-API-Key": "durable-key-5"}
USERS = [f"dur-{u}" for u in range(5)]  # unknown to the run: their history is the store's alone
BATCH = 100  # events per POST: each user gets 20 of every batch
CLIENTS = 2  # posting at once, so the kill is likelier to land while a commit is on its way


def batch(n: int) -> list[dict]:
    """Batch ``n``: ids, items and timestamps of its own, so each event is told apart by content."""
    return [
        {
            "event_id": f"b{n}-e{i}",
            "user_id": USERS[i % len(USERS)],
            "item_id": f"item-{n}-{i}",
            "event": "purchase" if i % 2 else "click",
            "timestamp": 1_800_000_000.0 + n * BATCH + i,
            "value": n + i / 1000,
        }
        for i in range(BATCH)
    ]


def serve(run: Path, db: str, log: Path) -> Server:
    """``recscope serve`` on the store ``db``, writes behind the API key."""
    args = ["--db", db, "--api-key-env", "RECSCOPE_DURABLE_KEY"]
    return Server(run, *args, log=log, env={"RECSCOPE_DURABLE_KEY": KEY["X-API-Key"]})


def _stream(base: str, numbers: list[int], acked: set[int], unacked: set[int], stop: threading.Event) -> None:
    """Post batches until the server goes away: 200 is acknowledged, anything else is not."""
    with httpx.Client(base_url=base, headers=KEY, timeout=30) as client:
        for n in numbers:
            if stop.is_set():
                return
            try:
                response = client.post("/events", json={"events": batch(n)})
            except httpx.TransportError:
                unacked.add(n)  # sent, maybe committed, never answered
                return
            assert response.status_code == 200, response.text
            assert response.json() == {"accepted": BATCH, "duplicates": 0}
            acked.add(n)


def _stored(base: str) -> set[tuple]:
    """Every stored event as the service shows it: (user, item, event, timestamp)."""
    events = set()
    for user in USERS:
        response = httpx.get(f"{base}/users/{user}/history", timeout=30)
        if response.status_code == 404:  # nothing stored for this user
            continue
        assert response.status_code == 200, response.text
        for h in response.json()["items"]:
            assert h["source"] == "store"
            events.add((user, h["item_id"], h["event"], h["timestamp"]))
    return events


def _shown(numbers: set[int]) -> set[tuple]:
    return {(e["user_id"], e["item_id"], e["event"], e["timestamp"]) for n in numbers for e in batch(n)}


def test_kill_9_mid_stream_loses_no_acknowledged_event_and_half_writes_nothing(tiny_run, tmp_path):
    path = tmp_path / "store.sqlite"
    db = f"sqlite:///{path}"
    server = serve(tiny_run, db, tmp_path / "serve.log")
    acked: set[int] = set()
    unacked: set[int] = set()
    stop = threading.Event()
    clients = [
        threading.Thread(target=_stream, args=(server.base, list(range(c, 10_000, CLIENTS)), acked, unacked, stop))
        for c in range(CLIENTS)
    ]
    try:
        for t in clients:
            t.start()
        deadline = time.monotonic() + 15
        while len(acked) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acked) >= 30, f"only {len(acked)} batches acknowledged in 15 s"
        server.kill()  # SIGKILL: no shutdown, no flush, no lifespan exit
    finally:
        stop.set()
        for t in clients:
            t.join(timeout=30)
        server.stop()
    assert not any(t.is_alive() for t in clients)

    # The file is whole: SQLite's own check, before anything opens it to recover the WAL.
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    server = serve(tiny_run, db, tmp_path / "serve.log")
    try:
        stored = _stored(server.base)
        assert _shown(acked) <= stored, f"{len(_shown(acked) - stored)} acknowledged events lost"
        landed = {n for n in unacked if _shown({n}) <= stored}
        for n in unacked - landed:
            assert not _shown({n}) & stored, f"batch {n} is half stored"
        assert stored == _shown(acked | landed), "events no batch acknowledged or left in full"
        with Store.open(db) as store:  # what the history does not show: ids and values
            rows = [e for u in USERS for e in store.history(u)]
        by_id = {e.event_id: (e.user_id, e.item_id, e.event, e.timestamp, e.value) for e in rows}
        assert len(by_id) == len(rows) == len(acked | landed) * BATCH
        for n in acked | landed:
            for e in batch(n):
                assert by_id[e["event_id"]] == (e["user_id"], e["item_id"], e["event"], e["timestamp"], e["value"])

        # The client retries what was never answered, and by mistake re-sends an answered batch.
        with httpx.Client(base_url=server.base, headers=KEY, timeout=30) as client:
            for n in unacked:
                again = client.post("/events", json={"events": batch(n)})
                assert again.status_code == 200, again.text
                want = {"accepted": 0, "duplicates": BATCH} if n in landed else {"accepted": BATCH, "duplicates": 0}
                assert again.json() == want
            resent = client.post("/events", json={"events": batch(min(acked))})
            assert resent.json() == {"accepted": 0, "duplicates": BATCH}
        assert _stored(server.base) == _shown(acked | unacked)
    finally:
        server.stop()
