"""Approximate retrieval (recscope.retrieval): the index's search depth tuned to a target
recall on a small clustered table (and that recall holding on other queries), exact re-scoring
of its candidates, the recommend path with the index on giving the exact path's top-K, hidden
items never returned, added items found, the index cached per version and reused (re-tuned, not
rebuilt, for another target), a damaged index rebuilt with a note naming it, and training
building a tuned index that the version listing shows."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from conftest import TINY_SPEC, _train
from recscope import config as config_mod
from recscope import retrieval, versions
from recscope.config import RetrievalConfig
from recscope.errors import ConfigError
from recscope.ranking import top_k, top_k_among
from recscope.recommend import Recommender
from recscope.serve.app import create_app
from recscope.serve.settings import Settings

ON = RetrievalConfig(ann="on")  # the default index (ivfpq)
OFF = RetrievalConfig(ann="off")
KINDS = [RetrievalConfig(ann="on", index=kind) for kind in ("ivfpq", "ivf", "hnsw")]


def clustered_table(n: int, width: int, seed: int = 0) -> torch.Tensor:
    """(n + 1, width) a table shaped like a trained one: items of 50 categories and 300 brands
    (their embeddings summed) plus an id part whose scale varies by item; row 0 padding."""
    rng = np.random.default_rng(seed)
    brand = rng.integers(0, 300, n)
    parts = rng.normal(0, 1, (50, width))[brand % 50] + rng.normal(0, 0.7, (300, width))[brand]
    ids = rng.normal(0, 1, (n, width)) * rng.uniform(0.3, 1.2, (n, 1))
    return torch.from_numpy(np.vstack([np.zeros((1, width)), parts + ids]).astype(np.float32))


def queries(table: torch.Tensor, n: int, seed: int = 1) -> torch.Tensor:
    """(n, C) hidden-state-like queries: the mean of three items' tokens plus noise, layer-normed."""
    rng = np.random.default_rng(seed)
    q = table[torch.from_numpy(rng.integers(1, len(table), (n, 3)))].mean(1)
    return torch.nn.functional.layer_norm(
        q + torch.randn(q.shape, generator=torch.Generator().manual_seed(seed)), q.shape[1:]
    )


def dot(query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return query @ tokens.T


def recall_at(index: retrieval.ItemIndex, table: torch.Tensor, qs: torch.Tensor) -> float:
    """recall@10 of ``index`` through ``retrieval.top_k``, one query at a time, as the service asks."""
    hits = []
    for q in qs:
        exact = top_k(dot(q[None], table)[0], 10)
        found = retrieval.top_k(index, q[None], table, 10, np.array([], dtype=np.int64), dot)
        hits.append(len(set(found.indices.tolist()) & set(exact.indices.tolist())) / 10)
    return float(np.mean(hits))


@pytest.mark.parametrize("kind", ["ivfpq", "ivf", "hnsw"])
def test_the_depth_is_tuned_to_the_target_recall_on_a_small_table(kind):
    table = clustered_table(5000, 32)
    # hnsw with pool 1: 10 candidates, so its shallowest search (ef_search 10) falls short
    pool = 1 if kind == "hnsw" else RetrievalConfig.pool
    cfg = RetrievalConfig(ann="on", index=kind, target_recall=0.95, tune_queries=300, pool=pool)
    index = retrieval.build(table, "test", cfg, queries(table, 300, seed=11).numpy(), "seed 11")
    tuning = index.info.tuning
    assert (tuning.target, tuning.queries, tuning.source) == (0.95, 300, "seed 11")
    # reached: the recall's one-sided 95% lower bound over the 300 queries is at the target
    assert tuning.reached and tuning.recall > tuning.lower >= 0.95 and index.depth == tuning.depth
    # the smallest depth tried that reaches the target (bounds recorded to 4 decimals), and the
    # bisection closed in on it: the depth just below (within 1/16) was tried and fell short
    tried = {int(d): lower for d, _, lower in tuning.tried}
    below = [d for d in tried if d < tuning.depth]
    assert all(tried[d] <= 0.95 for d in below) and all(tried[d] >= 0.95 for d in tried if d >= tuning.depth)
    assert below and tuning.depth - max(below) <= max(1, tuning.depth // 16)
    low, deepest = index.kind.depths(index.info.settings, 5000, 10 * pool)
    assert low < tuning.depth < deepest  # a real search: neither the shallowest nor exhaustive
    # the recall recorded is what the service gets on those queries, one at a time...
    assert recall_at(index, table, queries(table, 300, seed=11)) == pytest.approx(tuning.recall, abs=5e-5)
    # ...and it holds on queries it was not tuned on (300 queries: 3,000 hits, a standard error ~0.004)
    assert recall_at(index, table, queries(table, 300, seed=12)) >= 0.94
    # one step shallower, the recall the service gets is the one recorded there, short of the target
    shallower = retrieval.ItemIndex(index.index, index.info, cfg)
    shallower.depth = max(below)
    recorded = {int(d): recall for d, recall, _ in tuning.tried}[max(below)]
    assert recall_at(shallower, table, queries(table, 300, seed=11)) == pytest.approx(recorded, abs=5e-5)


def test_a_target_out_of_reach_searches_deepest_and_says_so(capsys):
    # ivfpq ranks by 4-bit codes: with pool 1 (no room for the exact re-scoring to recover from)
    # even a scan of every list misses the target
    table = clustered_table(5000, 32)
    cfg = RetrievalConfig(ann="on", index="ivfpq", target_recall=0.95, pool=1)
    index = retrieval.build(table, "test", cfg, queries(table, 300, seed=11).numpy())
    lists = index.info.settings["lists"]
    assert not index.info.tuning.reached and index.depth == lists and index.info.tuning.lower < 0.95
    err = " ".join(capsys.readouterr().err.split())
    assert f"at its deepest search (ivf_probe={lists}), short of retrieval.target_recall 0.95" in err


def test_without_a_target_the_depth_is_the_configs():
    table = clustered_table(2000, 16)
    index = retrieval.build(table, "test", RetrievalConfig(ann="on", target_recall=0, ivf_probe=3), queries(table, 50))
    assert index.info.tuning is None and index.depth == 3
    untuned = retrieval.build(table, "test", RetrievalConfig(ann="on", ivf_probe=5))  # no queries to tune on
    assert untuned.info.tuning is None and untuned.depth == 5


@pytest.mark.parametrize("kind", ["ivfpq", "ivf", "hnsw"])
def test_recall_on_a_clustered_table_and_candidates_scored_exactly(kind):
    table = clustered_table(5000, 32)
    cfg = RetrievalConfig(ann="on", index=kind)
    index = retrieval.build(table, "test", cfg, queries(table, 1000, seed=11).numpy())
    hits = []
    for q in queries(table, 50):
        exact = top_k(dot(q[None], table)[0], 10)
        found = retrieval.top_k(index, q[None], table, 10, np.array([], dtype=np.int64), dot)
        hits.append(len(set(found.indices.tolist()) & set(exact.indices.tolist())) / 10)
        # every score returned is the exact inner product of that item (up to float rounding)
        torch.testing.assert_close(found.values, (table[found.indices] @ q), rtol=1e-5, atol=1e-5)
    assert np.mean(hits) >= 0.95, f"{kind}: recall@10 {np.mean(hits):.3f}"


def test_top_k_among_is_top_k_of_the_full_row_ties_included():
    rng = np.random.default_rng(3)
    full = torch.full((1000,), float("-inf"))
    items = torch.from_numpy(rng.choice(np.arange(1, 1000), 200, replace=False))
    scores = torch.from_numpy(rng.integers(0, 5, 200).astype(np.float32))  # many exact ties
    scores[:3] = float("-inf")  # hidden candidates stay hidden
    full[items] = scores
    for k in (1, 10, 150, 500):
        expected = top_k(full, k)
        got = top_k_among(scores, items, 1000, k)
        assert got.indices.tolist() == expected.indices.tolist()
        assert got.values.tolist() == expected.values.tolist()


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run: the index is cached inside the run."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.mark.parametrize("on", KINDS, ids=lambda c: c.index)
def test_recommend_with_the_index_is_the_exact_top_k(run, on):
    exact, ann = Recommender.load(run, retrieval_config=OFF), Recommender.load(run, retrieval_config=on)
    assert exact.index is None and ann.index is not None and ann.index.items == exact.data.n_items
    for user in exact.data.user_ids[:40]:
        for k in (1, 10, 30):
            want = [(r.item_id, r.score) for r in exact.recommend(user, k=k)]
            got = [(r.item_id, r.score) for r in ann.recommend(user, k=k)]
            assert [i for i, _ in got] == [i for i, _ in want], (user, k)
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-5)
    history = exact.data.item_ids[5:9]
    assert [r.item_id for r in ann.recommend(history=history)] == [r.item_id for r in exact.recommend(history=history)]
    got, want = (r.what_if(exact.data.user_ids[0], add=[exact.data.item_ids[3]]) for r in (ann, exact))
    for key in ("before", "after"):
        assert [r["item_id"] for r in got[key]] == [r["item_id"] for r in want[key]]
    assert (got["entered"], got["left"]) == (want["entered"], want["left"])


@pytest.mark.parametrize("on", KINDS, ids=lambda c: c.index)
def test_owned_and_excluded_items_are_never_returned(run, on):
    ann, exact = Recommender.load(run, retrieval_config=on), Recommender.load(run, retrieval_config=OFF)
    user = ann.data.user_ids[7]
    owned = {ann.data.item_ids[i] for i in ann.history(user)}
    first = [r.item_id for r in ann.recommend(user, k=20)]
    exclude = first[:10]
    got = [r.item_id for r in ann.recommend(user, k=20, exclude=exclude)]
    assert not (set(got) & (owned | set(exclude)))
    assert got == [r.item_id for r in exact.recommend(user, k=20, exclude=exclude)]
    # all but five items hidden: the index's search steps around them, or the exact path takes over
    keep = [i for i in ann.data.item_ids[1:] if i not in owned][:5]
    hidden = [i for i in ann.data.item_ids[1:] if i not in keep]
    got = [r.item_id for r in ann.recommend(user, k=10, exclude=hidden)]
    assert sorted(got) == sorted(keep)
    assert got == [r.item_id for r in exact.recommend(user, k=10, exclude=hidden)]


def test_an_item_added_after_training_is_found_at_its_exact_rank(run):
    ann, exact = Recommender.load(run, retrieval_config=ON), Recommender.load(run, retrieval_config=OFF)
    attributes = {f.name: [f.vocab[v] for v in f.values[10] if v > 0] for f in ann.data.fields}  # item 10's
    for rec in (ann, exact):
        rec.set_item("NEW-1", "A new item", attributes)
    assert ann.data.find("NEW-1") > ann.index.items  # not in the index: searched beside it
    torch.testing.assert_close(ann.snapshot.table, exact.snapshot.table)  # the grown table is the full one
    user = ann.data.user_ids[3]
    ranked = [r.item_id for r in exact.recommend(user, k=ann.data.n_items)]
    k = ranked.index("NEW-1") + 1
    got = [r.item_id for r in ann.recommend(user, k=k)]
    assert got == ranked[:k] and got[-1] == "NEW-1"
    assert "NEW-1" not in [r.item_id for r in ann.recommend(user, k=k, exclude=["NEW-1"])]


def test_the_index_is_cached_per_version_and_reused(run, capsys):
    first = Recommender.load(run, retrieval_config=ON)
    where = retrieval.folder(run, first.version)
    meta = json.loads((where / retrieval.META_FILE).read_text())
    assert meta["version"] == first.version and meta["items"] == first.data.n_items and meta["kind"] == ON.index
    # tuned on the run's own users' histories (200 users: fewer than tune_queries, so all of them)
    assert meta["tuning"]["queries"] == first.data.n_users and meta["tuning"]["target"] == ON.target_recall
    assert meta["tuning"]["lower"] >= ON.target_recall and first.index.depth == meta["tuning"]["depth"]
    files = (retrieval.INDEX_FILE, retrieval.META_FILE)
    stamps = [(where / f).stat().st_mtime_ns for f in files]
    second = Recommender.load(run, retrieval_config=dataclasses.replace(ON, ivf_probe=1))  # an untuned depth: unused
    assert [(where / f).stat().st_mtime_ns for f in files] == stamps
    assert second.index.info == first.index.info and second.index.depth == first.index.depth
    assert "rebuilding" not in capsys.readouterr().err
    # another target: re-tuned on the same index (its file untouched), and the note says why
    third = Recommender.load(run, retrieval_config=dataclasses.replace(ON, target_recall=0.5))
    assert (where / retrieval.INDEX_FILE).stat().st_mtime_ns == stamps[0]
    assert third.index.info.tuning.target == 0.5 and third.index.depth <= first.index.depth
    assert "re-tuning the ANN index" in capsys.readouterr().err
    assert json.loads((where / retrieval.META_FILE).read_text())["tuning"]["target"] == 0.5
    # other build settings: rebuilt, and the note says why
    fourth = Recommender.load(run, retrieval_config=dataclasses.replace(ON, ivf_lists=1))
    assert fourth.index.info.settings["lists"] == 1 and "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_a_damaged_index_is_rebuilt_with_a_note_naming_it(run, capsys, damage):
    first = Recommender.load(run, retrieval_config=ON)
    where = retrieval.folder(run, first.version)
    path = where / retrieval.INDEX_FILE
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
    else:
        (where / retrieval.META_FILE).write_text("{not json")
    capsys.readouterr()
    again = Recommender.load(run, retrieval_config=ON)
    err = capsys.readouterr().err
    assert "rebuilding the ANN index" in err and str(where) in " ".join(err.split())
    user = again.data.user_ids[0]
    exact = Recommender.load(run, retrieval_config=OFF)
    assert [r.item_id for r in again.recommend(user)] == [r.item_id for r in exact.recommend(user)]
    assert retrieval.load(where, again.snapshot.table, again.version, ON).info == again.index.info  # valid again


def test_a_rating_run_scores_exactly_and_ann_on_is_refused_for_it():
    assert not retrieval.wanted(config_mod.load(overrides=["train.task=rating"]), 10**9)
    assert retrieval.wanted(config_mod.load(), 100_001) and not retrieval.wanted(config_mod.load(), 100_000)
    assert not retrieval.wanted(config_mod.load(overrides=["retrieval.ann=off"]), 10**9)
    with pytest.raises(ConfigError, match="retrieval.ann=on needs train.task=next_item"):
        config_mod.load(overrides=["retrieval.ann=on", "train.task=rating"])


def test_training_builds_the_index_and_the_service_serves_from_it(tmp_path):
    out = _train(tmp_path / "run", TINY_SPEC, "--set", "train.epochs=1", "--set", "retrieval.ann=on")
    rec = Recommender.load(out)
    assert rec.index is not None and (retrieval.folder(out, rec.version) / retrieval.META_FILE).exists()
    # the version listing shows the index's tuned depth and the recall it reached
    tuning = rec.index.info.tuning
    assert tuning is not None and tuning.reached and tuning.queries == rec.data.n_users
    shown = versions.read(out, rec.version).index
    assert shown["kind"] == ON.index and (shown["depth"], shown["recall@10"]) == (tuning.depth, tuning.recall)
    assert "index" not in json.loads((out / versions.VERSIONS / rec.version / "version.json").read_text())
    exact = Recommender.load(out, retrieval_config=OFF)
    user = rec.data.user_ids[1]
    with TestClient(create_app(Settings(run=out, db=f"sqlite:///{tmp_path / 'store.sqlite'}"))) as client:
        body = client.get(f"/users/{user}/recommendations", params={"k": 10, "exclude": rec.data.item_ids[1]}).json()
    want = exact.recommend(user, k=10, exclude=[rec.data.item_ids[1]])
    assert [i["item_id"] for i in body["items"]] == [r.item_id for r in want]
