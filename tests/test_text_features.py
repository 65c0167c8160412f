"""The text encoder's cache: a rerun encodes nothing, a new text costs only itself, a damaged
cache is rebuilt, and an encoder that is not a local model folder is a clear error."""

import numpy as np
import pytest

from recscope.errors import ConfigError
from recscope.features.text import TextCache, encode_texts, model_key

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
