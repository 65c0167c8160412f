"""Sharded towers (train.tower_shards): tower k trained alone on its shard of users, spliced into
one K-tower model that scores the mean of the shard models; forgetting a user trains one shard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY, TINY_SPEC
from recscope import config as config_mod
from recscope import versions
from recscope.cli import app as cli
from recscope.data import Dataset
from recscope.errors import ConfigError
from recscope.forget import forget
from recscope.run import load_data, load_model
from recscope.serve.store import Store
from recscope.shards import shard_of


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "run"
    args = ["train", "--data", TINY_SPEC, "--out", str(out), "--config", str(TINY)]
    sets = ["model.towers=2", "train.tower_shards=true", "train.epochs=1"]
    result = CliRunner().invoke(cli, [*args, *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    return out


def _shards(run: Path) -> list[Path]:
    return [run / r["folder"] for r in versions.read(run, versions.current(run)).details["shards"]]


def test_the_spliced_model_scores_the_mean_of_its_shard_models(sharded):
    model, info = load_model(sharded)
    assert info.config.model.towers == 2 and info.state.other["shards"]["towers"] == 2
    data = load_data(sharded)
    histories = torch.zeros(8, 20, dtype=torch.long)  # (B, T) left-padded
    for u in range(8):
        seq = data.sequence(u)[-20:]
        histories[u, 20 - len(seq) :] = torch.from_numpy(seq)
    singles = [load_model(folder)[0] for folder in _shards(sharded)]
    with torch.no_grad():
        table = model.item_table()
        spliced = model.score(histories, table)
        mean = sum(m.score(histories, m.item_table()) for m in singles) / len(singles)
    assert torch.allclose(spliced, mean, atol=1e-5)
    # each shard holds exactly its users, and together they hold every user once
    held = [Dataset.load(folder).user_ids for folder in _shards(sharded)]
    assert sorted(u for users in held for u in users) == sorted(data.user_ids)
    assert all(shard_of(u, 2) == k for k, users in enumerate(held) for u in users)


def test_forgetting_a_user_trains_their_shard_alone(sharded, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sharded, run)
    before = _shards(run)
    user = load_data(run).user_ids[7]
    k = shard_of(user, 2)
    with Store.for_run(run) as store:
        result = forget(run, user, store)
        assert store.serving() == result["version"]
    assert result["shards_retrained"] == [k]
    after = _shards(run)
    assert after[1 - k] == before[1 - k] and after[k] != before[k]
    assert not before[k].exists()  # the shard trained on the user is deleted
    for folder in after:  # the user's events are in no shard's training data
        assert user not in Dataset.load(folder).user_ids
    assert versions.current(run) == result["version"]
    assert versions.read(run, result["version"]).details["tombstones"]["count"] == 1


def test_tower_shards_needs_towers_and_the_next_item_task():
    with pytest.raises(ConfigError, match="model.towers > 1"):
        config_mod.load(TINY, ["train.tower_shards=true"])
    with pytest.raises(ConfigError, match="data.split=loo"):
        config_mod.load(TINY, ["train.tower_shards=true", "model.towers=2", "data.split=temporal"])
