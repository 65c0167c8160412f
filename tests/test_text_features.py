"""The text encoder's cache: a rerun encodes nothing, a new text costs only itself, a damaged
cache is rebuilt, and an encoder that is not a local model folder is a clear error."""

import numpy as np
import pytest

from recscope.errors import ConfigError
from recscope.features.text import TextCache, digest, encode_texts, model_key

TITLES = ["Voltra Phone Smart 3", "Voltra Case for Phone Smart 3", "Argan oil shampoo"]


def test_a_rerun_hits_the_cache_and_a_new_text_costs_only_itself(tmp_path):
    first = encode_texts([*TITLES, ""], cache=tmp_path)
    assert (first.cached, first.encoded) == (0, 3)
    assert np.allclose(np.linalg.norm(first.vectors[:3], axis=1), 1.0, atol=1e-5)
    assert not first.vectors[3].any(), "an empty text gets a zero row"
    again = encode_texts(TITLES, cache=tmp_path)
    assert (again.cached, again.encoded) == (3, 0)
    assert np.array_equal(again.vectors, first.vectors[:3])
    grown = encode_texts([*TITLES, "Voltra Charger"], cache=tmp_path)
    assert (grown.cached, grown.encoded) == (3, 1)
    same, other = grown.vectors[0] @ grown.vectors[1], grown.vectors[0] @ grown.vectors[2]
    assert same > other, "a phone's case is nearer the phone than a shampoo is"


def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path):
    encode_texts(TITLES[:1], cache=tmp_path)
    path = TextCache(tmp_path, model_key("minilm")).path
    path.write_bytes(b"not a safetensors file")
    again = encode_texts(TITLES[:1], cache=tmp_path)
    assert (again.cached, again.encoded) == (0, 1)


def test_an_encoder_that_is_no_model_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match="text_encoder.*does not exist"):
        encode_texts(TITLES, encoder_name=str(tmp_path / "nope"), cache=tmp_path)


def _vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_an_added_text_is_a_small_part_beside_the_bulk_which_is_not_rewritten(tmp_path):
    """An item added to a live catalog costs its own row on disk, not a rewrite of the whole
    cache; another process (a fresh instance) reads it; parts are folded in once they weigh."""
    digests = [digest(f"title {i}") for i in range(1000)]
    vectors = _vectors(1000, 0)
    cache = TextCache(tmp_path, "key")
    cache.add(digests, vectors)  # a catalog's first encoding: the bulk
    bulk = cache.path.stat()
    for i in range(3):  # three items added live, one at a time
        cache.add([digest(f"new {i}")], _vectors(1, i + 1))
    after = cache.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (bulk.st_ino, bulk.st_mtime_ns), "the bulk was rewritten"
    assert len(list(cache.parts.glob("*.safetensors"))) == 3
    fresh = TextCache(tmp_path, "key")  # as another worker process reads the folder
    got, missing = fresh.get([digests[7], digest("new 2")])
    assert missing == [] and np.array_equal(got, np.stack([vectors[7], _vectors(1, 3)[0]]))
    more = [digest(f"more {i}") for i in range(1000)]
    fresh.add(more, _vectors(1000, 9))  # the parts now outweigh the bulk: folded into it
    assert not list(fresh.parts.glob("*.safetensors"))
    again = TextCache(tmp_path, "key")
    assert len(again.rows) == 2003 and again.get([digest("new 0"), more[-1]])[1] == []


def test_processes_adding_at_once_keep_each_others_vectors(tmp_path):
    """Two workers that both add titles (each its own instance) lose none of them: each writes
    its own part, and a fold keeps what the other wrote."""
    base = [digest(f"title {i}") for i in range(100)]
    TextCache(tmp_path, "key").add(base, _vectors(100, 0))
    a, b = TextCache(tmp_path, "key"), TextCache(tmp_path, "key")
    a.add([digest("from a")], _vectors(1, 1))
    b.add([digest("from b")], _vectors(1, 2))
    b.add([digest(f"b {i}") for i in range(200)], _vectors(200, 3))  # b folds: a's part too
    assert TextCache(tmp_path, "key").get([digest("from a"), digest("from b"), base[0]])[1] == []
    a.refresh()  # a sees b's new bulk and reads everything again
    assert a.get([digest("b 199")])[1] == []
