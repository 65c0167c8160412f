"""bench/promotion_load.py in its smoke size: mixed traffic through a real ``recscope serve
--workers 2`` while a real fine-tune job is promoted, every answer recomputed under both
versions. The bench's figures belong to bench/results; this asserts the bar's shape: no error,
each answer computed by one version and labelled with it, and no worker going back to the old
version once it answered with the new one."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import TINY_SPEC

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import promotion_load  # noqa: E402


def test_a_finetune_promoted_under_mixed_traffic_reaches_every_worker_and_no_answer_mixes_versions(tiny_run):
    result = promotion_load.run_bench(promotion_load.parse(["--smoke", "--run", str(tiny_run), "--data", TINY_SPEC]))

    promotion = result["promotion"]
    assert promotion["verdict"] == "promoted", promotion["reason"]
    old, new = promotion["versions"]["old"], promotion["versions"]["new"]
    assert new not in (None, old)
    assert promotion["lineage"]["events"] >= promotion["events_stored_when_posted"] >= 60

    assert result["errors"] == 0, result["errors_by_status"]
    assert set(result["requests_by_kind"]) == set(promotion_load.MIX)  # every kind of request was sent
    assert result["server_problems"] == []

    answers = result["model_answers"]
    assert answers["checked"] == answers["one_version"] > 0  # no answer mixed or matched neither version
    assert answers["labelled"] == answers["label_is_the_computing_version"] > 0
    assert answers["labels"]["old"] > 0 and answers["labels"]["new"] > 0
    assert result["explanation_weights_checked"]["old"] > 0

    # Every worker answered with both versions, switched after the version was published, and
    # never answered with the old one a request sent after its first answer with the new one.
    workers = result["workers"]
    assert len(workers) == 2 and len(result["worker_pids"]["after"]) == 2
    for w in workers.values():
        assert w["old"] > 0 and w["new"] > 0 and w["old_after_new"] == 0
        assert promotion["posted_s"] < promotion["version_created_s"] < w["first_new_answered_s"]
    assert result["old_after_new"] == 0
    phases = result["answers_by_phase_and_version"]
    assert set(phases["before"]) == {"old"} and set(phases["after"]) == {"new"}
