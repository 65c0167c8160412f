"""The item-token lever text LayerNorm (model.text_norm, text_scale), the weights' moving average
(train.ema); id dropout is train.id_dropout."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tests.conftest import TINY, TINY_SPEC
from typer.testing import CliRunner

from recscope.cli import app
from recscope.config import ConfigError, ModelConfig, load
from recscope.data import load_dataset, split_of, training_windows
from recscope.model import SeqRec
from recscope.train import learning_rate

torch.set_num_threads(1)

HISTORY = torch.tensor([[0, 0, 3, 5, 7, 2], [1, 2, 3, 4, 5, 6]])


def model_with_text(**overrides) -> SeqRec:
    cfg = ModelConfig(max_len=6, d_model=16, n_layers=1, n_heads=2, dropout=0.0, attn_dropout=0.0, n_items=20)
    torch.manual_seed(0)
    model = SeqRec(dataclasses.replace(cfg, text_dim=8, **overrides))
    model.set_item_fields({}, text=torch.nn.functional.normalize(torch.randn(21, 8), dim=-1))
    return model


def test_text_norm_gives_the_text_part_unit_variance_times_text_scale():
    model = model_with_text(text_norm=True, text_scale=0.5)
    text = model.field_embeddings(torch.arange(1, 21))["text"]  # (20, C)
    assert torch.allclose(text.std(-1, unbiased=False), torch.full((20,), 0.5), atol=0.02)  # LayerNorm eps
    assert model_with_text().text_norm is None  # off by default: the checkpoint has no extra weights


def test_text_norm_normalises_each_towers_columns_on_their_own():
    model = model_with_text(text_norm=True, text_scale=0.5, towers=2)
    with torch.no_grad():
        model.text_proj.weight[16:] *= 10  # tower 2's projection on another scale than tower 1's
    text = model.field_embeddings(torch.arange(1, 21))["text"].view(20, 2, 16)  # (items, tower, d_model)
    assert torch.allclose(text.std(-1, unbiased=False), torch.full((20, 2), 0.5), atol=0.02)
    assert torch.allclose(text.mean(-1), torch.zeros(20, 2), atol=1e-5)


def test_lever_keys_are_checked():
    assert load(None, ["train.id_dropout=0.2", "model.text_norm=true"]).model.text_norm
    with pytest.raises(ConfigError, match="id_dropout"):
        load(None, ["train.id_dropout=1.0"])
    with pytest.raises(ConfigError, match="text_scale"):
        load(None, ["model.text_scale=0"])


def test_ema_validates_selects_and_saves_the_moving_average_and_resumes_it(tmp_path):
    """train.ema: the weights' average is what valid measures and model.safetensors holds; the raw
    weights (last.safetensors) keep training; --resume goes on from the saved average."""
    out = tmp_path / "run"
    runner = CliRunner()
    train = ["train", "--data", TINY_SPEC, "--out", str(out), "--config", str(TINY), "--set", "train.ema=0.5"]
    result = runner.invoke(app, [*train, "--set", "train.epochs=2", "--set", "train.eval_every=1"])
    assert result.exit_code == 0, result.output
    average, raw = load_file(out / "ema.safetensors"), load_file(out / "last.safetensors")
    assert not torch.equal(average["item_emb.weight"], raw["item_emb.weight"]), "an average, not the weights"
    state = json.loads((out / "run.json").read_text())["state"]
    if state["best_epoch"] == 2:  # the last epoch's average is the best model
        assert torch.equal(load_file(out / "model.safetensors")["item_emb.weight"], average["item_emb.weight"])
    result = runner.invoke(app, ["evaluate", str(out), "--split", "valid", "--json"])
    assert json.loads(result.stdout)["metrics"]["NDCG@10"] == pytest.approx(state["best_valid"]["NDCG@10"])
    result = runner.invoke(app, [*train, "--set", "train.epochs=3", "--set", "train.eval_every=1", "--resume"])
    assert result.exit_code == 0, result.output
    assert not torch.equal(load_file(out / "ema.safetensors")["item_emb.weight"], average["item_emb.weight"])


def test_cosine_schedule_falls_from_lr_to_zero_over_the_epochs_and_resumes_where_it_stopped(tmp_path):
    t = load(None, ["train.lr_schedule=cosine", "train.lr=0.01", "train.epochs=4"]).train
    assert learning_rate(t, 0) == pytest.approx(0.01)
    assert learning_rate(t, 2) == pytest.approx(0.005)  # halfway: half the rate
    assert learning_rate(t, 4) == pytest.approx(0.0) and learning_rate(t, 5) == pytest.approx(0.0)
    assert learning_rate(load(None, ["train.lr=0.01"]).train, 3) == 0.01  # constant by default
    with pytest.raises(ConfigError, match="lr_schedule"):
        load(None, ["train.lr_schedule=linear"])
    # in a run: the last step of epoch 1 of 2 ran at the rate the schedule gives it, also after --resume
    out = tmp_path / "run"
    train = ["train", "--data", TINY_SPEC, "--out", str(out), "--config", str(TINY)]
    train += ["--set", "train.lr_schedule=cosine", "--set", "train.epochs=2", "--set", "train.eval_every=1"]
    runner = CliRunner()
    result = runner.invoke(app, train)
    assert result.exit_code == 0, result.output

    def last_rate() -> float:
        with safe_open(str(out / "optimizer.safetensors"), framework="pt") as f:
            return json.loads(f.metadata()["param_groups"])[0]["lr"]

    config = load(str(TINY), [])
    data = load_dataset(TINY_SPEC, config=config.data)
    steps = math.ceil(
        len(training_windows(data, split_of(data, config).train, config.model.max_len)) / config.train.batch_size
    )
    lr = config.train.lr
    assert last_rate() == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * (1 + (steps - 1) / steps) / 2)))
    result = runner.invoke(app, [*train, "--set", "train.epochs=3", "--resume"])
    assert result.exit_code == 0, result.output
    assert last_rate() == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * (2 + (steps - 1) / steps) / 3)))
