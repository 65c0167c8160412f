"""recscope federated: a bounded 2-client Flower simulation (Ray, one actor) on the tiny shop.

One simulation for the module (~15 s, most of it Ray starting); the partition is checked on
the data directly."""

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY, TINY_SPEC
from recscope import versions
from recscope.cli import app
from recscope.config import load as load_config
from recscope.data import load_dataset, split_of
from recscope.errors import ConfigError
from recscope.federated import client_of, client_split, partition
from recscope.model import SeqRec
from recscope.recommend import Recommender
from recscope.run import load_info
from recscope.train import TrainingData


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("federated") / "run"
    args = ["federated", "--data", TINY_SPEC, "--config", str(TINY), "--clients", "2", "--rounds", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--cpus", "1"])
    assert result.exit_code == 0, result.output
    return out


def test_the_result_is_a_run_that_recommends(federated_run):
    rec = Recommender.load(federated_run)
    top = rec.recommend(user="U00003", k=5)
    assert len(top) == 5 and len({r.item_id for r in top}) == 5
    assert all(rec.data.find(r.item_id) is not None for r in top)
    (version,) = versions.listing(federated_run)
    assert (version.source, versions.current(federated_run)) == ("federated", version.id)
    assert version.details["rounds"] == 2 and version.details["clients"] == 2
    info = load_info(federated_run)
    assert info.origin == "federated"
    assert info.config.train.epochs == 2  # rounds x local epochs, recorded for a like-for-like central run


def test_run_json_records_the_federation(federated_run):
    from flwr.app import ArrayRecord  # after recscope.federated, which keeps Flower's telemetry off

    info = load_info(federated_run)
    fed = info.state.other["federation"]
    assert (fed["clients"], fed["rounds"], fed["local_epochs"], fed["clients_per_round"]) == (2, 2, 1, 2)
    assert fed["dp"] is None and fed["strategy"] == "FedAvg" and fed["backend"] == "ray"
    # bytes per message: every parameter, the item table included, as float32 with its name and
    # .npy header (Flower's ArrayRecord.count_bytes); the catalog's buffers do not travel
    model = SeqRec(info.config.model)
    params = dict(model.named_parameters())
    per_client = ArrayRecord({n: p.detach() for n, p in params.items()}).count_bytes()
    raw = sum(p.numel() * 4 for p in params.values())
    assert raw < per_client < raw + 200 * len(params)
    assert params["item_emb.weight"].shape[0] == 121  # 120 items and padding: the whole table
    assert [r["round"] for r in fed["rounds_log"]] == [1, 2]
    for r in fed["rounds_log"]:
        assert (r["clients"], r["bytes_down"], r["bytes_up"]) == (2, 2 * per_client, 2 * per_client)
        assert set(r["valid"]) == {"HR@10", "NDCG@10"}
    # per round valid metrics in the history, the best of them selected, as training records them
    valid = [h["valid"]["NDCG@10"] for h in info.state.history]
    assert [h["round"] for h in info.state.history] == [1, 2]
    assert info.state.best_valid["NDCG@10"] == max(valid)
    assert info.state.best_epoch == 1 + int(np.argmax(valid))


def test_clients_hold_disjoint_users_that_cover_all_training_data(federated_run):
    config = load_config(TINY)
    data = load_dataset(TINY_SPEC, config=config.data)
    split = split_of(data, config)
    owner = partition(data.user_ids, 2)
    masks = [client_split(data, split, owner, c).train for c in (0, 1)]
    assert not (masks[0] & masks[1]).any()  # no training event on two clients
    assert ((masks[0] | masks[1]) == split.train).all()  # and none left out
    user_of = np.repeat(np.arange(data.n_users), data.lengths)
    for c, mask in enumerate(masks):
        assert set(owner[user_of[mask]]) == {c}  # a client's events are its own users'
    # the run's per-client counts are these: users and predictions add up to the whole shop's
    fed = load_info(federated_run).state.other["federation"]
    assert [c["users"] for c in fed["per_client"]] == [int((owner == c).sum()) for c in (0, 1)]
    central = TrainingData.build(data, split, config, None).targets()
    assert sum(c["targets"] for c in fed["per_client"]) == central


def test_the_partition_is_a_stable_hash_of_the_user_id():
    ids = [f"U{i:05d}" for i in range(50)]
    assert list(partition(ids[::-1], 3)) == list(partition(ids, 3)[::-1])  # not the order of the data
    # SHA-256 of the id, first 8 bytes big-endian, mod N: the same on every machine and run
    assert [client_of(u, 10) for u in ("U00000", "U00001", "alice")] == [9, 3, 7]


def test_dp_noise_needs_a_clip(tmp_path):
    args = ["federated", "--data", TINY_SPEC, "--clients", "2", "--rounds", "1", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, "--config", str(TINY), "--dp-noise", "1.0"])
    assert isinstance(result.exception, ConfigError)  # main() prints it as one line, status 2
    assert "--dp-noise 1.0 needs --dp-clip" in str(result.exception)
    assert not (tmp_path / "r").exists()
