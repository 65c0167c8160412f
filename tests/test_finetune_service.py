"""Fine-tuning as a job of the service: ``POST /model/finetune`` runs ``recscope finetune`` as a
process of its own, ``GET /model/jobs/{id}`` follows it, ``GET /model`` lists what it made.

The jobs run the real command on a copy of the tiny run, with the store a SQLite file of the
test; the events posted first are what the fine-tune learns from.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recscope import versions
from recscope.recommend import Recommender
from recscope.serve import jobs
from recscope.serve.app import create_app
from recscope.serve.settings import Settings
from recscope.serve.store import JOB_FAILED, JOB_RUNNING, Store

KEY = {"X-API-Key": "k"}
USERS = 40  # store users with new events: above finetune.min_cases held-out cases
JOB_SECONDS = 240  # a tiny fine-tune takes seconds; a loaded machine may take much longer


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run (the jobs write versions into it)."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    return out


def set_finetune(run: Path, **settings: float) -> None:
    """The run's ``finetune`` config, as ``recscope finetune`` reads it from run.json."""
    path = run / "run.json"
    raw = json.loads(path.read_text())
    raw["config"]["finetune"].update(settings)
    path.write_text(json.dumps(raw))


def client_over(run: Path, tmp_path: Path) -> TestClient:
    settings = Settings(run=run, db=f"sqlite:///{tmp_path / 'store.sqlite'}", api_key="k", follow_every=0.05)
    return TestClient(create_app(settings))


def post_events(client: TestClient, run: Path) -> None:
    """Three new purchases for each of ``USERS`` users: something to learn and to measure on."""
    rec = Recommender.load(run)
    items = rec.data.item_ids[1:]
    events = [
        {"event_id": f"e{u}-{i}", "user_id": rec.data.user_ids[u + 1], "item_id": items[(7 * u + 3 * i) % len(items)]}
        for u in range(USERS)
        for i in range(3)
    ]
    answer = client.post("/events", json={"events": events}, headers=KEY)
    assert answer.status_code == 200, answer.text


def wait_for(client: TestClient, job_id: str) -> tuple[dict, list[str]]:
    """Poll the job until it ends: its last answer and every progress stage seen on the way."""
    stages: list[str] = []
    deadline = time.monotonic() + JOB_SECONDS
    while True:
        answer = client.get(f"/model/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        if not stages or stages[-1] != body["progress"]["stage"]:
            stages.append(body["progress"]["stage"])
        if body["status"] != JOB_RUNNING:
            return body, stages
        assert time.monotonic() < deadline, f"job {job_id} still running after {JOB_SECONDS} s: {body}"
        time.sleep(0.05)


def served_version(client: TestClient, user: str, want: str, within: float = 5.0) -> str:
    """The model_version of the user's recommendations, once it is ``want`` (or after ``within`` s)."""
    deadline = time.monotonic() + within
    while True:
        seen = client.get(f"/users/{user}/recommendations").json()["model_version"]
        if seen == want or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


# promoted: any candidate is within a tolerance of 1 NDCG@10; kept: too few held-out cases to measure on
@pytest.mark.parametrize("verdict, settings", [("promoted", {"tolerance": 1.0}), ("kept", {"min_cases": 10_000})])
def test_a_finetune_job_reports_progress_then_a_version_listed_with_its_lineage(run, tmp_path, verdict, settings):
    set_finetune(run, **settings)
    first = versions.current(run)
    user = Recommender.load(run).data.user_ids[1]
    with client_over(run, tmp_path) as client:
        post_events(client, run)
        assert client.post("/model/finetune", json={}).status_code == 401, "the write key is needed"
        assert client.post("/model/finetune", json={"budget": -1}, headers=KEY).status_code == 422
        assert client.post("/model/finetune", json={"epochs": 2}, headers=KEY).status_code == 422

        started = client.post("/model/finetune", json={"budget": 60}, headers=KEY)
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["status"] == "running" and job["job_id"] == job["job"] and job["kind"] == "finetune"
        assert started.headers["location"] == f"/model/jobs/{job['job_id']}"
        assert job["request"] == {"since": None, "budget": 60} and job["result"] is None

        again = client.post("/model/finetune", json={}, headers=KEY)
        assert again.status_code == 409 and job["job_id"] in again.json()["error"], again.text

        done, stages = wait_for(client, job["job_id"])
        assert done["status"] == "succeeded", done
        assert stages[-1] == "done" and len(stages) >= 2, f"progress was reported on the way: {stages}"
        assert done["progress"]["done"] == 1.0 and done["finished"] >= done["started"]
        result = done["result"]
        assert result["parent"] == first and result["verdict"] == verdict and result["reason"], result
        assert result["lineage"]["parent"] == first and result["lineage"]["events"] == 3 * USERS, result
        new = result["version"]

        model = client.get("/model").json()
        listed = {v["id"]: v for v in model["versions"]}
        assert set(listed) == {first, new}
        assert listed[first]["source"] == "train" and listed[first]["promoted"] and listed[first]["verdict"] is None
        made = listed[new]
        assert made["parent"] == first and made["source"] == "finetune"
        assert (made["verdict"], made["reason"], made["lineage"]) == (
            result["verdict"],
            result["reason"],
            result["lineage"],
        )
        assert made["metrics"]["candidate"] == result["metrics"]["candidate"]
        assert made["details"]["lineage"] == made["lineage"], "version.json's details are listed whole too"

        if verdict == "promoted":  # the command switched the store: this worker follows it
            assert made["promoted"] and model["current"] == new
            assert served_version(client, user, new) == new
            assert client.get("/model").json()["version"] == new
            assert [v["id"] for v in client.get("/model").json()["versions"] if v["serving"]] == [new]
        else:  # kept: listed, not served; PUT /model serves it all the same
            assert not made["promoted"] and model["current"] == first and model["version"] == first
            assert served_version(client, user, first, within=0.5) == first
            switched = client.put("/model", json={"version": new}, headers=KEY).json()
            assert switched["version"] == new and switched["current"] == first
            assert client.get(f"/users/{user}/recommendations").json()["model_version"] == new
        back = client.put("/model", json={"version": first}, headers=KEY).json()
        assert back["version"] == first, "rolled back to the trained version"
        assert client.get(f"/users/{user}/recommendations").json()["model_version"] == first
        following = client.post("/model/finetune", json={}, headers=KEY)
        assert following.status_code == 202, "the next one may start once the first has ended"
        wait_for(client, following.json()["job_id"])  # not left running past the test


def test_a_killed_job_is_reported_failed_and_the_next_one_starts_cleanly(run, tmp_path):
    first = versions.current(run)
    with client_over(run, tmp_path) as client:
        post_events(client, run)
        job = client.post("/model/finetune", json={}, headers=KEY).json()
        assert job["pid"], job
        os.kill(job["pid"], signal.SIGKILL)  # half-way: it is still importing, loading or training
        done, _ = wait_for(client, job["job_id"])
        assert done["status"] == "failed" and "SIGKILL" in done["error"], done
        assert done["result"] is None and done["finished"] is not None
        assert client.get("/model").json()["version"] == first and versions.current(run) == first

        retry = client.post("/model/finetune", json={}, headers=KEY)
        assert retry.status_code == 202, retry.text
        done, _ = wait_for(client, retry.json()["job_id"])
        assert done["status"] == "succeeded", done
        assert done["result"]["parent"] == first


def test_a_job_whose_process_is_gone_without_a_result_is_failed_by_any_worker(tmp_path):
    """The worker that started a job died with it: whichever worker is asked next ends it."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folder = tmp_path / "jobs" / "j1"
    folder.mkdir(parents=True)
    (folder / jobs.STDERR).write_text("Traceback ...\nMemoryError\n")
    with Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:
        store.start_job("j1", jobs.FINETUNE, {"since": None, "budget": None}, socket.gethostname(), str(folder))
        store.job_started("j1", gone.pid)
        with pytest.raises(Exception, match="job j1 is running"):
            store.start_job("j2", jobs.FINETUNE, {}, socket.gethostname(), str(folder))
        state = jobs.state(store, "j1")
        assert state is not None and state.job.status == JOB_FAILED
        assert f"pid {gone.pid}" in state.job.error and "MemoryError" in state.job.error
        assert not store.finish_job("j1", "succeeded"), "an ended job is not ended twice"
        assert jobs.state(store, "nope") is None


def test_an_unknown_job_is_404(run, tmp_path):
    with client_over(run, tmp_path) as client:
        missing = client.get("/model/jobs/feedfeed")
        assert missing.status_code == 404 and "feedfeed" in missing.json()["error"] and missing.json()["fix"]


def test_a_job_is_seen_by_every_worker_and_its_promotion_reaches_them_all(run, tmp_path):
    """`recscope serve --workers 2`: whichever worker is asked follows the job, and the version the
    job promotes is served by both (the store's switch, serve.follow)."""
    import httpx2 as httpx

    from servers import Server

    set_finetune(run, tolerance=1.0)
    first = versions.current(run)
    user = Recommender.load(run).data.user_ids[1]
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    env = {"FT_KEY": "k"}
    args = ("--workers", "2", "--db", db, "--api-key-env", "FT_KEY")
    with Server(run, *args, log=tmp_path / "serve.log", env=env, ready_in=120) as server:

        def get(path: str) -> httpx.Response:  # a connection of its own: any worker may take it
            with httpx.Client(base_url=server.base, timeout=30) as client:
                return client.get(path)

        with httpx.Client(base_url=server.base, timeout=30) as client:
            post_events(client, run)  # type: ignore[arg-type]
            started = client.post("/model/finetune", json={}, headers=KEY)
        assert started.status_code == 202, started.text
        job_id, asked = started.json()["job_id"], set()
        deadline = time.monotonic() + JOB_SECONDS
        while (answer := get(f"/model/jobs/{job_id}")).json()["status"] == JOB_RUNNING:
            asked.add(answer.headers["x-recscope-worker"])
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.05)
        result = answer.json()["result"]
        assert answer.json()["status"] == "succeeded" and result["verdict"] == "promoted", answer.text
        workers, new = {str(p) for p in server.workers()}, result["version"]
        assert new != first
        served: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while set(served) != workers or set(served.values()) != {new}:
            answer = get(f"/users/{user}/recommendations")
            served[answer.headers["x-recscope-worker"]] = answer.json()["model_version"]
            assert time.monotonic() < deadline, f"workers serve {served}, not all {new}"
        print(f"job {job_id} followed through workers {sorted(asked)}; {new} served by {sorted(served)}")
