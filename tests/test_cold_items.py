"""Cold-start items: the cold_items split, training that keeps held-out items new, and their evaluation."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import _train
from recscope import config as config_mod
from recscope.cli import app
from recscope.data import load_dataset, make_split, training_windows
from recscope.data.split import leave_one_out
from recscope.errors import ConfigError
from recscope.evaluate import AttributesOnlyScorer, evaluate_run, model_scorer, rank_targets
from recscope.recommend import Recommender
from recscope.run import load_info
from test_model import HISTORY, fixed_negatives, tiny_model

SHOP = "synthetic:users=300,items=120,seed=3"


@pytest.fixture(scope="module")
def shop():
    return load_dataset(SHOP)


def test_cold_items_holds_a_seeded_share_out_of_training(shop):
    split = make_split(shop, "cold_items", cold_share=0.2, cold_seed=7)
    seen = np.unique(shop.items)
    assert len(split.cold) == round(0.2 * len(seen))
    assert set(split.cold.tolist()) <= set(seen.tolist()), "drawn among the items with events"
    # the same seed draws the same items; another seed others
    assert np.array_equal(split.cold, make_split(shop, "cold_items", cold_share=0.2, cold_seed=7).cold)
    assert not np.array_equal(split.cold, make_split(shop, "cold_items", cold_share=0.2, cold_seed=8).cold)
    # no event of a held-out item is trained on: not in the mask, not in a window (input or target)
    assert not np.isin(shop.items[split.train], split.cold).any()
    windows = training_windows(shop, split.train, max_len=20)
    assert not np.isin(windows, split.cold).any()
    # every other leave-one-out training event is kept, and the cases are leave-one-out's
    loo = leave_one_out(shop)
    assert np.array_equal(split.train, loo.train & ~np.isin(shop.items, split.cold))
    for cases, expected in ((split.valid, loo.valid), (split.test, loo.test)):
        assert np.array_equal(cases.targets, expected.targets) and np.array_equal(cases.hist_len, expected.hist_len)
    assert np.isin(split.test.targets, split.cold).any(), "some test cases have a held-out target"
    assert "items held out of training" in split.describe()


def test_a_user_s_training_sequence_skips_held_out_items(shop):
    split = make_split(shop, "cold_items", cold_share=0.3, cold_seed=1)
    loo_len = leave_one_out(shop).train_len
    windows = training_windows(shop, split.train, max_len=200)  # one window per user with a transition
    cold = set(split.cold.tolist())
    u = next(u for u in range(shop.n_users) if cold & set(shop.sequence(u)[: loo_len[u]].tolist()))
    kept = [i for i in shop.sequence(u)[: loo_len[u]].tolist() if i not in cold]
    row = windows[int((split.train_len[:u] >= 2).sum())]  # windows come user by user
    assert row[row > 0].tolist() == kept, "the held-out items are skipped, the rest kept in order"
    assert split.train_len[u] == len(kept)


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.1])
def test_a_cold_share_outside_0_1_is_a_config_error(share):
    with pytest.raises(ConfigError, match=r"data.cold_share=.* must be in \(0, 1\)") as e:
        config_mod.load(None, ["data.split=cold_items", f"data.cold_share={share}"])
    assert "data.cold_share=0.1" in str(e.value)  # how to fix it
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        make_split(load_dataset("synthetic:users=20,items=20"), "cold_items", cold_share=share)


def test_the_loss_gives_unseen_items_no_gradient():
    model = tiny_model().train()
    unseen = torch.zeros(21, dtype=torch.bool)
    unseen[[4, 11, 17]] = True
    inputs, targets = HISTORY[:, :-1], HISTORY[:, 1:].clone()
    targets[targets == 4] = 0  # an unseen item is never a target
    inputs[inputs == 4] = 0
    for negatives in (None, fixed_negatives([4, 11, 12, 13, 17])):
        model.zero_grad()
        model.loss(inputs, targets, negatives, unseen=unseen).backward()
        grad = model.item_emb.weight.grad
        assert grad[unseen].abs().sum() == 0, "unseen items are neither targets nor negatives"
        assert grad[~unseen].abs().sum() > 0


def test_id_dropout_leaves_the_dropped_items_id_embeddings_out():
    model = tiny_model()
    inputs, targets = HISTORY[:, :-1], HISTORY[:, 1:]
    everything = torch.ones(21, dtype=torch.bool)
    dropped = model.loss(inputs, targets, id_dropped=everything)
    with torch.no_grad():
        model.item_emb.weight.zero_()
    assert torch.allclose(dropped, model.loss(inputs, targets))
    assert not torch.allclose(dropped, tiny_model().loss(inputs, targets))


@pytest.mark.parametrize("negatives", [None, [2, 5, 9, 11, 14]], ids=["full", "sampled"])
def test_id_dropout_with_borrowed_ids_trains_the_way_an_id_less_item_is_served(negatives):
    """cold_ids=neighbours: a dropped item's id is its nearest trained items' mean, never its own
    and never a held-out item's, so the model learns what a borrowed id is worth."""
    model = tiny_model(cold_ids="neighbours", cold_neighbours=2, cold_id_scale=0.8)
    unseen = torch.zeros(21, dtype=torch.bool)
    unseen[[4, 11]] = True
    known = (~unseen).nonzero().flatten()[1:]  # not padding
    model.set_id_stand_ins(known)
    stand_ins = model.id_stand_ins
    assert stand_ins.shape == (21, 2)
    assert (stand_ins[1:] != torch.arange(1, 21)[:, None]).all(), "an item never borrows its own id"
    assert not torch.isin(stand_ins[1:], torch.tensor([4, 11])).any(), "held-out items lend nothing"
    # the stand-ins are the ids a served id-less item borrows (SeqRec.borrow_ids), own id aside
    served = tiny_model(cold_ids="neighbours", cold_neighbours=2, cold_id_scale=0.8)
    with torch.no_grad():
        served.item_emb.weight[7] = 0  # item 7 has no id: it borrows from the known items but itself
    served.borrow_ids(torch.tensor([7]), known[known != 7])
    assert torch.allclose(served.item_emb.weight[7], model.item_emb.weight[stand_ins[7]].mean(0) * 0.8)

    inputs, targets = HISTORY[:, :-1].clone(), HISTORY[:, 1:].clone()
    everything = torch.ones(21, dtype=torch.bool)
    fixed = None if negatives is None else fixed_negatives(negatives)
    dropped = model.loss(inputs, targets, fixed, id_dropped=everything)
    swapped = tiny_model(cold_ids="neighbours", cold_neighbours=2, cold_id_scale=0.8)
    with torch.no_grad():  # every id replaced by its stand-in: the same loss
        swapped.item_emb.weight[1:] = model.item_emb.weight[stand_ins[1:]].mean(1) * 0.8
    assert torch.allclose(dropped, swapped.loss(inputs, targets, fixed), atol=1e-6)
    model.set_id_stand_ins(None)  # cleared: dropped ids are zero again
    assert not torch.allclose(dropped, model.loss(inputs, targets, fixed, id_dropped=everything))


def test_attributes_only_scores_by_shared_fields(shop):
    scorer = AttributesOnlyScorer(shop)
    brand = next(f for f in shop.fields if f.name == "brand")
    item = 5
    same = np.flatnonzero(brand.values[:, 0] == brand.values[item, 0])
    other = np.flatnonzero((brand.values[:, 0] != brand.values[item, 0]) & (brand.values[:, 0] > 0))
    scores = scorer(torch.tensor([[0, item]]))[0].numpy()
    assert np.isclose(scores[item], 1.0), "an item is its own nearest neighbour (cosine 1)"
    assert scores[same].mean() > scores[other].mean()
    assert scores[0] == 0  # padding has no fields


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cold") / "run"
    sets = ["data.split=cold_items", "data.cold_share=0.15", "train.epochs=3", "train.id_dropout=0.3"]
    return _train(out, SHOP, *[a for s in sets for a in ("--set", s)], "--set", "model.use_text=false")


def test_held_out_items_stay_new_after_training(cold_run, shop):
    info = load_info(cold_run)
    split = make_split(shop, "cold_items", cold_share=0.15)
    assert info.state["cold_items"] == [shop.item_ids[i] for i in split.cold]  # the run names them
    for weights in ("model", "last"):
        table = load_file(str(cold_run / f"{weights}.safetensors"))["item_emb.weight"]
        assert table[split.cold].abs().sum() == 0, "a held-out item's id embedding is zero, as a new item's"
        assert (table[np.setdiff1d(np.unique(shop.items), split.cold)].abs().sum(1) > 0).all()


def test_held_out_items_are_scored_from_their_fields_above_chance(cold_run):
    rec = Recommender.load(cold_run)
    parts = rec.split()
    cold_cases = parts.test.subset(np.isin(parts.test.targets, parts.cold))
    scorer = model_scorer(rec.model)
    scores = scorer(torch.tensor([[1, 2, 3]]))
    assert torch.isfinite(scores[0, parts.cold]).all()
    warm = np.setdiff1d(np.arange(1, rec.data.n_items + 1), parts.cold)
    among = rank_targets(scorer, rec.data, cold_cases, rec.config.model.max_len, exclude=warm)
    # Chance puts a target in the middle of the held-out items it is ranked among.
    assert among.mean() < 0.8 * (len(parts.cold) - 1) / 2, among


def test_evaluate_json_reports_cold_and_warm_items(cold_run, tmp_path):
    run = shutil.copytree(cold_run, tmp_path / "run")  # evaluate records its metrics in the run
    result = CliRunner().invoke(app, ["evaluate", str(run), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    for scorer in ("recscope", "popularity", "attributes_only"):
        for group in ("cold_items", "warm_items", "cold_items_among_cold"):
            assert {"HR@10", "NDCG@10"} <= set(payload[group][scorer]), (group, scorer)
    cases = payload["cases"]
    rec = Recommender.load(run)
    parts = rec.split()
    assert cases["cold_items"] == int(np.isin(parts.test.targets, parts.cold).sum()) > 0
    assert cases["cold_items"] + cases["warm_items"] == len(parts.test)
    # popularity counts training events only: a held-out item has none, so it never makes a top 10
    assert payload["cold_items"]["popularity"]["HR@10"] == 0.0
    assert load_info(run).state["evaluations"]["test/full"]["cold_items"] == payload["cold_items"]
    table = CliRunner().invoke(app, ["evaluate", str(run), "--split", "valid"])
    assert table.exit_code == 0, table.output
    assert "held-out (cold) targets" in table.output and "warm targets" in table.output


def test_a_loo_run_reports_no_cold_items(tiny_run):
    rec = Recommender.load(tiny_run)
    rec.path = None  # nothing recorded: the shared run is read only
    assert rec.split().cold.size == 0
    assert set(evaluate_run(rec, "test")) == {"recscope"}


def _with_cold_ids(run, tmp_path, **model):
    """A copy of ``run`` whose config sets model.cold_ids / cold_neighbours (inference settings)."""
    import dataclasses

    from recscope.run import save_info

    out = shutil.copytree(run, tmp_path / "run")
    info = load_info(out)
    cfg = dataclasses.replace(info.config, model=dataclasses.replace(info.config.model, **model))
    save_info(out, dataclasses.replace(info, config=cfg))
    return out


def test_an_added_item_borrows_the_id_of_the_trained_items_that_look_like_it(tiny_run, tmp_path):
    """cold_ids=neighbours: an item added live takes the mean id embedding of the 3 trained items
    whose attribute-and-text tokens are nearest its own (checked by brute force), and is scored
    with it; with the default (zero) its id embedding stays zero."""
    rec = Recommender.load(_with_cold_ids(tiny_run, tmp_path, cold_ids="neighbours", cold_neighbours=3))
    zero = Recommender.load(tiny_run)
    labels = {f.name: (f.labels(7) if f.kind == "multi" else f.labels(7)[0]) for f in rec.data.fields if f.labels(7)}
    for r in (rec, zero):
        r.set_items([("NEW-1", r.data.title(7), labels)])
    model, row = rec.model, rec.data.item_index("NEW-1")
    with torch.no_grad():
        trained = torch.arange(1, zero.snapshot.trained_items + 1)
        parts = model.field_embeddings(torch.cat([torch.tensor([row]), trained]))
        content = torch.nn.functional.normalize(sum(v for k, v in parts.items() if k != "id"), dim=-1)
        nearest = trained[(content[1:] @ content[0]).topk(3).indices]
        expected = model.item_emb.weight[nearest].mean(0)
    assert torch.allclose(model.item_emb.weight[row], expected, atol=1e-6)
    assert zero.model.item_emb.weight[zero.data.item_index("NEW-1")].abs().sum() == 0
    user = rec.data.user_ids[3]
    with_id = {x.item_id: x.score for x in rec.recommend(user=user, k=rec.data.n_items)}["NEW-1"]
    without = {x.item_id: x.score for x in zero.recommend(user=user, k=zero.data.n_items)}["NEW-1"]
    assert with_id != pytest.approx(without)  # the borrowed id is in its score
    with pytest.raises(ConfigError, match="cold_ids"):
        config_mod.load(None, ["model.cold_ids=mean"])
