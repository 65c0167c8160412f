"""The item-token levers: text LayerNorm (model.text_norm, text_scale) and id dropout (model.id_dropout)."""

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


def test_id_dropout_zeroes_id_embeddings_in_training_only():
    model = model_with_text(id_dropout=0.5)
    ids = torch.arange(1, 21).repeat(50)  # 1,000 tokens
    fields = model.field_embeddings(ids)
    without_id = fields["text"]
    tokens = model.item_tokens(ids, id_dropout=0.5)
    dropped = torch.isclose(tokens, without_id).all(-1)  # a token is its text part alone
    assert 0.4 < dropped.float().mean() < 0.6
    assert torch.allclose(tokens[~dropped], (fields["id"] + without_id)[~dropped])
    model.eval()
    assert torch.equal(model(HISTORY).hidden, model(HISTORY).hidden)  # no id dropout when scoring
    model.train()
    torch.manual_seed(1)
    a = model(HISTORY).hidden
    torch.manual_seed(2)
    assert not torch.allclose(a, model(HISTORY).hidden)


def test_lever_keys_are_checked():
    assert load(None, ["model.id_dropout=0.2", "model.text_norm=true"]).model.id_dropout == 0.2
    with pytest.raises(ConfigError, match="id_dropout"):
        load(None, ["model.id_dropout=1.0"])
    with pytest.raises(ConfigError, match="text_scale"):
        load(None, ["model.text_scale=0"])
