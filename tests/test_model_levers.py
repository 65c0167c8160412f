"""The item-token lever text LayerNorm (model.text_norm, text_scale), the weights' moving average
(train.ema); id dropout is train.id_dropout."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import TINY, TINY_SPEC
from typer.testing import CliRunner

from recscope.cli import app
from recscope.config import ConfigError, ModelConfig, load
from recscope.model import SeqRec

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
