"""The task layer: rating and click heads, their metrics and baselines, their explanations."""

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from tests.conftest import _train
from typer.testing import CliRunner

from recscope.cli import app
from recscope.config import TASK_NAMES
from recscope.data import load_dataset, make_split
from recscope.data.synthetic import ShopConfig, generate
from recscope.errors import RunError
from recscope.explain.api import make_explainer
from recscope.explain.occlusion import without
from recscope.metrics import auc, log_loss, mae, rmse
from recscope.recommend import Recommender
from recscope.tasks import TASKS, BiasBaseline, PopularityCTR, click_cases, training_ratings


# ---------------------------------------------------------------------- metrics, by hand
def test_task_metrics_against_hand_computed_numbers():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [2, 2, 1]) == pytest.approx(1.0)
    # positives scored 0.9 and 0.4, negatives 0.5 and 0.1: 3 of 4 pairs ordered right
    assert auc([1, 0, 1, 0], [0.9, 0.5, 0.4, 0.1]) == pytest.approx(0.75)
    assert auc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)  # a tie counts half
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)


def _ratings(tmp_path: Path) -> Path:
    """Two users, each one rates everything 1 star higher than the other; item b is rated 2 above a."""
    rows = [("u", "a", 1, 2.0), ("u", "b", 2, 4.0), ("u", "c", 3, 3.0), ("u", "a", 4, 2.0)]
    rows += [("v", "a", 1, 3.0), ("v", "b", 2, 5.0), ("v", "c", 3, 4.0), ("v", "b", 4, 5.0)]
    path = tmp_path / "r.csv"
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "value"], orient="row").write_csv(path)
    return path


def test_the_bias_baseline_learns_user_and_item_biases(tmp_path):
    data = load_dataset(f"csv:{_ratings(tmp_path)}")
    split = make_split(data)
    train = training_ratings(data, split.train_len)
    assert train.labels.tolist() == [2.0, 4.0, 3.0, 5.0]  # the first two events of each user
    fitted = BiasBaseline(data, train, reg=0.0)
    np.testing.assert_allclose(fitted(train), train.labels, atol=1e-6)  # unregularised: exact here
    user = {u: fitted.user_bias[data.user_index(u)] for u in "uv"}
    assert user["v"] - user["u"] == pytest.approx(1.0, abs=1e-6)
    shrunk = BiasBaseline(data, train, reg=100.0)  # heavy regularisation: close to the global mean
    np.testing.assert_allclose(shrunk(train), train.labels.mean(), atol=0.1)


def test_popularity_ctr_is_the_smoothed_click_rate():
    data = load_dataset("synthetic:users=60,items=40,seed=3,impressions=4")
    split = make_split(data)
    train = click_cases(data, split, "train")
    base = PopularityCTR(data, train, prior=10.0)
    item = int(train.items[0])
    shown = train.items == item
    rate = train.labels.mean()
    assert base.ctr[item] == pytest.approx((train.labels[shown].sum() + 10 * rate) / (shown.sum() + 10))
    assert (train.hist_len < split.train_len[train.users]).all()  # train impressions saw training history only


def test_a_task_without_its_data_is_refused():
    data = load_dataset("synthetic:users=30,items=40,seed=1")
    with pytest.raises(RunError, match="train.task=rating predicts each event's value") as e:
        TASKS["rating"].check(data)
    assert "movielens" in e.value.fix
    with pytest.raises(RunError, match="train.task=click learns from impressions") as e:
        TASKS["click"].check(data)
    assert "impressions=5" in e.value.fix
    TASKS["next_item"].check(data)  # needs nothing but the events


def test_every_task_the_config_accepts_is_registered_and_selects_its_own_way():
    assert tuple(TASKS) == TASK_NAMES
    selection = [(task.select_on, task.ranks_catalog) for task in TASKS.values()]
    assert selection == [("NDCG@10", True), ("RMSE", False), ("AUC", False)]
    assert TASKS["next_item"].improves(0.21, 0.20) and not TASKS["next_item"].improves(0.19, 0.20)
    assert TASKS["rating"].improves(0.9, 1.0) and not TASKS["rating"].improves(1.1, 1.0)  # RMSE: lower is better
    assert all(task.improves(0.5, None) for task in TASKS.values())  # the first evaluation is the best so far


def test_impressions_do_not_change_the_shops_purchases():
    plain, _ = generate(ShopConfig(users=40, items=60, seed=2))
    data = load_dataset("synthetic:users=40,items=60,seed=2,impressions=3")
    assert data.n_events == plain.height
    assert data.item_ids[1:][:5] == [f"P{i:04d}" for i in range(1, 6)]
    again = load_dataset("synthetic:users=40,items=60,seed=2,impressions=3")
    np.testing.assert_array_equal(data.impressions.clicked, again.impressions.clicked)  # deterministic by seed


# ---------------------------------------------------------------------- heads on tiny data
@pytest.fixture(scope="module")
def click_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("click") / "run"
    sets = ["train.task=click", "train.epochs=3", "model.use_text=false"]
    return _train(out, "synthetic:users=200,items=120,seed=5,impressions=5", *(a for s in sets for a in ("--set", s)))


@pytest.fixture(scope="module")
def rating_run(tmp_path_factory) -> Path:
    """A shop whose ratings follow the history: a product of a brand the shopper bought before
    (brand loyalty) gets 5 stars, anything else 2. The same products are also bought for other
    reasons, so neither an item's nor a user's bias can tell which; the history can."""
    root = tmp_path_factory.mktemp("rating")
    events, catalog = generate(ShopConfig(users=300, items=120, seed=5))
    caused = events["mechanism"] == 2  # brand_loyalty
    events = events.select("user_id", "item_id", "timestamp").with_columns(
        value=pl.when(caused).then(5.0).otherwise(2.0)
    )
    events.write_csv(root / "r.csv")
    catalog.write_csv(root / "catalog.csv")
    sets = ["train.task=rating", "train.epochs=12", "train.patience=12", "model.use_text=false"]
    more = [a for s in sets for a in ("--set", s)]
    return _train(root / "run", f"csv:{root / 'r.csv'}", "--catalog", str(root / "catalog.csv"), *more)


def _evaluate(run: Path) -> dict:
    result = CliRunner().invoke(app, ["evaluate", str(run), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_click_head_beats_popularity_ctr_on_the_shop(click_run):
    payload = _evaluate(click_run)
    assert payload["task"] == "click"
    ours, base = payload["metrics"], payload["baselines"]["popularity-CTR"]
    assert ours["cases"] == base["cases"] > 0
    assert ours["AUC"] > base["AUC"] and ours["logloss"] < base["logloss"]


def test_the_rating_head_beats_the_bias_baseline_when_the_history_matters(rating_run):
    payload = _evaluate(rating_run)
    assert payload["task"] == "rating"
    ours, base = payload["metrics"], payload["baselines"]["user/item bias"]
    assert ours["RMSE"] < base["RMSE"] and ours["MAE"] < base["MAE"]
    info = json.loads((rating_run / "run.json").read_text())
    assert info["config"]["model"]["head"] == "rating"
    assert "event labels read as inputs: 2 (value=2, value=5)" in info["state"]["inputs"]


@pytest.mark.parametrize("method", ["occlusion", "shapley", "integrated_gradients"])
def test_explanations_explain_the_heads_prediction(rating_run, click_run, method):
    for run in (rating_run, click_run):
        rec = Recommender.load(run)
        user = rec.data.user_ids[2]
        resolved = rec.resolve(user=user)
        events = rec.event_codes(resolved)
        scores = rec.scores(resolved.indices, events=events)
        (expl,) = rec.explain(user, rec.data.item_ids[7], method=method, counterfactual=False)
        assert expl.score == pytest.approx(float(scores[7]), abs=1e-5)  # the predicted rating / click logit
        weights = [h.weight for h in expl.history]
        assert len(weights) == len(resolved.indices) and all(math.isfinite(w) for w in weights)
        assert any(abs(w) > 1e-6 for w in weights)
    if method != "occlusion":
        return
    # leave-one-out on the head: each weight is the prediction's drop without that item (and its event)
    read = rec.tensor(resolved.indices)[0]
    labels = None if events is None else rec.tensor(events)[0]
    explainer = make_explainer(rec.model, "occlusion")
    weights = explainer.attribute(read, torch.tensor([7]), labels)[0]
    keep = torch.ones(len(read), dtype=torch.bool)
    keep[0] = False
    shorter_events = None if labels is None else without(labels, keep[None])
    shorter = rec.model.score(without(read, keep[None]), explainer.table, shorter_events)[0, 7]
    assert float(weights[0]) == pytest.approx(float(scores[7] - shorter), abs=1e-4)


def test_a_rating_runs_sentences_say_what_the_user_rated(rating_run):
    """A rating run's history is what the user rated: its sentences cite items "you rated"."""
    rec = Recommender.load(rating_run)
    sentences = [e.sentence for u in rec.data.user_ids[:20] for e in rec.explain(u, top=5, counterfactual=False)]
    cited = [s for s in sentences if s.startswith("Because you")]
    assert cited, sentences[:5]
    assert all(s.startswith("Because you rated ") for s in cited), cited[:3]
