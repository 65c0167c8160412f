"""Config values out of range fail at load, naming the key, the value and the valid range;
and no ``--set`` string, YAML file or run.json config makes loading fail any other way.
"""

import math
from dataclasses import fields
from typing import get_type_hints

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recscope import config
from recscope.config import RULES, Config, ConfigError

# --set value -> a piece of the valid range the message must state
OUT_OF_RANGE = {
    "train.lr=-0.001": "(0, 10]",
    "train.lr=0": "(0, 10]",
    "train.lr=.nan": "(0, 10]",
    "model.dropout=1.5": "[0, 1)",
    "model.attn_dropout=-0.1": "[0, 1)",
    "model.d_model=0": "[1, 8192]",
    "model.n_heads=0": "[1, 256]",
    "model.n_layers=0": "[1, 64]",
    "model.max_len=0": "[1, 10000]",
    "eval.ks=[5, 20]": "includes 10",
    "eval.ks=[0, 10]": "from 1 to",
    "eval.ks=[-5, 10]": "from 1 to",
    "train.patience=-1": "[1, ",
    "train.batch_size=0": "[1, ",
    "eval.batch_size=0": "[1, ",
    "train.eval_every=0": "[1, ",
    "train.epochs=0": "[1, ",
    "data.temporal_valid=0": "(0, 1)",
    "data.temporal_test=1.0": "(0, 1)",
    "data.price_bands=0": "[1, 1000]",
    "train.threads=-2": "[0, 1024]",
    "train.num_negatives=-1": "[0, ",  # 0 is in-batch negatives only
    "eval.num_negatives=0": "[1, ",
    "train.seed=-1": "[0, ",
    "train.weight_decay=-1": "[0, 10]",
    "train.loss=hinge": "'ce', 'sampled'",
    "data.split=random": "'loo', 'temporal'",
    "data.list_separator=''": "non-empty",
}


@pytest.mark.parametrize("override", list(OUT_OF_RANGE))
def test_an_out_of_range_value_names_key_value_and_range(override):
    key, _, value = override.partition("=")
    with pytest.raises(ConfigError) as caught:
        config.load(None, [override])
    message = str(caught.value)
    assert f"--set {override}" in message and f"{key}=" in message, message
    assert OUT_OF_RANGE[override] in message, message
    assert "(the default)" in message, message  # the fix shows a valid value


@pytest.mark.parametrize(
    ("overrides", "piece"),
    [
        (["data.temporal_valid=0.9", "data.temporal_test=0.9"], "must be below data.temporal_test=0.9"),
        (["model.d_model=30", "model.n_heads=4"], "not divisible by model.n_heads=4"),
    ],
)
def test_keys_that_must_agree(overrides, piece):
    with pytest.raises(ConfigError, match=piece):
        config.load(None, overrides)


def test_overrides_are_checked_together_not_one_at_a_time():
    cfg = config.load(None, ["model.n_heads=3", "model.d_model=48"])  # 64 % 3 != 0 in between
    assert (cfg.model.d_model, cfg.model.n_heads) == (48, 3)


def test_a_yaml_file_is_checked_and_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: -1\n")
    with pytest.raises(ConfigError, match=rf"{path}: train.lr=-1.0 is not valid"):
        config.load(path)


def test_keys_filled_from_the_data_cannot_be_set():
    with pytest.raises(ConfigError, match="model.n_items is filled from the data"):
        config.load(None, ["model.n_items=5"])


def test_every_rule_names_a_key_and_every_number_or_choice_has_a_rule():
    hints = {s.name: get_type_hints(type(getattr(Config(), s.name))) for s in fields(Config)}
    keys = {f"{s}.{k}": hint for s, section in hints.items() for k, hint in section.items()}
    assert set(RULES) <= set(keys), f"rules for unknown keys: {set(RULES) - set(keys)}"
    for key, hint in keys.items():
        if hint in (int, float) or key in ("data.split", "train.loss", "eval.ks"):
            assert key in RULES, f"{key} has no valid range in config.RULES"


def test_the_defaults_and_committed_configs_are_valid():
    config.validate(Config())
    assert config.load(None, []) == Config()


# ---------------------------------------------------------------------- fuzz
KEYS = sorted(f"{s.name}.{k.name}" for s in fields(Config) for k in fields(getattr(Config(), s.name)))
yaml_scalars = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            "~",
            "null",
            "true",
            "no",
            ".nan",
            "-.inf",
            "1e400",
            "9" * 400,
            "0x1F",
            "1_000",
            "2024-01-01",
            "[",
            "]",
            "{",
            "{a: 1}",
            "[1, 2",
            "[[1]]",
            "[10, true]",
            "[5, 10, 20]",
            '"10"',
            "'x",
            "!!python/object:os.system ls",
            "&a [*a]",
            "*a",
            "- 1\n- 2",
            ": :",
            "%YAML 1.1",
            "\t",
            "\x00",
            "é",
            "ce",
            "loo",
            "temporal",
            "|",
            "[[a, 1, 1]]",
            "[[a, 1]]",
        ]
    ),
    st.text(max_size=12),
)
set_keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=15), st.sampled_from(["train", ".", "a.b.c", "=x"]))


def loads_or_config_error(action) -> None:
    try:
        result = action()
    except ConfigError as e:
        assert "\n" not in str(e), f"not one line: {e}"
        return
    config.validate(result)  # whatever loads is valid, and survives the trip through run.json
    assert Config.from_dict(result.to_dict()) == result


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.tuples(set_keys, yaml_scalars), min_size=1, max_size=3))
def test_fuzz_set_overrides(pairs):
    loads_or_config_error(lambda: config.load(None, [f"{k}={v}" for k, v in pairs]))


@FUZZ
@given(st.lists(st.text(max_size=40), min_size=1, max_size=2))
def test_fuzz_raw_set_strings(items):
    loads_or_config_error(lambda: config.load(None, items))


values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**20), max_value=10**400),
        st.floats(),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
sections = st.dictionaries(
    st.one_of(st.sampled_from(["data", "model", "train", "eval"]), st.text(max_size=6)),
    st.one_of(
        st.dictionaries(st.one_of(st.sampled_from([k.split(".")[1] for k in KEYS]), st.text(max_size=6)), values),
        values,
    ),
    max_size=4,
)


@FUZZ
@given(st.one_of(sections, values))
def test_fuzz_yaml_files(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    loads_or_config_error(lambda: config.load(path))


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_yaml_bytes(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_bytes(blob)
    loads_or_config_error(lambda: config.load(path))


@FUZZ
@given(st.one_of(sections, values))
def test_fuzz_run_json_config(raw):
    loads_or_config_error(lambda: Config.from_dict(raw, "run.json"))


def test_a_huge_integer_for_a_float_key_is_a_config_error():
    with pytest.raises(ConfigError, match="too large"):
        config.load(None, ["train.lr=" + "9" * 400])
    assert math.isfinite(config.load(None, ["train.lr=1"]).train.lr)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.time_format=%m/%d/%Y", "%m/%d/%Y"),  # a bare % would be a YAML directive
        ("data.time_format='%d.%m.%Y %H:%M'", "%d.%m.%Y %H:%M"),  # quoted: read as YAML
        ("data.separator=;", ";"),
        ('data.separator="\\t"', "\t"),
    ],
)
def test_text_keys_take_the_value_as_typed(override, expected):
    key = override.split("=", 1)[0].split(".")[1]
    assert getattr(config.load(None, [override]).data, key) == expected
