"""The event and feedback store, the same tests on SQLite (a temp file) and PostgreSQL (a throwaway server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pg import postgres_server  # noqa: F401  (a fixture)
from recscope.errors import RecscopeError, StoreError
from recscope.serve.models import Base
from recscope.serve.store import MAX_BATCH, MIGRATIONS, STORE_FILE, Store

BACKENDS = ["sqlite", "postgresql"]

# Ids a shop might send: right-to-left text, emoji with joiners, quotes and SQL, 10 kB.
UNICODE_IDS = [
    "مستخدم-٤٢",
    "עברית\u200fמשתמש",
    "👩🏽‍💻🛒",
    'O\'Brien "quoted" `tick`; DROP TABLE events; --',
    "  spaces around  ",
    "e\u0301 vs \u00e9",  # not normalised: both forms are kept apart
    "ж" * 5000 + "🙂" * 1250,  # 10 kB+ of UTF-8
    "\\x00 and %s and {}",
]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def store(store_url):
    with Store.open(store_url) as s:
        yield s


def event(event_id: str, user: str = "u1", item: str = "i1", **extra) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, **extra}


def test_batches_are_idempotent_by_event_id(store):
    batch = [event(f"e{i}", item=f"i{i}", timestamp=1000 + i) for i in range(5)]
    assert store.add_events(batch) == (5, 0)
    assert store.add_events(batch) == (0, 5)
    assert store.add_events([*batch[:2], event("e5", timestamp=2000), event("e5", timestamp=2000)]) == (1, 3)
    # a retry without a timestamp is the same event, although the store stamps each arrival
    assert store.add_events(event("late")) == (1, 0)
    assert store.add_events(event("late")) == (0, 1)
    assert [e.event_id for e in store.history("u1")][:6] == ["e0", "e1", "e2", "e3", "e4", "e5"]
    assert len(store.history("u1")) == 7


def test_conflicting_repost_is_refused_naming_the_id(store):
    store.add_events(event("dup-7", timestamp=5, value=1.5))
    with pytest.raises(StoreError, match="dup-7.*different content"):
        store.add_events([event("fresh"), event("dup-7", timestamp=5, value=2.0)])
    with pytest.raises(StoreError, match="dup-7"):
        store.add_events(event("dup-7", item="other", timestamp=5, value=1.5))
    with pytest.raises(StoreError, match="'x'.*twice in the batch"):
        store.add_events([event("x", item="a"), event("x", item="b")])
    # the refused batch stored nothing
    assert [e.event_id for e in store.history("u1")] == ["dup-7"]


def test_bad_events_name_the_field(store):
    cases = [
        ({"user_id": "u", "item_id": "i"}, "'event_id'"),
        (event("a", user=""), "'user_id'"),
        (event("a", item=3), "'item_id'"),
        (event("a", timestamp="yesterday"), "'timestamp'"),
        (event("a", timestamp=float("nan")), "'timestamp'"),
        (event("a", value="much"), "'value'"),
        (event("a", colour="red"), "unknown field 'colour'"),
        (event("a", user="nul\x00byte"), "NUL"),
        (event("a", user="\ud800"), "lone surrogate"),
    ]
    for bad, named in cases:
        with pytest.raises(StoreError, match=named):
            store.add_events([event("ok"), bad])
    assert isinstance(StoreError("x"), RecscopeError)
    assert store.history("u1") == []


def test_timestamps_iso_or_epoch_and_history_order(store):
    store.add_events(
        [
            event("late", item="c", timestamp="2024-05-01T12:00:00Z"),
            event("tie-1", item="a", timestamp=1714564800 - 60, value=2.5),
            event("tie-2", item="b", timestamp="2024-05-01T11:59:00+00:00"),
            event("other-user", user="u2", item="z", timestamp=0),
        ]
    )
    store.add_events(event("tie-3", item="d", timestamp="2024-05-01T11:59:00"))  # no zone: UTC
    history = store.history("u1")
    assert [e.event_id for e in history] == ["tie-1", "tie-2", "tie-3", "late"]
    assert [e.timestamp for e in history] == [1714564740.0] * 3 + [1714564800.0]
    assert history[0].value == 2.5 and history[1].value is None
    assert history[0].event == "purchase"
    assert store.history("nobody") == []


def test_unicode_ids_are_kept_exactly(store):
    for n, uid in enumerate(UNICODE_IDS):
        store.add_events(event(uid, user=uid, item=uid, timestamp=n))
        store.put_item(uid, title=uid, attributes={uid[:50]: [uid, 1, 2.5, True]})
        store.log_served(f"r{n}", uid, "v1", [(uid, 0.5)])
        store.add_feedback(f"r{n}", uid, uid, "dismiss")
    assert store.add_events([event(uid, user=uid, item=uid, timestamp=n) for n, uid in enumerate(UNICODE_IDS)]) == (
        0,
        len(UNICODE_IDS),
    )
    for n, uid in enumerate(UNICODE_IDS):
        (got,) = store.history(uid)
        assert (got.event_id, got.user_id, got.item_id) == (uid, uid, uid)
        item = store.get_item(uid)
        assert item.item_id == uid and item.title == uid and item.attributes == {uid[:50]: [uid, 1, 2.5, True]}
        assert store.dismissed(uid) == {uid}
        assert store.served(f"r{n}").items == [(uid, 0.5)]
    assert store.history("e\u0301 vs \u00e9".upper()) == []


def test_forget_removes_events_served_lists_and_feedback(store):
    store.add_events([event("a1", user="alice"), event("a2", user="alice"), event("b1", user="bob")])
    store.log_served("ra", "alice", "v1", [("i1", 0.9), ("i2", 0.1)])
    store.log_served("rb", "bob", "v1", [("i1", 0.9)])
    store.log_served("anon", None, "v1", [("i3", 0.4)])
    store.add_feedback("ra", "alice", "i2", "dismiss")
    store.add_feedback("ra", "alice", "i1", "click")
    store.add_feedback("anon", "alice", "i3", "explanation_helpful")
    store.add_feedback("rb", "bob", "i1", "purchase")
    assert store.forget("alice") == {"events": 2, "served": 1, "feedback": 3}
    assert store.history("alice") == [] and store.dismissed("alice") == set()
    assert store.served("ra") is None
    assert store.served("anon").feedback == []
    assert [e.event_id for e in store.history("bob")] == ["b1"]
    assert store.served("rb").feedback == [("bob", "i1", "purchase")]
    assert store.forget("alice") == {"events": 0, "served": 0, "feedback": 0}
    store.add_events(event("a1", user="alice"))  # forgotten ids may come again
    assert len(store.history("alice")) == 1


def test_items_put_get_update(store):
    assert store.get_item("new-1") is None
    assert store.put_item("new-1", "Trail shoe", {"brand": "Acme", "tags": ["run", "trail"], "size": 42})
    first = store.get_item("new-1")
    assert first.title == "Trail shoe" and first.attributes == {"brand": "Acme", "tags": ["run", "trail"], "size": 42}
    assert store.put_item("new-0", "Sock", {})
    assert not store.put_item("new-1", "Trail shoe v2", {"brand": "Acme"})
    second = store.get_item("new-1")
    assert second.title == "Trail shoe v2" and second.attributes == {"brand": "Acme"}
    assert second.added_at == first.added_at and second.updated_at >= first.updated_at
    assert [i.item_id for i in store.items_added()] == ["new-1", "new-0"]
    with pytest.raises(StoreError, match="'title'"):
        store.put_item("new-2", "", {})
    with pytest.raises(StoreError, match="attribute 'price'"):
        store.put_item("new-2", "Hat", {"price": {"eur": 3}})
    with pytest.raises(StoreError, match="'attributes'"):
        store.put_item("new-2", "Hat", ["a"])


def test_served_lists_join_feedback(store):
    store.log_served("req-1", "u1", "v7", [("i1", 3.5), ("i2", 2.25), ("i3", -1.0)])
    store.add_feedback("req-1", "u1", "i2", "click")
    store.add_feedback("req-1", "u1", "i2", "explanation_unhelpful")
    shown = store.served("req-1")
    assert (shown.user_id, shown.model_version) == ("u1", "v7")
    assert shown.items == [("i1", 3.5), ("i2", 2.25), ("i3", -1.0)]
    assert shown.feedback == [("u1", "i2", "click"), ("u1", "i2", "explanation_unhelpful")]
    assert store.served("req-unknown") is None
    with pytest.raises(StoreError, match="already logged"):
        store.log_served("req-1", "u1", "v7", [])
    with pytest.raises(StoreError, match="'action'"):
        store.add_feedback("req-1", "u1", "i1", "love")
    with pytest.raises(StoreError, match="'item_id'.*not in that list"):
        store.add_feedback("req-1", "u1", "i9", "click")
    with pytest.raises(StoreError, match="'user_id'.*not the user"):
        store.add_feedback("req-1", "u2", "i1", "click")


def test_helpful_shares_per_version_and_method(store):
    store.log_served("a1", "u1", "v1", [("i1", 1.0), ("i2", 0.5)], method="occlusion")
    store.log_served("a2", "u2", "v1", [("i1", 1.0)], method="occlusion")
    store.log_served("b1", "u1", "v1", [("i1", 1.0), ("i3", 0.2)], method="attention")
    store.log_served("c1", "u1", "v2", [("i1", 1.0), ("i2", 0.5)], method="occlusion")
    store.log_served("n1", "u3", "v2", [("i1", 1.0)])  # no explanations shown
    store.log_served("q1", "u3", "v3", [("i1", 1.0)], method="occlusion")  # served, never voted on
    for request, user, item, action in [
        ("a1", "u1", "i1", "explanation_helpful"),
        ("a1", "u1", "i1", "explanation_helpful"),  # the same item marked the same twice: one vote
        ("a1", "u1", "i2", "explanation_unhelpful"),
        ("a2", "u2", "i1", "explanation_helpful"),
        ("a2", "u2", "i1", "click"),  # not a vote on the explanation
        ("b1", "u1", "i3", "explanation_unhelpful"),
        ("c1", "u1", "i1", "explanation_unhelpful"),
        ("c1", "u1", "i2", "explanation_unhelpful"),
        ("n1", "u3", "i1", "explanation_helpful"),
    ]:
        store.add_feedback(request, user, item, action)
    got = [(s.version, s.method, s.helpful, s.unhelpful, s.lists, s.share) for s in store.helpful_shares()]
    assert got == [
        ("v1", "attention", 0, 1, 1, 0.0),
        ("v1", "occlusion", 2, 1, 2, 2 / 3),
        ("v2", None, 1, 0, 1, 1.0),
        ("v2", "occlusion", 0, 2, 1, 0.0),
        ("v3", "occlusion", 0, 0, 1, None),
    ]
    assert [(s.method, s.votes) for s in store.helpful_shares("v2")] == [(None, 1), ("occlusion", 2)]
    assert store.served("b1").method == "attention" and store.served("n1").method is None
    with pytest.raises(StoreError, match="'method'"):
        store.log_served("x1", "u1", "v1", [("i1", 1.0)], method="")


def test_feedback_for_unknown_request_is_refused(store):
    for request_id in ["never-served", "x" * 500]:
        with pytest.raises(StoreError, match="'request_id' names no served list"):
            store.add_feedback(request_id, "u1", "i1", "click")
    assert store.dismissed("u1") == set()


def test_dismissed_set(store):
    store.log_served("r1", "u1", "v1", [("a", 1.0), ("b", 0.5), ("c", 0.1)])
    store.log_served("r2", None, "v1", [("d", 1.0)])
    store.log_served("r3", "u2", "v1", [("a", 1.0)])
    store.add_feedback("r1", "u1", "a", "dismiss")
    store.add_feedback("r1", "u1", "b", "click")
    store.add_feedback("r2", "u1", "d", "dismiss")
    store.add_feedback("r1", "u1", "a", "dismiss")
    store.add_feedback("r3", "u2", "a", "explanation_unhelpful")
    assert store.dismissed("u1") == {"a", "d"}
    assert store.dismissed("u2") == set()


def test_migrated_schema_matches_the_models(store_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    Store.open(store_url).close()
    Store.open(store_url).close()  # an up-to-date database opens again unchanged
    engine = create_engine(store_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert context.get_current_revision() == "0006"
    finally:
        engine.dispose()


def test_an_older_schema_is_upgraded_and_a_newer_one_refused(store_url):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    engine = create_engine(store_url)
    try:
        with engine.begin() as connection:  # a database from before the store existed
            connection.execute(text("CREATE TABLE unrelated (x INTEGER)"))
        with Store.open(store_url) as store:
            assert store.add_events(event("e1")) == (1, 0)
        with engine.begin() as connection:  # back to before the first revision, then up again on open
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
            assert not inspect(connection).has_table("events")
        with Store.open(store_url) as store:
            assert store.history("u1") == [] and store.add_events(event("e1")) == (1, 0)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(StoreError, match="schema is not one this recscope knows"):
            Store.open(store_url)
    finally:
        engine.dispose()


def test_sqlite_store_in_the_run_directory_is_durable_by_configuration(tmp_path):
    with pytest.raises(StoreError, match="no such run directory"):
        Store.for_run(tmp_path / "missing")
    with Store.for_run(tmp_path) as store:
        store.add_events(event("e1"))
        with store.engine.connect() as connection:
            pragmas = {p: connection.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "synchronous")}
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
        assert pragmas == {"journal_mode": "wal", "synchronous": 2} and foreign_keys == 1  # 2: FULL
    assert (tmp_path / STORE_FILE).is_file()


def test_bad_url_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="not usable"):
        Store.open("nonsense://x")
    with pytest.raises(StoreError, match="SQLite or PostgreSQL only"):
        Store.open("mysql+pymysql://me@host/db")
    with pytest.raises(StoreError, match=r"nonsense://me:\*\*\*@host/db") as unusable:
        Store.open("nonsense://me:pa55word@host/db")
    assert "pa55word" not in str(unusable.value)
    with pytest.raises(StoreError, match="cannot be opened"):
        Store.open(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'store.sqlite'}")
    with pytest.raises(StoreError, match=r"x:\*\*\*@127.0.0.1:1/db cannot be opened.*refused") as refused:
        Store.open("postgresql+psycopg://x:secret@127.0.0.1:1/db")
    assert "secret" not in str(refused.value)


WRITER = textwrap.dedent(
    """
    import sys
    from recscope.serve.store import Store
    store = Store.open(sys.argv[1])
    n = 0
    while True:
        batch = [{"event_id": f"k{n}-{j}", "user_id": "killed", "item_id": f"i{n}-{j}", "timestamp": n, "value": j}
                 for j in range(3)]
        store.add_events(batch)
        print(n, flush=True)
        n += 1
    """
)


def test_acknowledged_events_survive_kill_9(store_url, tmp_path):
    """A writer killed with SIGKILL mid-stream: every batch it acknowledged is stored, whole."""
    Store.open(store_url).close()  # migrated before the clock starts
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, store_url], stdout=subprocess.PIPE, text=True, env=env)
    acknowledged = []
    deadline = time.monotonic() + 30
    try:
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        acknowledged += [int(line) for line in writer.stdout.read().split()]  # printed before the kill
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.stdout.close()
    assert len(acknowledged) >= 40, "the writer did not get going"
    with Store.open(store_url) as store:
        stored = {e.event_id: e for e in store.history("killed")}
    for n in acknowledged:
        for j in range(3):
            got = stored[f"k{n}-{j}"]
            assert (got.item_id, got.timestamp, got.value) == (f"i{n}-{j}", n, j)
    assert len(stored) % 3 == 0  # batches are all or nothing


def test_concurrent_writers_and_openers_agree(store_url):
    """Services opening a fresh store at once, then posting overlapping batches from threads."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: Store.open(store_url), range(4)))
    try:
        batches = [
            [event(f"c{(w * 7 + n) % 60}", item=f"i{(w * 7 + n) % 60}", timestamp=1) for n in range(30)]
            for w in range(8)
        ]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda wb: stores[wb[0] % 4].add_events(wb[1]), enumerate(batches)))
        assert sum(accepted for accepted, _ in results) == len({e["event_id"] for b in batches for e in b})
        assert sum(a + d for a, d in results) == sum(len(b) for b in batches)
        assert len(stores[0].history("u1")) == sum(accepted for accepted, _ in results)
    finally:
        for s in stores:
            s.close()


def test_full_batches_of_distinct_users_at_once(store_url):
    """Four batches of the largest size, 10,000 shoppers each, posted at once: every event stored.
    (A lock per user, taken to order writes against a forget, ran PostgreSQL's lock table out:
    "out of shared memory".)"""
    from concurrent.futures import ThreadPoolExecutor

    with Store.open(store_url) as store:
        batches = [[event(f"b{w}-{n}", user=f"U{w}-{n}") for n in range(MAX_BATCH)] for w in range(4)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(store.add_events, batches))
        assert results == [(MAX_BATCH, 0)] * 4
        assert store.history("U3-9999")[0].event_id == "b3-9999"


def test_in_memory_sqlite_is_refused():
    with pytest.raises(StoreError, match="in-memory"):
        Store.open("sqlite://")


def test_a_live_history_merges_dismissals_in_time_and_names_the_tombstone(store):
    """Store.live_history, the one query a request makes (SQLite and PostgreSQL): the events and
    the dismissals (at the time they were given, the server's clock) oldest first, the other
    feedback left out, and when the user was last forgotten."""
    store.add_events([event("old", item="a", timestamp=1e9), event("future", item="c", timestamp=4e9)])
    store.log_served("r1", "u1", "v1", [("b", 0.5), ("d", 0.4)])
    store.add_feedback("r1", "u1", "b", "dismiss")
    store.add_feedback("r1", "u1", "d", "click")  # not a dismissal: not in the history
    store.add_events(event("other", user="u2", item="z", timestamp=2e9))
    got, forgotten = store.live_history("u1")
    assert [(e.item_id, e.event) for e in got] == [("a", "purchase"), ("b", "dismiss"), ("c", "purchase")]
    assert got[1].event_id == "r1" and 1e9 < got[1].timestamp < 4e9 and forgotten is None
    store.forget_user("u1")
    store.add_events(event("after", item="e", timestamp=5e9))
    got, forgotten = store.live_history("u1")
    assert [e.item_id for e in got] == ["e"] and forgotten is not None and forgotten > 1e9
    assert store.live_history("nobody") == ([], None)


def test_a_sqlite_writer_is_woken_when_the_other_process_writer_ends(tmp_path):
    """SQLite's own busy handler sleeps in growing steps, so writers that met at its lock waited
    far longer than the writes took (p99 650 ms for a 1.3 ms write, two processes of 8 threads).
    Writers take turns at a kernel lock instead (``<database>.writers``): one held by another
    process holds a write back, and its release lets the write through at once."""
    import fcntl
    import threading

    path = tmp_path / "store.sqlite"
    store = Store.open(f"sqlite:///{path}")
    store.add_events(
        {"event_id": "e1", "user_id": "U1", "item_id": "P1", "timestamp": 1}
    )  # the first write makes the lock file
    other = open(f"{path}.writers", "a+b")  # another process's writer (a file of its own: its own lock)
    fcntl.flock(other, fcntl.LOCK_EX)
    done = threading.Event()
    writer = threading.Thread(
        target=lambda: (
            store.add_events({"event_id": "e2", "user_id": "U2", "item_id": "P2", "timestamp": 2}),
            done.set(),
        )
    )
    writer.start()
    assert not done.wait(0.5), "a write went ahead while another process's writer held its turn"
    released = time.perf_counter()
    fcntl.flock(other, fcntl.LOCK_UN)
    assert done.wait(5)
    assert time.perf_counter() - released < 0.25, "the waiting writer was not woken when the turn ended"
    writer.join()
    other.close()
    assert [e.item_id for e in store.history("U2")] == ["P2"]
    store.close()
