"""A tiny run through the real CLI: train -> evaluate -> recommend -> explain, and resume."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recscope.cli import app
from recscope.recommend import Recommender

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SPEC = "synthetic:users=300,items=150,seed=3"
runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "run"
    result = runner.invoke(
        app, ["train", "--data", SPEC, "--out", str(out), "--config", TINY, "--set", "train.epochs=4"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_run_directory_is_self_contained(run):
    for name in (
        "run.json",
        "data.json",
        "data.safetensors",
        "model.safetensors",
        "last.safetensors",
        "optimizer.safetensors",
    ):
        assert (run / name).stat().st_size > 0, name
    state = json.loads((run / "run.json").read_text())["state"]
    assert state["epoch"] == 4 and state["best_epoch"] >= 1
    assert "NDCG@10" in state["best_valid"]


def test_evaluate_json_and_the_model_beats_popularity(run):
    result = runner.invoke(app, ["evaluate", str(run), "--json", "--baselines"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    metrics = payload["metrics"]
    for key in ("HR@10", "NDCG@10", "NDCG@20", "MRR@10", "Recall@5", "Precision@20", "F1@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["NDCG@10"] > payload["baselines"]["popularity"]["NDCG@10"]
    sampled = json.loads(runner.invoke(app, ["evaluate", str(run), "--json", "--protocol", "sampled"]).output)
    assert sampled["metrics"]["HR@10"] >= metrics["HR@10"], "100 candidates are easier than the whole catalog"


def test_recommend_speaks_the_users_own_ids(run):
    result = runner.invoke(app, ["recommend", str(run), "--user", "U00007", "-k", "5", "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["items"]
    assert [r["rank"] for r in items] == [1, 2, 3, 4, 5]
    assert all(r["item_id"].startswith("P") and r["title"] for r in items)
    assert items[0]["score"] >= items[-1]["score"]
    rec = Recommender.load(run)
    owned = {rec.data.item_ids[i] for i in rec.history("U00007")}
    assert not owned & {r["item_id"] for r in items}, "owned items are excluded by default"


def test_recommend_for_an_unseen_history(run):
    rec = Recommender.load(run)
    history = [rec.data.item_ids[i] for i in rec.history("U00003")[:3]]
    items = rec.recommend(history=history, k=3)
    assert len(items) == 3 and not set(history) & {r.item_id for r in items}


def test_explain_prints_sentences_and_writes_both_heatmaps(run, tmp_path):
    png, att = tmp_path / "why.png", tmp_path / "att.png"
    result = runner.invoke(
        app, ["explain", str(run), "--user", "U00007", "--top", "3", "--png", str(png), "--attention-png", str(att)]
    )
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 5_000 and att.stat().st_size > 5_000
    assert result.output.count("#") >= 3


def test_explain_json_for_one_item_and_for_all_methods(run):
    rec = Recommender.load(run)
    item = rec.recommend("U00007", k=3)[2].item_id
    result = runner.invoke(app, ["explain", str(run), "--user", "U00007", "--item", item, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    (e,) = payload["explanations"]
    assert e["item_id"] == item and e["rank"] == 3
    assert len(e["history"]) == min(len(rec.history("U00007")), rec.config.model.max_len)
    assert {h["item_id"] for h in e["history"]} <= set(rec.data.item_ids)
    assert any(key.startswith("brand=") for key in e["attributes_candidate"])
    assert len(e["attentions"]) == rec.config.model.n_layers
    assert e["sentence"] and e["ms"] > 0
    every = json.loads(
        runner.invoke(app, ["explain", str(run), "--user", "U00007", "--top", "2", "--method", "all", "--json"]).output
    )
    assert set(every) == {"occlusion", "shapley", "integrated_gradients", "grad_input", "rollout", "attention"}


def test_explain_eval_json_has_the_documented_keys_and_sets_the_default(run):
    result = runner.invoke(
        app, ["explain-eval", str(run), "--users", "25", "--methods", "occlusion,attention", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["default"] == "occlusion", "attention is target-independent: never the default"
    keys = {
        "comprehensiveness",
        "comprehensiveness_random",
        "sufficiency",
        "sufficiency_random",
        "topk_exit_rate",
        "topk_exit_rate_random",
        "kendall_tau_loo",
        "planted_hit@1",
        "planted_hit@3",
        "ms_per_explanation",
        "ms_p99",
    }
    for method in ("occlusion", "attention"):
        assert keys <= set(payload["methods"][method])
    assert payload["methods"]["occlusion"]["kendall_tau_loo"] == 1.0
    assert Recommender.load(run).default_method() == "occlusion"


def test_what_if_reranks_an_edited_history(run):
    rec = Recommender.load(run)
    history = [rec.data.item_ids[i] for i in rec.history("U00007")]
    result = rec.what_if("U00007", remove=history[-2:])
    assert len(result["before"]) == len(result["after"]) == 10
    assert set(result["entered"]) == {r["item_id"] for r in result["after"]} - {r["item_id"] for r in result["before"]}


def test_resume_continues_from_the_last_epoch(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = runner.invoke(
        app, ["train", "--data", SPEC, "--out", str(copy), "--config", TINY, "--set", "train.epochs=5", "--resume"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((copy / "run.json").read_text())["state"]["epoch"] == 5


def test_training_into_an_existing_run_is_refused(run):
    result = runner.invoke(app, ["train", "--data", SPEC, "--out", str(run), "--config", TINY])
    assert result.exit_code != 0


def test_evaluation_reads_only_as_wide_as_the_longest_history(run):
    """Scoring batches trimmed to their longest history ranks every case exactly as scoring
    them padded to max_len does (positions count from the right)."""
    import torch
    import torch.nn.functional as F

    from recscope.evaluate import model_scorer, rank_targets

    rec = Recommender.load(run)
    cases, max_len = rec.split().test, rec.config.model.max_len
    scorer = model_scorer(rec.model)
    widths = []

    def padded(histories: torch.Tensor) -> torch.Tensor:
        widths.append(histories.shape[1])
        return scorer(F.pad(histories, (max_len - histories.shape[1], 0)))

    trimmed = rank_targets(scorer, rec.data, cases, max_len, batch_size=4)
    full = rank_targets(padded, rec.data, cases, max_len, batch_size=4)
    assert min(widths) < max_len  # some batches really were narrower
    assert (trimmed == full).all()
