"""The model: shapes, attention as an output, eager == fused, padding and checkpoints."""

import dataclasses

import pytest
import torch

from recscope.config import ModelConfig
from recscope.model import SeqRec
from recscope.run import save_weights
from recscope.sampling import Negatives

torch.set_num_threads(1)


def tiny_model(**overrides) -> SeqRec:
    cfg = ModelConfig(
        max_len=8,
        d_model=16,
        n_layers=2,
        n_heads=2,
        dropout=0.1,
        attn_dropout=0.1,
        n_items=20,
        fields=(("brand", 5, 1), ("tags", 7, 3)),
    )
    torch.manual_seed(0)
    model = SeqRec(dataclasses.replace(cfg, **overrides))
    g = torch.Generator().manual_seed(1)
    model.set_item_fields(
        {
            "brand": torch.randint(0, 5, (21, 1), generator=g),
            "tags": torch.randint(0, 7, (21, 3), generator=g),
        }
    )
    return model.eval()


HISTORY = torch.tensor([[0, 0, 0, 3, 5, 7, 2, 9], [1, 2, 3, 4, 5, 6, 7, 8]])


def fixed_negatives(items: list[int], n_items: int = 20) -> Negatives:
    """Shared negatives ``items`` for the sampled loss, each drawn once from a uniform sampler."""
    return Negatives(
        torch.tensor(items),
        torch.zeros(n_items + 1, dtype=torch.float64),
        torch.full((n_items + 1,), 1 / n_items, dtype=torch.float64),
        0,
        len(items),
    )


def test_attentions_are_named_outputs_with_the_documented_shapes():
    model = tiny_model()
    out = model(HISTORY, output_attentions=True)
    assert out.hidden.shape == (2, 8, 16)
    assert len(out.attentions) == 2
    for weights in out.attentions:
        assert weights.shape == (2, 2, 8, 8)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 8))
        assert torch.all(weights.triu(diagonal=1) == 0), "a position attends to the future"
        # real positions of the padded row never attend to the 3 padding items
        assert torch.all(weights[0, :, 3:, :3] == 0)
    assert model(HISTORY).attentions is None


def test_eager_and_fused_attention_give_the_same_scores():
    fused = tiny_model(fused_attention=True)
    eager = tiny_model(fused_attention=False)
    eager.load_state_dict(fused.state_dict())
    torch.testing.assert_close(fused.score(HISTORY), eager.score(HISTORY), rtol=1e-5, atol=1e-5)
    # and the explain path (output_attentions) of the fused model is the eager one
    torch.testing.assert_close(
        fused(HISTORY, output_attentions=True).hidden, fused(HISTORY).hidden, rtol=1e-5, atol=1e-5
    )


def test_left_padding_does_not_change_the_scores():
    model = tiny_model()
    short = torch.tensor([[3, 5, 7]])
    padded = torch.tensor([[0, 0, 0, 0, 0, 3, 5, 7]])
    torch.testing.assert_close(model.score(short), model.score(padded), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_the_last_position_alone_is_the_full_forward_s_last_position(fused):
    """``last_only`` and ``last_hidden`` (sorted, trimmed chunks, tokens from the table) are a
    faster way to the same numbers, for any mix of lengths and padding."""
    model = tiny_model(fused_attention=fused)
    g = torch.Generator().manual_seed(3)
    items = torch.randint(1, 21, (37, 8), generator=g)
    items[torch.rand(37, 8, generator=g) < 0.4] = 0  # a random number of items per row
    items = torch.stack([torch.cat([r[r == 0], r[r > 0]]) for r in items])  # left-padded, as explainers make
    items[5] = 0  # and one history with nothing left
    full = model(items).hidden[:, -1]
    torch.testing.assert_close(model(items, last_only=True).hidden[:, -1], full, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        table = model.item_table()
        width = model.cfg.width
        for budget in (1, 4 * 8 * width, 2**18):  # one row a chunk, a few, all rows in one
            torch.testing.assert_close(model.last_hidden(items, table, budget=budget), full, rtol=1e-5, atol=1e-5)


def test_item_tokens_are_the_sum_of_their_fields():
    model = tiny_model()
    items = torch.tensor([[1, 4, 0]])
    parts = model.field_embeddings(items)
    assert set(parts) == {"id", "brand", "tags"}
    torch.testing.assert_close(model.item_tokens(items), parts["id"] + parts["brand"] + parts["tags"])
    assert torch.all(model.item_tokens(torch.tensor([0])) == 0), "padding must be a zero token"


def test_loss_ignores_padding_positions_and_sampled_loss_works():
    model = tiny_model()
    inputs = torch.tensor([[0, 0, 4, 5]])
    targets = torch.tensor([[9, 4, 5, 6]])  # the 9 and the 4 follow padding: not predicted
    other = torch.tensor([[1, 2, 5, 6]])
    torch.testing.assert_close(model.loss(inputs, targets), model.loss(inputs, other))
    sampled = model.loss(inputs, targets, negatives=fixed_negatives([1, 2, 3, 6]))
    assert torch.isfinite(sampled), "a negative equal to the target is masked, not a NaN"


def test_scores_never_rank_padding():
    scores = tiny_model().score(HISTORY)
    assert scores.shape == (2, 21)
    assert torch.all(scores[:, 0] == float("-inf"))


def test_weights_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file

    model = tiny_model()
    save_weights(tmp_path / "m.safetensors", model)
    again = SeqRec(model.cfg)
    again.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    again.eval()
    torch.testing.assert_close(model.score(HISTORY), again.score(HISTORY))


def test_histories_longer_than_max_len_read_the_last_items():
    model = tiny_model()
    long = torch.arange(1, 13)[None, :]  # 12 items, max_len 8
    torch.testing.assert_close(model.score(long), model.score(long[:, -8:]))


def test_text_field_slot():
    model = tiny_model(text_dim=4)
    model.set_item_fields(
        {"brand": torch.zeros(21, 1, dtype=torch.long), "tags": torch.zeros(21, 3, dtype=torch.long)},
        text=torch.randn(21, 4),
    )
    assert "text" in model.field_embeddings(torch.tensor([1]))


@pytest.mark.parametrize("bad", [dict(d_model=15)])
def test_bad_model_config_is_refused(bad):
    with pytest.raises(AssertionError):
        tiny_model(**bad)
