"""User-level DP-SGD (train.privacy=dp, recscope.privacy): per-user gradients against explicit
per-user backward passes, Opacus's clipping of them, one example per user, and a tiny private run
end to end with the accountant's epsilon in run.json."""

import json

import numpy as np
import pytest
import torch
from opacus.optimizers import DPOptimizer
from tests.conftest import TINY, TINY_SPEC
from typer.testing import CliRunner

from recscope import privacy
from recscope.cli import app
from recscope.config import ModelConfig, load
from recscope.data import load_dataset, split_of
from recscope.errors import ConfigError, RunError
from recscope.finetune import finetune
from recscope.model import SeqRec
from recscope.privacy import PrivateTraining, UserExamples, per_user_gradients
from recscope.serve.store import Store
from recscope.train import TrainingData, with_data_sizes

# Every kind of parameter the model has: id, attribute, text and event embeddings, two towers
# (TowerLinear, TowerLayerNorm), two blocks; no dropout, so a user's gradient is one number.
CFG = ModelConfig(
    max_len=6,
    d_model=8,
    n_layers=2,
    n_heads=2,
    towers=2,
    dropout=0.0,
    attn_dropout=0.0,
    n_items=30,
    fields=(("brand", 5, 1), ("category", 7, 2)),
    text_dim=12,
    n_events=4,
)


def _model() -> SeqRec:
    torch.manual_seed(3)
    model = SeqRec(CFG).double()
    generator = torch.Generator().manual_seed(4)
    model.set_item_fields(
        {
            "brand": torch.randint(1, 5, (31, 1), generator=generator),
            "category": torch.randint(0, 7, (31, 2), generator=generator),
        },
        text=torch.randn(31, 12, generator=generator, dtype=torch.float64),
    )
    return model


def _users() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three users' (windows, events): two full windows; one short window; one window of two items."""
    g = torch.Generator().manual_seed(5)
    full = torch.randint(1, 31, (2, 7), generator=g)
    short = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.randint(1, 31, (1, 4), generator=g)], dim=1)
    two = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.randint(1, 31, (1, 2), generator=g)], dim=1)
    return [(w, torch.randint(1, 4, w.shape, generator=g) * (w > 0)) for w in (full, short, two)]


def _explicit(model: SeqRec, windows, events, dropped, unseen) -> dict[str, torch.Tensor]:
    """One user's gradient by a backward pass of the training loss (SeqRec.loss, fused softmax),
    summed over their targets and divided by how many there are."""
    model.zero_grad(set_to_none=True)
    inputs, targets = windows[:, :-1], windows[:, 1:]
    n_targets = ((inputs > 0) & (targets > 0)).sum()
    loss = model.loss(inputs, targets, None, "sum", unseen, dropped, events[:, :-1]) / n_targets
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_per_user_gradients_equal_explicit_backward_passes_for_every_parameter():
    model = _model()
    users = _users()
    dropped = torch.zeros(31, dtype=torch.bool)
    dropped[[3, 7]] = True  # id dropout: the tied table without these ids
    unseen = torch.zeros(31, dtype=torch.bool)
    unseen[29] = True  # a held-out item: no logit
    for user in users:
        user[0][user[0] == 29] = 28
    # the users stacked as UserExamples.gather stacks them: padded with empty windows to the most any has
    windows = torch.zeros(3, 2, 7, dtype=torch.long)
    events = torch.zeros(3, 2, 7, dtype=torch.long)
    for u, (w, e) in enumerate(users):
        windows[u, : len(w)], events[u, : len(e)] = w, e
    grads, losses = per_user_gradients(model, windows, events, dropped, unseen)
    assert set(grads) == {name for name, _ in model.named_parameters()}
    for u, (w, e) in enumerate(users):
        expected = _explicit(model, w, e, dropped, unseen)
        for name, g in expected.items():
            torch.testing.assert_close(grads[name][u], g, rtol=1e-5, atol=1e-7, msg=f"user {u}, {name}")
    # the tied item table: the lookup of the inputs and the softmax over the whole catalog both count
    assert (grads["item_emb.weight"][2] != 0).sum(1).gt(0).sum() > 2 + 1  # more rows than the user's items
    assert losses.shape == (3,) and bool((losses > 0).all())


def test_opacus_clips_each_user_and_sums_over_chunks(monkeypatch):
    """A noiseless DP step with plain SGD (lr 1): the update is minus the sum of the users'
    gradients, each clipped to max_grad_norm over all parameters, over the expected batch."""
    model = _model()
    users = _users()
    flat = torch.cat([w for w, _ in users])
    flat_events = torch.cat([e for _, e in users])
    examples = UserExamples(
        torch.cat([flat, flat.new_zeros(1, 7)]),
        torch.cat([flat_events, flat_events.new_zeros(1, 7)]),
        starts=torch.tensor([0, 2, 3]),
        counts=torch.tensor([2, 1, 1]),
        lengths=torch.tensor([7, 4, 2]),
    )
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    # built by hand, not by PrivateTraining.build: these examples are not a Dataset's, and no noise
    dp = DPOptimizer(sgd, noise_multiplier=0.0, max_grad_norm=0.05, expected_batch_size=3.0)
    training = PrivateTraining(examples, dp, None, "prv", 1.0, 1, 0.1, 8.0, torch.Generator())
    monkeypatch.setattr(privacy, "CHUNK_BUDGET", 1)  # one user per chunk: the step adds up three virtual steps
    assert len(examples.chunks(torch.arange(3), lambda w, t: 1)) == 3
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = [_explicit(model, w, e, None, None) for w, e in users]
    training.step(model, torch.arange(3))
    norms = [torch.sqrt(sum((g**2).sum() for g in user.values())) for user in grads]
    assert all(n > 0.05 for n in norms)  # every user is clipped
    for name, p in model.named_parameters():
        clipped = sum(user[name] * (0.05 / (n + 1e-6)) for user, n in zip(grads, norms, strict=True))
        torch.testing.assert_close(before[name] - p.detach(), clipped / 3, rtol=1e-5, atol=1e-9, msg=name)
    assert training.steps == 1


def test_one_example_per_user_holds_all_their_windows():
    config = load(TINY, ["model.max_len=4"])
    data = load_dataset(TINY_SPEC, None, config.data)
    config = with_data_sizes(config, data)
    split = split_of(data, config)
    training = TrainingData.build(data, split, config, None)
    examples = UserExamples.build(data, split.train, training.windows, training.events)
    train_len = np.bincount(np.repeat(np.arange(data.n_users), data.lengths)[split.train], minlength=data.n_users)
    assert len(examples) == int((train_len >= 2).sum())  # every user with a target, once
    assert int(examples.counts.sum()) == len(training.windows)  # every window in exactly one example
    longest = int(np.argmax(train_len))
    u = int((train_len[:longest] >= 2).sum())  # the longest history's example
    assert int(examples.counts[u]) == -(-(train_len[longest] - 1) // 4) > 2
    windows, _ = examples.gather(torch.tensor([u]))
    user_items = data.items[data.offsets[longest] : data.offsets[longest + 1]][
        split.train[data.offsets[longest] : data.offsets[longest + 1]]
    ]
    targets = windows[0][:, 1:][(windows[0][:, :-1] > 0) & (windows[0][:, 1:] > 0)]
    assert sorted(targets.tolist()) == sorted(user_items[1:].tolist())  # each transition of theirs, once


def test_a_tiny_private_run_reports_its_epsilon(tmp_path):
    out = tmp_path / "run"
    train = ["train", "--data", TINY_SPEC, "--out", str(out), "--config", str(TINY)]
    result = CliRunner().invoke(app, [*train, "--set", "train.privacy=dp", "--set", "train.dp_epsilon=8"])
    assert result.exit_code == 0, result.output
    state = json.loads((out / "run.json").read_text())["state"]
    spent = state["privacy"]
    assert abs(spent["epsilon"] - 8) <= 0.05 * 8 and spent["epsilon"] <= 8
    assert spent["delta"] == 1 / 200 and spent["users"] == 200  # every shopper of the tiny shop has a target
    assert spent["accountant"] == "rdp" and spent["max_grad_norm"] == 1.0
    assert spent["steps"] == 3 * 4 and spent["sample_rate"] == 0.25  # 3 epochs of ceil(200 / 64) steps
    assert spent["noise_multiplier"] > 0.3
    assert state["best_epoch"] == state["epoch"] == 3  # the last epoch is kept, not the best on valid
    assert f"privacy: epsilon {spent['epsilon']:.3f} at delta 0.005 per user" in " ".join(result.output.split())
    resumed = CliRunner().invoke(app, [*train, "--resume", "--set", "train.epochs=4"])
    assert isinstance(resumed.exception, RunError) and "trained with train.privacy=dp" in str(resumed.exception)
    # a fine-tune is not private: its version says so, the run's guarantee is not passed on
    with Store.for_run(out) as store:
        user = load_dataset(TINY_SPEC).user_ids[0]
        store.add_events([{"event_id": f"e{k}", "user_id": user, "item_id": f"P{k:04d}"} for k in range(1, 4)])
        tuned = finetune(out, store, budget=5.0)
    assert tuned.lineage["privacy"].startswith("not private: fine-tuned without DP")
    assert f"epsilon {spent['epsilon']:g}" in tuned.lineage["privacy"]


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("train.task=rating", "trains the next-item task only"),
        ("train.loss=sampled", "needs full softmax"),
        ("train.tower_batches=own", "samples users for all towers at once"),
        ("train.dp_epsilon=0", "train.dp_epsilon=0.0 is not valid"),
        ("train.dp_delta=1", "train.dp_delta=1.0 is not valid"),
        ("train.privacy=yes", "train.privacy='yes' is not valid"),
    ],
)
def test_what_dp_cannot_do_is_refused_with_the_reason(override, says):
    extra = ["model.towers=2"] if "tower_batches" in override else []
    with pytest.raises(ConfigError, match=says.replace("(", r"\(")):
        load(None, ["train.privacy=dp", override, *extra])
