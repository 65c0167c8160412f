"""Sampled softmax (the loss, its log-Q correction and negatives, train.loss auto) and full
ranking chunk by chunk over the catalog (the same ranks as the whole score matrix)."""

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY
from recscope import config as config_mod
from recscope.cli import app
from recscope.data import load_dataset, make_split, training_windows
from recscope.errors import ConfigError
from recscope.evaluate import PopularityScorer, evaluate, model_scorer, rank_targets
from recscope.losses import sampled_softmax
from recscope.ranking import rank, rank_chunks
from recscope.recommend import Recommender
from recscope.run import load_info, load_optimizer, save_optimizer
from recscope.sampling import Negatives, NegativeSampler, make_optimizer, negative_sampler, uses_sampled_softmax
from recscope.train import with_data_sizes
from test_model import HISTORY, tiny_model

torch.set_num_threads(1)

SHOP = "synthetic:users=600,items=200,seed=5"
E = math.e
UNIFORM = torch.full((21,), 1 / 20, dtype=torch.float64)  # p or q of tiny_model's 20 items


# ---------------------------------------------------------------------- the loss by hand
def test_sampled_softmax_against_a_case_worked_by_hand():
    # Two positions; candidates 2, 5, 7 with tokens [1, 0], [0, 1], [1, 1] and chances to be drawn
    # Q = 1/2, 1/4, 1/8. A logit is h . token - log Q, so exp(logit) = exp(h . token) / Q.
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([2, 7])
    tokens = {2: [1.0, 0.0], 5: [0.0, 1.0], 7: [1.0, 1.0]}
    q = {2: 1 / 2, 5: 1 / 4, 7: 1 / 8}
    candidates = torch.tensor([2, 5, 7])

    def loss(q_of: dict) -> torch.Tensor:
        return sampled_softmax(
            hidden,
            targets,
            torch.tensor([tokens[int(y)] for y in targets]),
            torch.tensor([math.log(q_of[int(y)]) for y in targets]),
            candidates,
            torch.tensor([tokens[int(c)] for c in candidates]),
            torch.tensor([math.log(q_of[int(c)]) for c in candidates]),
            reduction="none",
        )

    # Position 1 (h = [1, 0], target 2): exp(logits) 2e (target), 4 (item 5), 8e (item 7); the
    # candidate 2 is the target itself, masked: loss = log((2e + 4 + 8e) / 2e) = log(5 + 2/e).
    # Position 2 (h = [0, 1], target 7): 8e (target), 2 (item 2), 4e (item 5), 7 masked:
    # loss = log((8e + 2 + 4e) / 8e) = log(3/2 + 1/(4e)).
    expected = torch.tensor([math.log(5 + 2 / E), math.log(1.5 + 1 / (4 * E))])
    torch.testing.assert_close(loss(q), expected)
    # Without the correction (every Q equal) position 1 would be log((e + 1 + e) / e) = log(2 + 1/e):
    # the frequent item 7 would be pushed down harder than the data asks.
    torch.testing.assert_close(loss(dict.fromkeys(q, 1.0))[0], torch.tensor(math.log(2 + 1 / E)))
    # Were the accidental hit not masked, the target would count twice in position 1's denominator.
    unmasked = torch.logsumexp(torch.tensor([1 + math.log(2), 1 + math.log(2), math.log(4), 1 + math.log(8)]), 0)
    assert not torch.isclose(loss(q)[0], unmasked - (1 + math.log(2)))


def test_log_q_is_the_chance_to_be_among_the_candidates():
    # p: share of training targets; q: the shared sampler; m in-batch and n shared draws.
    p = torch.tensor([0.0, 0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    negatives = Negatives(torch.tensor([1, 4]), p, q, m=2, n=3)
    # Q(1) = 1 - (1 - 1/2)^2 (1 - 1/4)^3 = 1 - 27/256; Q(4) = 1 - (3/4)^3 (never a target)
    expected = torch.tensor([math.log(1 - 27 / 256), math.log(1 - 27 / 64)])
    torch.testing.assert_close(negatives.log_q(torch.tensor([1, 4])), expected.float())
    # no shared draws: an item is a candidate only as an in-batch target
    only_batch = Negatives(torch.tensor([1]), p, q, m=1, n=0)
    torch.testing.assert_close(only_batch.log_q(torch.tensor([1, 2])), torch.tensor([math.log(0.5), math.log(0.25)]))


@pytest.fixture(scope="module")
def shop():
    return load_dataset(SHOP)


def _config(shop, *sets: str):
    return with_data_sizes(config_mod.load(TINY, ["model.use_text=false", *sets]), shop)


def test_drawn_negatives_come_as_often_as_log_q_says(shop):
    sets = ("train.loss=sampled", "train.negative_sampler=popularity", "train.num_negatives=20")
    cfg = _config(shop, *sets, "train.in_batch_negatives=0")  # shared draws only: Q = 1 - (1 - q)^n
    windows = torch.from_numpy(training_windows(shop, make_split(shop).train, cfg.model.max_len))
    unseen = torch.zeros(cfg.model.n_items + 1, dtype=torch.bool)
    unseen[[1, 2, 3]] = True
    sampler = NegativeSampler(windows, cfg.model.n_items, cfg, unseen)
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(cfg.model.n_items + 1)
    draws = 2000
    for _ in range(draws):
        negatives = sampler.draw(windows[:64], g)
        hits[negatives.items] += 1
    assert hits[unseen].sum() == 0 and hits[0] == 0, "held-out items and padding are never drawn"
    chance = negatives.log_q(torch.arange(1, cfg.model.n_items + 1)).exp().double()
    seen = hits[1:] / draws
    popular = chance > 0.2
    assert popular.sum() > 5
    # each frequency within 4 standard errors of its chance
    assert ((seen - chance).abs()[popular] < 4 * (chance * (1 - chance) / draws).sqrt()[popular] + 1e-3).all()


def test_the_loss_scores_only_the_rows_a_step_needs(shop):
    model = tiny_model().train()
    cfg = config_mod.load(None, ["train.loss=sampled"])
    optimizer = make_optimizer(model, with_data_sizes(cfg, shop))  # the item table now gives sparse gradients
    negatives = Negatives(torch.tensor([1, 11, 12]), UNIFORM, UNIFORM, 4, 3)
    inputs, targets = HISTORY[:, :-1], HISTORY[:, 1:]
    model.loss(inputs, targets, negatives).backward()
    touched = set(model.item_emb.weight.grad.coalesce().indices()[0].tolist())
    assert touched <= set(inputs.flatten().tolist()) | set(targets.flatten().tolist()) | {1, 11, 12}
    assert {11, 12} <= touched and not touched & {10, 13, 14, 15, 16, 17, 18, 19, 20}
    optimizer.step()  # SparseAdam takes the sparse rows, AdamW the rest


def test_auto_takes_sampled_softmax_above_the_catalog_size_key(shop):
    assert config_mod.load(None).train.loss == "auto"
    assert not uses_sampled_softmax(_config(shop))  # 152 items: full softmax, the default where it fits
    assert uses_sampled_softmax(_config(shop, "train.sampled_above=100"))
    assert not uses_sampled_softmax(_config(shop, "train.loss=ce", "train.sampled_above=100"))
    assert uses_sampled_softmax(_config(shop, "train.loss=sampled"))
    assert not uses_sampled_softmax(_config(shop, "train.loss=sampled", "train.task=click"))
    windows = torch.from_numpy(training_windows(shop, make_split(shop).train, 20))
    assert negative_sampler(windows, _config(shop)) is None
    assert isinstance(negative_sampler(windows, _config(shop, "train.sampled_above=100")), NegativeSampler)


def test_sampled_softmax_needs_some_negatives():
    with pytest.raises(ConfigError, match="no negatives"):
        config_mod.load(None, ["train.loss=sampled", "train.num_negatives=0", "train.in_batch_negatives=0"])
    with pytest.raises(ConfigError, match="'ce', 'sampled', 'auto'"):
        config_mod.load(None, ["train.loss=hinge"])
    config_mod.load(None, ["train.loss=ce", "train.num_negatives=0", "train.in_batch_negatives=0"])


def test_the_split_optimizer_state_survives_a_round_trip(shop, tmp_path):
    cfg = with_data_sizes(config_mod.load(None, ["train.loss=sampled"]), shop)
    model = tiny_model().train()
    optimizer = make_optimizer(model, cfg)
    negatives = Negatives(torch.tensor([1, 11]), UNIFORM, UNIFORM, 4, 2)
    for _ in range(2):
        optimizer.zero_grad()
        model.loss(HISTORY[:, :-1], HISTORY[:, 1:], negatives).backward()
        optimizer.step()
    save_optimizer(tmp_path / "optimizer.safetensors", optimizer)
    again = make_optimizer(tiny_model().train(), cfg)
    load_optimizer(tmp_path / "optimizer.safetensors", again)
    saved, loaded = optimizer.state_dict(), again.state_dict()
    assert saved["state"].keys() == loaded["state"].keys() and len(saved["state"]) == len(list(model.parameters()))
    for index, state in saved["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(torch.as_tensor(loaded["state"][index][name]), value)


def test_sampled_training_on_the_shop_learns_well_above_popularity(shop, tmp_path):
    out = tmp_path / "run"
    sets = ["train.loss=sampled", "train.num_negatives=32", "train.epochs=6", "model.use_text=false", "train.threads=1"]
    args = ["train", "--data", SHOP, "--out", str(out), "--config", str(TINY), *[a for s in sets for a in ("--set", s)]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "loss: sampled softmax" in result.output
    model_ndcg = load_info(out).state["best_valid"]["NDCG@10"]
    split = make_split(shop)
    pop_ndcg = evaluate(PopularityScorer(shop, split.train), shop, split.valid, 20)["NDCG@10"]
    assert model_ndcg > 1.2 * pop_ndcg, (model_ndcg, pop_ndcg)


# ---------------------------------------------------------------------- chunked ranking
def test_rank_chunks_adds_up_to_rank_across_chunk_boundaries():
    # ties split across chunks, an owned item, an excluded item, the target at a chunk's edge
    scores = torch.tensor([[0.0, 3, 1, 3, 3, 2, 3, 1], [0.0, 1, 1, 1, 2, 1, 1, 1]])
    items = torch.tensor([3, 2])
    owned = torch.tensor([[4, 0], [5, 7]])
    own = scores.gather(1, items[:, None])[:, 0]
    for seed in range(20):
        whole = rank(scores, items, owned=owned, exclude=[6], rng=np.random.default_rng(seed))
        for bounds in ([0, 3, 8], [0, 2, 4, 6, 8], [0, 4, 5, 8]):
            chunks = [(lo, scores[:, lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
            parts = rank_chunks(chunks, items, own, owned=owned, exclude=[6], rng=np.random.default_rng(seed))
            assert torch.equal(parts, whole), (seed, bounds)


def _unchunked(scorer):
    """The same scorer as a plain callable: rank_targets scores the whole catalog at once."""
    return lambda histories, events=None: scorer(histories) if events is None else scorer(histories, events)


def test_chunked_evaluation_equals_unchunked_with_ties(shop):
    split = make_split(shop)
    popularity = PopularityScorer(shop, split.train)  # many items bought equally often: ties
    ties = np.bincount(popularity.scores.numpy().astype(int))
    assert (ties[1:] > 1).sum() > 5, "the case must have tied scores"
    warm = np.arange(1, shop.n_items + 1)[::3]
    for kwargs in ({}, {"exclude_history": False}, {"exclude": warm}, {"protocol": "sampled"}):
        whole = rank_targets(_unchunked(popularity), shop, split.valid, 20, batch_size=128, **kwargs)
        for chunk in (16, 50, 10_000):
            chunked = rank_targets(popularity, shop, split.valid, 20, batch_size=128, chunk_size=chunk, **kwargs)
            assert np.array_equal(chunked, whole), (kwargs, chunk)
    # the tie rule decides many of these ranks: another seed moves them
    other = rank_targets(popularity, shop, split.valid, 20, chunk_size=16, seed=1)
    assert not np.array_equal(other, rank_targets(popularity, shop, split.valid, 20, chunk_size=16))


def test_chunked_evaluation_of_the_model_equals_unchunked(tiny_run):
    rec = Recommender.load(tiny_run)
    parts = rec.split()
    scorer = model_scorer(rec.model)
    for protocol in ("full", "sampled"):
        whole = rank_targets(_unchunked(scorer), rec.data, parts.test, 20, protocol=protocol, batch_size=100)
        for chunk in (16, 37):
            chunked = rank_targets(
                scorer, rec.data, parts.test, 20, protocol=protocol, batch_size=100, chunk_size=chunk
            )
            assert np.array_equal(chunked, whole), (protocol, chunk)
