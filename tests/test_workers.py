"""Several workers over one store: `recscope serve --workers N`, and two servers over one PostgreSQL.

Real processes on 127.0.0.1 (tests/servers.py). Which worker answers a request is the kernel's
choice (each worker accepts on the one shared socket), so the checks open a new connection per
request and read ``X-Recscope-Worker`` until every worker has answered.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pg import postgres_server  # noqa: F401  (a fixture)
from recscope import versions
from recscope.cli import app as cli
from recscope.recommend import Recommender
from recscope.run import save_weights
from servers import Server

ROOT = Path(__file__).resolve().parents[1]
SPEC = "synthetic:users=200,items=120,seed=11"
NEW_ITEM = {"title": "Voltra Travel Charger", "attributes": {"brand": "Voltra"}}
# Seconds for an item or a version switch to reach every worker: the bar is 1 s (measured in
# bench/serve_load.py's mixed phase); a test on a loaded CI machine allows more.
WITHIN = 3.0


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str, str]:
    """A tiny run with two versions: the trained one (current) and a second one."""
    out = tmp_path_factory.mktemp("workers") / "run"
    args = ["train", "--data", SPEC, "--out", str(out), "--config", str(ROOT / "configs" / "tiny.yaml")]
    result = CliRunner().invoke(cli, [*args, "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    first = versions.current(out)
    rec = Recommender.load(out)
    with torch.no_grad():
        rec.model.ln_f.bias.add_(0.5)
    save_weights(out.parent / "tuned.safetensors", rec.model)
    second = versions.publish(out, out.parent / "tuned.safetensors", source="fine-tune", parent=first).id
    versions.promote(out, first)  # the trained one is served unless the store says otherwise
    return out, first, second


def get(base: str, path: str, **kwargs) -> httpx.Response:
    """One request on a connection of its own (so the kernel may hand it to any worker)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        return client.get(path, **kwargs)


def worker_of(response: httpx.Response) -> int:
    return int(response.headers["x-recscope-worker"])


def until_every_worker(base: str, workers: set[int], path: str, check, within: float) -> float:
    """Seconds until ``check(response)`` held on a response from each of ``workers``; fails after ``within``."""
    start, done = time.monotonic(), set()
    while done != workers:
        response = get(base, path)
        if check(response):
            done.add(worker_of(response))
        elapsed = time.monotonic() - start
        assert elapsed < within, f"after {elapsed:.2f} s only workers {sorted(done)} of {sorted(workers)} agree"
    return time.monotonic() - start


def answered_by_all(base: str, n: int, path: str = "/health/ready", tries: int = 400) -> set[int]:
    seen: set[int] = set()
    for _ in range(tries):
        seen.add(worker_of(get(base, path)))
        if len(seen) == n:
            break
    assert len(seen) == n, f"only workers {sorted(seen)} answered {tries} requests"
    return seen


def test_workers_share_the_catalog_and_the_version_and_a_killed_one_is_replaced(run, tmp_path):
    out, first, second = run
    rec = Recommender.load(out)
    user = rec.data.user_ids[3]
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with Server(out, "--workers", "2", "--db", db, log=tmp_path / "serve.log", ready_in=120) as server:
        pids = set(server.workers())
        assert len(pids) == 2
        assert answered_by_all(server.base, 2) == pids
        recs = f"/users/{user}/recommendations"
        assert {get(server.base, recs).json()["model_version"] for _ in range(10)} == {first}

        # An item PUT through one worker is known to every worker within a second.
        with httpx.Client(base_url=server.base, timeout=30) as client:
            put = client.put("/items/NEW-1", json=NEW_ITEM)
            assert put.status_code == 201 and put.json()["recommendable"]
            taken_by = worker_of(put)
        explained = f"/users/{user}/recommendations/NEW-1/explanation"
        assert get(server.base, explained).status_code in (200, 404)  # 404: asked before the others caught up
        took = until_every_worker(server.base, pids, explained, lambda r: r.status_code == 200, WITHIN)
        print(f"item NEW-1 (PUT through worker {taken_by}) recommendable from every worker after {took:.2f} s")

        # A version switch through one worker: every worker serves it within a second, and every
        # answer names exactly one version.
        with httpx.Client(base_url=server.base, timeout=30) as client:
            assert client.put("/model", json={"version": second}).json()["version"] == second
        took = until_every_worker(server.base, pids, recs, lambda r: r.json()["model_version"] == second, WITHIN)
        print(f"version {second} served by every worker after {took:.2f} s")

        # /metrics adds up every worker's counts, whichever worker answers it.
        # The kernel picks the accepting worker, so ask until both have answered (at least 30 times).
        live: list[int] = []
        while len(live) < 30 or set(live) != pids:
            live.append(worker_of(get(server.base, "/health/live")))
            assert len(live) < 400, f"only workers {sorted(set(live))} answered {len(live)} requests"
        for _ in range(2):  # ask each of (probably) both workers
            counted = re.search(
                r'recscope_http_requests_total\{method="GET",route="/health/live",status="200"\} (\S+)',
                get(server.base, "/metrics").text,
            )
            assert counted is not None and float(counted.group(1)) == len(live)
        # ... and how long each worker took to apply the store's changes: the item and the switch,
        # once by each worker (the one that wrote it too), each soon (the bar is 1 s; 2 s here,
        # where the tests share the machine).
        text = get(server.base, "/metrics").text
        for kind in ("item", "model"):
            count = re.search(rf'recscope_store_change_apply_seconds_count\{{kind="{kind}"\}} (\S+)', text)
            within = re.search(rf'recscope_store_change_apply_seconds_bucket\{{kind="{kind}",le="2.0"\}} (\S+)', text)
            assert count is not None and float(count.group(1)) == 2, (kind, count)
            assert within is not None and float(within.group(1)) == 2, f"a worker took over 2 s to apply the {kind}"

        # Kill a worker with SIGKILL while clients keep asking and posting: the other answers,
        # a new worker takes its place, and no acknowledged event is lost.
        acknowledged, failures, stop = [], [], threading.Event()

        def client_loop(name: str) -> None:
            with httpx.Client(base_url=server.base, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    event = {"event_id": f"{name}-{n}", "user_id": "U-kill", "item_id": rec.data.item_ids[1 + n % 50]}
                    try:
                        response = client.post("/events", json={"events": [event]})
                        if response.status_code == 200:
                            acknowledged.append(event["event_id"])
                        else:
                            failures.append(response.status_code)
                    except httpx.TransportError as e:  # in flight on the killed worker
                        failures.append(type(e).__name__)

        threads = [threading.Thread(target=client_loop, args=(f"c{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            now = set(server.workers())
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, f"no worker replaced the killed one: {now}"
            time.sleep(0.2)
        replaced = answered_by_all(server.base, 2)
        stop.set()
        for t in threads:
            t.join()
        assert victim not in replaced and len(acknowledged) > 20
        assert len(failures) <= 4, f"only requests in flight on the killed worker may fail: {failures}"
        # The replacement serves the switched version (from the store), not the command line's.
        assert {get(server.base, recs).json()["model_version"] for _ in range(20)} == {second}
        history = get(server.base, "/users/U-kill/history").json()
        stored = [e for e in history["items"] if e["source"] == "store"]
        assert len(stored) >= len(acknowledged), "every acknowledged event is in the store"


def test_two_servers_over_one_postgresql_see_each_others_items_events_and_version(run, tmp_path, request):
    """Two hosts on one machine: two `recscope serve` processes, two ports, one PostgreSQL."""
    out, first, second = run
    url = request.getfixturevalue("postgres_server").new_database()
    user = Recommender.load(out).data.user_ids[7]
    logs = tmp_path / "a.log", tmp_path / "b.log"
    with (
        Server(out, "--workers", "1", "--db", url, log=logs[0]) as a,
        Server(out, "--workers", "1", "--db", url, log=logs[1]) as b,
    ):
        (b_pid,) = answered_by_all(b.base, 1)
        assert httpx.put(f"{a.base}/items/PG-NEW", json=NEW_ITEM, timeout=30).status_code == 201
        item = f"/users/{user}/recommendations/PG-NEW/explanation"
        took = until_every_worker(b.base, {b_pid}, item, lambda r: r.status_code == 200, WITHIN)
        print(f"an item PUT on server A is recommendable on server B after {took:.2f} s")

        event = {"event_id": "pg-w-1", "user_id": "U-pg", "item_id": "PG-NEW"}
        assert httpx.post(f"{a.base}/events", json={"events": [event]}, timeout=30).json()["accepted"] == 1
        history = get(b.base, "/users/U-pg/history").json()
        assert [e["item_id"] for e in history["items"]] == ["PG-NEW"], "B reads the event A stored"

        assert httpx.put(f"{a.base}/model", json={"version": second}, timeout=60).json()["version"] == second
        recs = f"/users/{user}/recommendations"
        until_every_worker(b.base, {b_pid}, recs, lambda r: r.json()["model_version"] == second, WITHIN)
        ready = get(b.base, "/health/ready").json()
        assert ready["status"] == "ready" and ready["model_version"] == second
        assert ready["catalog_seq"] == ready["store_seq"] and ready["lag_seconds"] == 0
        # A server that starts now serves the version the store says, whatever the run's current one is.
    with Server(out, "--workers", "1", "--db", url, log=tmp_path / "c.log") as c:
        assert get(c.base, recs).json()["model_version"] == second


def test_a_catalog_swap_under_concurrent_readers_is_never_seen_half_done(run):
    """Readers go on answering while items are added: each answer comes from one whole snapshot."""
    out, _, _ = run
    rec = Recommender.load(out)
    history = [rec.data.item_ids[i] for i in (5, 9, 14)]
    errors, answers, stop = [], [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            snapshot = rec.snapshot
            try:
                n = len(snapshot.data.item_ids)
                assert snapshot.table.shape[0] == n == snapshot.model.cfg.n_items + 1
                assert snapshot.model.item_emb.weight.shape[0] == n
                answers.append([r.item_id for r in rec.recommend(history=history, k=20)])
            except Exception as e:  # noqa: BLE001  (collected and reported below)
                errors.append(repr(e))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    twin = rec.data.item_ids[9]
    for i in range(40):
        old = rec.snapshot
        rec.set_items([(f"ADDED-{i}", f"added {i}", {})])
        assert len(old.data.item_ids) == old.table.shape[0], "the old snapshot is left as it was"
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[:3]
    assert len(answers) > 10 and all(len(a) == 20 for a in answers)
    assert twin in rec.data.item_ids and rec.data.find("ADDED-39") == len(rec.data.item_ids) - 1
    np.testing.assert_array_equal(
        rec.snapshot.table[1:121].numpy(), Recommender.load(out).snapshot.table[1:121].numpy()
    )
