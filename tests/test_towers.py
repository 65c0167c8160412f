"""model.towers: K Transformers side by side are exactly K separately built models, averaged;
training, evaluation and every explainer run on them; the config refuses what they cannot do."""

import dataclasses
import json
import math

import pytest
import torch
from tests.conftest import TINY, TINY_SPEC
from tests.test_model import fixed_negatives
from typer.testing import CliRunner

from recscope.cli import app
from recscope.config import ConfigError, ModelConfig, load
from recscope.explain.api import METHODS
from recscope.explain.attention import RolloutExplainer
from recscope.explain.fields import candidate_fields
from recscope.model import SeqRec
from recscope.recommend import Recommender
from recscope.train import _length_batches

torch.set_num_threads(1)

CFG = ModelConfig(
    max_len=8,
    d_model=16,
    n_layers=2,
    n_heads=2,
    dropout=0.0,
    attn_dropout=0.0,
    n_items=20,
    fields=(("brand", 5, 1), ("tags", 7, 3)),
    text_dim=6,
    n_events=3,
    fused_attention=False,
)
HISTORY = torch.tensor([[0, 0, 0, 3, 5, 7, 2, 9], [1, 2, 3, 4, 5, 6, 7, 8]])
EVENTS = torch.tensor([[0, 0, 0, 1, 2, 1, 1, 2], [1, 1, 2, 2, 1, 1, 2, 1]])
TARGETS = torch.tensor([[0, 0, 5, 7, 2, 9, 11, 4], [2, 3, 4, 5, 6, 7, 8, 12]])


def _catalog(model: SeqRec) -> SeqRec:
    g = torch.Generator().manual_seed(1)
    model.set_item_fields(
        {"brand": torch.randint(0, 5, (21, 1), generator=g), "tags": torch.randint(0, 7, (21, 3), generator=g)},
        text=torch.randn(21, 6, generator=g),
    )
    return model.eval()


def separate_and_side_by_side(towers: int = 3, **overrides) -> tuple[list[SeqRec], SeqRec]:
    """``towers`` separately initialised models and one ``model.towers`` model holding their weights."""
    cfg = dataclasses.replace(CFG, **overrides)
    torch.manual_seed(0)
    alone = [_catalog(SeqRec(cfg)) for _ in range(towers)]
    joint = _catalog(SeqRec(dataclasses.replace(cfg, towers=towers)))
    states = [m.state_dict() for m in alone]
    stacked = {}
    for name, value in joint.state_dict().items():
        parts = [s[name] for s in states]
        if name.startswith("field_values") or name == "text_vectors":
            stacked[name] = parts[0]  # the catalog: shared, not a weight
        elif name.endswith("emb.weight") or any(name.startswith(f"field_emb.{i}.") for i in range(9)):
            stacked[name] = torch.cat(parts, dim=1)  # embedding tables: side by side
        else:
            stacked[name] = torch.cat(parts, dim=0)  # linear maps and LayerNorms: stacked outputs
        assert stacked[name].shape == value.shape, name
    joint.load_state_dict(stacked)
    return alone, joint


def test_towers_score_as_the_mean_of_separate_models_and_show_all_their_heads():
    alone, joint = separate_and_side_by_side()
    expected = torch.stack([m.score(HISTORY, events=EVENTS) for m in alone]).mean(0)
    torch.testing.assert_close(joint.score(HISTORY, events=EVENTS), expected)
    attentions = joint(HISTORY, output_attentions=True, events=EVENTS).attentions
    for layer, weights in enumerate(attentions):
        assert weights.shape == (2, 3 * 2, 8, 8)  # tower k's heads are 2k, 2k + 1
        each = torch.cat([m(HISTORY, output_attentions=True, events=EVENTS).attentions[layer] for m in alone], 1)
        torch.testing.assert_close(weights, each)


@pytest.mark.parametrize("fused", [False, True])
def test_each_tower_learns_from_its_own_loss(fused):
    alone, joint = separate_and_side_by_side(fused_attention=fused)
    loss = joint.loss(HISTORY, TARGETS, events=EVENTS)
    torch.testing.assert_close(loss, torch.stack([m.loss(HISTORY, TARGETS, events=EVENTS) for m in alone]).mean())
    negatives = fixed_negatives([1, 4, 6, 10, 13])
    sampled = joint.loss(HISTORY, TARGETS, negatives, reduction="none", events=EVENTS)
    each = torch.stack([m.loss(HISTORY, TARGETS, negatives, reduction="none", events=EVENTS) for m in alone])
    torch.testing.assert_close(sampled, each.mean(0))
    # a tower's gradient is its own loss's, divided by the number of towers
    loss.backward()
    alone[1].loss(HISTORY, TARGETS, events=EVENTS).backward()
    torch.testing.assert_close(joint.item_emb.weight.grad[:, 16:32], alone[1].item_emb.weight.grad / 3)


@pytest.mark.parametrize("fused", [False, True])
def test_with_own_batches_each_tower_learns_from_its_own_histories(fused):
    """train.tower_batches=own: inputs (towers, B, T), tower k reading only batch k; padding differs per tower."""
    alone, joint = separate_and_side_by_side(fused_attention=fused)
    flip = torch.tensor([[0, 0, 0, 0, 0, 0, 4, 6], [0, 0, 0, 0, 1, 8, 3, 10]])
    inputs = torch.stack([HISTORY, flip, HISTORY.flip(0)])
    flip_targets = torch.tensor([[0, 0, 0, 0, 0, 0, 6, 13], [0, 0, 0, 0, 8, 3, 10, 2]])
    targets = torch.stack([TARGETS, flip_targets, TARGETS.flip(0)])
    events = torch.stack([EVENTS, (flip > 0).long(), EVENTS.flip(0)])
    loss = joint.loss(inputs, targets, events=events, reduction="sum")
    each = [m.loss(x, y, events=e, reduction="sum") for m, x, y, e in zip(alone, inputs, targets, events, strict=True)]
    torch.testing.assert_close(loss, torch.stack(each).mean())
    negatives = fixed_negatives([1, 4, 6, 10, 13])
    sampled = joint.loss(inputs, targets, negatives, events=events)
    each = [m.loss(x, y, negatives, events=e) for m, x, y, e in zip(alone, inputs, targets, events, strict=True)]
    torch.testing.assert_close(sampled, torch.stack(each).mean())
    loss.backward()
    alone[1].loss(inputs[1], targets[1], events=events[1], reduction="sum").backward()
    torch.testing.assert_close(joint.item_emb.weight.grad[:, 16:32], alone[1].item_emb.weight.grad / 3)
    # the same batch for every tower is the shared path
    same = joint.loss(torch.stack([HISTORY] * 3), torch.stack([TARGETS] * 3))
    torch.testing.assert_close(same, joint.loss(HISTORY, TARGETS))


def test_own_batches_give_each_tower_the_whole_epoch_in_its_own_order():
    windows = torch.zeros(1000, 9, dtype=torch.long)
    lengths = torch.randint(1, 10, (1000,), generator=torch.Generator().manual_seed(0))
    for row, n in enumerate(lengths):
        windows[row, 9 - n :] = torch.arange(1, n + 1)
    batches = _length_batches(windows, 64, torch.Generator().manual_seed(3), towers=3)
    assert all(b.shape[0] == 3 for b in batches)
    for tower in range(3):  # every window once per tower
        assert sorted(torch.cat([b[tower] for b in batches]).tolist()) == list(range(1000))
    assert not all(torch.equal(b[0], b[1]) for b in batches)  # their own orders
    # a step's towers read batches of about the same length: little more padding than one tower's
    longest = [int(lengths[b].max()) for b in batches]
    alone = [int(lengths[b].max()) for b in _length_batches(windows, 64, torch.Generator().manual_seed(3))]
    assert sum(longest) <= 1.1 * sum(alone)


def test_the_fast_paths_agree_with_the_full_forward():
    _, joint = separate_and_side_by_side()
    full = joint(HISTORY, events=EVENTS).hidden[:, -1]
    torch.testing.assert_close(joint.query(HISTORY, EVENTS), full)
    torch.testing.assert_close(joint.last_hidden(HISTORY, joint.item_table(), events=EVENTS), full)


def test_field_shares_add_up_to_the_score_and_rollout_averages_the_towers():
    alone, joint = separate_and_side_by_side()
    history, targets = HISTORY[1], torch.tensor([3, 9, 12])
    shares, names = candidate_fields(joint, history, targets)
    assert names == ["id", "brand", "tags", "text"]
    torch.testing.assert_close(shares.sum(-1), joint.score(history[None])[0, targets])
    rollout = RolloutExplainer(joint).attribute(history, targets)
    each = torch.stack([RolloutExplainer(m).attribute(history, targets) for m in alone]).mean(0)
    torch.testing.assert_close(rollout, each)


def test_one_tower_is_the_single_model_parameter_for_parameter():
    single = SeqRec(CFG)
    one = SeqRec(dataclasses.replace(CFG, towers=1))
    assert {k: v.shape for k, v in single.state_dict().items()} == {k: v.shape for k, v in one.state_dict().items()}
    assert SeqRec(dataclasses.replace(CFG, towers=2)).item_emb.weight.shape == (21, 32)


def test_towers_are_checked_by_the_config():
    assert load(None, ["model.towers=3"]).model.width == 3 * load(None, []).model.d_model
    with pytest.raises(ConfigError, match="model.towers"):
        load(None, ["model.towers=0"])
    with pytest.raises(ConfigError, match="model.towers=2 ensembles next-item scores"):
        load(None, ["model.towers=2", "train.task=rating"])
    with pytest.raises(ConfigError, match="train.tower_batches=own gives each tower its own batches"):
        load(None, ["train.tower_batches=own"])


def test_a_towers_run_trains_evaluates_and_explains_end_to_end(tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    train = ["train", "--data", TINY_SPEC, "--out", str(out), "--config", str(TINY)]
    towers = ["--set", "model.towers=2", "--set", "train.tower_batches=own"]
    result = runner.invoke(app, [*train, *towers, "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(out), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    assert 0 < json.loads(result.stdout)["metrics"]["HR@10"] <= 1
    rec = Recommender.load(out)
    assert rec.model.cfg.towers == 2 and rec.model.item_emb.weight.shape[1] == 2 * rec.model.cfg.d_model
    user = rec.data.user_ids[0]
    for method in METHODS:
        explanations = rec.explain(user, top=2, method=method, attentions=True)
        assert explanations, method
        for e in explanations:
            assert e.history and all(math.isfinite(h.weight) for h in e.history), method
            assert math.isfinite(e.score) and e.sentence, method
            assert len(e.attentions[0]) == 2 * rec.config.model.n_heads  # every tower's heads, per layer
    png = tmp_path / "attention.png"
    result = runner.invoke(app, ["explain", str(out), "--user", user, "--top", "2", "--attention-png", str(png)])
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 0
    page = tmp_path / "report"
    result = runner.invoke(app, ["report", str(out), "--users", user, "--out", str(page)])
    assert result.exit_code == 0, result.output
    assert (page / "index.html").exists()
