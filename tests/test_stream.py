"""bench/stream.py's pipeline in its smoke size: three arms behind real ``recscope serve``
processes score a replayed stream before each event is posted; a real fine-tune job and a
retraining run at the update point. The bench's figures belong to bench/results; this asserts
only that the pipeline holds."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import stream  # noqa: E402

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def test_the_drifting_shop_splits_at_its_change():
    line = stream.timeline(stream.SMOKE["data"], 0.5, 300)
    assert line.change is not None
    assert line.train["timestamp"].max() <= line.change.time < line.stream["timestamp"].min()
    assert not line.train["item_id"].is_in(list(line.change.items)).any()
    assert line.stream.height == 300 and line.stream["timestamp"].is_sorted()
    assert {"launch", "fashion"} <= set(line.stream["mechanism"])
    assert line.catalog.height == 120 + 16  # the shop's items and the launched brand's


@pytest.mark.skipif(not ML100K.exists(), reason="no MovieLens-100K copy in ../shared/data")
def test_movielens_splits_by_time_at_the_share():
    line = stream.timeline(f"movielens:{ML100K}", 0.5, 1000)
    assert line.train.height == 50_000 and line.stream.height == 1000
    assert line.train["timestamp"].max() <= line.stream["timestamp"].min()
    assert line.catalog.height == 1682 and line.catalog.schema["genre"] == pl.String  # "Action|Comedy"


def test_every_training_holds_out_what_one_update_holds_out_not_a_share_of_all():
    def held(events: int, every: int) -> tuple[float, float]:
        split, valid, test = stream.split_settings(events, every)
        assert split == "data.split=temporal"
        return (1 - float(valid.split("=")[1])) * events, (1 - float(test.split("=")[1])) * events

    assert held(180_000, 2000) == pytest.approx((300, 150))  # 2% would be 3,600: more than an update brings
    assert held(30_000, 2000) == pytest.approx((300, 150))
    assert held(1000, 60) == pytest.approx((20, 10))  # at least finetune.min_cases (stream.held_out)


def test_batches_never_hold_one_user_twice():
    events = pl.DataFrame({"user_id": ["a", "b", "a", "c", "c", "d"]})
    assert stream.batches(events, 0, 6) == [[0, 1], [2, 3], [4, 5]]
    assert stream.batches(events, 1, 4) == [[1, 2, 3]]


def test_smoke_stream_scores_before_posting_and_updates_two_arms(tmp_path):
    args = stream.parse(["--smoke", "--out", str(tmp_path / "smoke.json")])
    result = stream.run_bench(args)
    every, events = args.every, args.events
    assert result["stream_events"] == events and result["server_problems"] == {}
    assert result["change"]["items"] == 16
    assert result["change"]["unused_fields"] == 16  # the new brand's name: no trained item has it

    frozen, tuned, retrained, attributes = (result[a] for a in stream.ARMS)
    for arm in (frozen, tuned, retrained, attributes):
        assert arm["cases"] == events
        assert sum(arm["lists_by_source"].values()) == events
        # Were an event posted before it is scored, its item would be owned, left out of the
        # list, and every rank a miss.
        assert 0.0 < arm["NDCG@10"] <= arm["HR@10"] <= 1.0
        assert set(arm["windows"][0]["launch"]) == {"cases", "HR@10", "NDCG@10"}
    assert attributes["lists_by_version"] == {"attributes-only": events} and attributes["seconds"] == 0
    new = result["new_items"]  # the launched brand's purchases, before and after the first update
    assert set(new) == {*stream.ARMS, "met"} and isinstance(new["met"], bool)
    launches = [new[a]["before_first_update"]["cases"] for a in stream.ARMS]
    assert len(set(launches)) == 1 and launches[0] > 0
    # Before the first update the three arms are one model reading one history: the same lists.
    head = every // args.window
    assert frozen["windows"][:head] == tuned["windows"][:head] == retrained["windows"][:head]

    (base,) = frozen["lists_by_version"]
    assert frozen["lists_by_version"] == {base: events} and frozen["updates"] == [] and frozen["seconds"] == 0

    (job,) = tuned["updates"]
    assert job["at"] == every and job["events"] == every  # the job learned from the events posted so far
    assert job["verdict"] in ("promoted", "kept") and job["wall_seconds"] >= job["command_seconds"] > 0
    assert job["cpu_seconds"] > 0  # the job's process, reaped by the worker
    served = {base: every, job["version"]: events - every} if job["verdict"] == "promoted" else {base: events}
    assert tuned["lists_by_version"] == served

    (again,) = retrained["updates"]
    assert again["at"] == every and again["events"] == result["train_events"] + every
    assert sorted(retrained["lists_by_version"].values()) == sorted([every, events - every])
    assert retrained["lists_by_version"][base] == every  # then the new run's version
    assert result["retrain"]["seconds"] == again["cpu_seconds"] > 0
    bar = result["bar"]
    assert {"retrain_gain", "finetune_gain", "recovered_share", "compute_share", "met"} <= set(bar)
    # the job's start-up (Python, torch) is measured by the job itself and taken off both arms
    startup = job["timings"]["startup_cpu"]
    assert 0 < startup < job["cpu_seconds"] and job["timings"]["train_cpu"] <= job["timings"]["cpu"]
    assert bar["finetune_cpu_without_startup"] == pytest.approx(job["cpu_seconds"] - startup, abs=0.02)
    assert bar["retrain_cpu_without_startup"] == pytest.approx(again["cpu_seconds"] - startup, abs=0.02)


def test_the_attributes_arm_lists_unowned_items_by_content_and_reads_each_posted_event(tmp_path):
    line = stream.timeline(stream.SMOKE["data"], 0.5, 50)
    catalog = tmp_path / "catalog.csv"
    line.catalog.write_csv(catalog)
    arm = stream.AttributesArm(line, catalog, tmp_path)
    user = str(line.train["user_id"][0])
    owned = set(line.train.filter(pl.col("user_id") == user)["item_id"].cast(pl.String))
    listed = [x["item_id"] for x in arm.top(user)["items"]]
    assert len(listed) == stream.K and not owned & set(listed)
    assert arm.top("nobody")["items"] == []  # no history, no content to match: a miss
    first = listed[0]
    assert arm.post_events([{"user_id": user, "item_id": first}]) == 1
    assert first not in [x["item_id"] for x in arm.top(user)["items"]], "a posted item is owned"
