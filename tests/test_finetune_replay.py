"""bench/finetune_replay.py's pipeline in its smoke size: the stream is replayed through a real
``recscope serve --workers 2``, a real fine-tune job runs, both versions answer the tail.
The bench's figures belong to bench/results; this asserts only that the pipeline holds."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import TINY_SPEC

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import finetune_replay  # noqa: E402


def test_stream_is_seeded_and_continues_the_shop():
    one = finetune_replay.make_stream(TINY_SPEC, 30, 4, seed=1)
    again = finetune_replay.make_stream(TINY_SPEC, 30, 4, seed=1)
    other = finetune_replay.make_stream(TINY_SPEC, 30, 4, seed=2)
    assert [s.purchases for s in one.shoppers] == [s.purchases for s in again.shoppers]
    assert [s.purchases for s in one.shoppers] != [s.purchases for s in other.shoppers]
    # 5 device subcategories x 4 brands: a device and its 3 accessories each
    assert len(one.new_items) == 80
    assert sum(i["kind"] == "device" for i in one.new_items) == 20
    new = one.new_ids()
    for shopper in one.shoppers:
        assert len(shopper.purchases) == 4
        bought = [item for item, _ in shopper.purchases]
        assert len(set(bought)) == len(bought)  # the shop never sells an owned item again
        if shopper.dislike is not None:  # a dismisser never buys the disliked brand in that department
            assert all((one.brand[i], one.department[i]) != shopper.dislike for i in bought)
        for item, mechanism in shopper.purchases:
            if mechanism == "launch":
                assert item in new and one.brand[item] and item.startswith("N")
    accessories = {i["item_id"]: i["device"] for i in one.new_items if i["kind"] == "accessory"}
    # a launched accessory is bought after its own launched device (the shop's accessory rule)
    for shopper in one.shoppers:
        bought = [item for item, _ in shopper.purchases]
        for p, item in enumerate(bought):
            if item in accessories and dict(shopper.purchases)[item] == "accessory_after_device":
                assert accessories[item] in bought[:p]


def test_smoke_replay_finetunes_and_measures_through_the_service(tiny_run):
    args = finetune_replay.parse(["--smoke", "--run", str(tiny_run), "--data", TINY_SPEC, "--budget", "20"])
    result = finetune_replay.run_bench(args)

    job = result["finetune"]
    assert job["stages"][-1] == "done" and "training" in job["stages"]
    assert job["verdict"] in ("promoted", "kept")
    assert job["version"] and job["version"] != job["parent"]
    lineage = job["lineage"]
    stream = result["stream"]
    assert lineage["new_items"] == stream["launched_items"] == 80
    assert lineage["events"] == stream["events"] == 50 * (4 - 1)  # the first part, never the tail
    assert lineage["feedback"] == stream["dismissed_items"] > 0
    assert stream["launched_fields_unused"] == 0

    tail = result["tail"]
    for name, version in (("frozen", job["parent"]), ("finetuned", job["version"])):
        answered = tail["lists_by_version_and_worker"][name]
        assert {a["model_version"] for a in answered} == {version}  # every list labelled with its version
        assert len({a["worker"] for a in answered}) == 2  # and both workers served it
        metrics = tail["metrics"][name]
        assert metrics["all"]["cases"] == 50
        assert metrics["launched items"]["cases"] + metrics["catalog items"]["cases"] == 50
        assert 0.0 <= metrics["all"]["NDCG@10"] <= metrics["all"]["HR@10"] <= 1.0
    assert tail["dismissed_items_in_lists"] == {"frozen": 0, "finetuned": 0}
    ranks = result["dismissed_ranks"]
    assert ranks["frozen"]["dismissed_in_lists"] == ranks["finetuned"]["dismissed_in_lists"] == 0
    # every shopper who dismissed against every one who dislikes nothing, those with an item of
    # their pair left to rank (unowned, undismissed)
    bar, pairs = result["dismiss_bar"], ranks["frozen"]["pair_median_rank"]
    dismissers = [u for u in ranks["frozen"]["dismissers"] if u in pairs]
    assert bar["dismissers"]["users"] == len(dismissers) > 0
    assert bar["controls"]["users"] == len(pairs) - len(dismissers) > stream["shoppers"] / 3
    assert bar["met"] is False  # fewer than BAR_USERS dismissers in the smoke size
    assert result["server_problems"] == []
