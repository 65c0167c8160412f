"""The item-token lever text LayerNorm (model.text_norm, text_scale); id dropout is train.id_dropout."""

import dataclasses

import pytest
import torch

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
