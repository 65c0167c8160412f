"""One typed configuration for a run: data, model, training, evaluation.

Every key lives in a frozen dataclass with its type and meaning. A YAML file and
``--set section.key=value`` overrides change the defaults; unknown sections or keys
fail with the list of valid ones. The resolved config is saved in the checkpoint and
the model is rebuilt from it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from recscope.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    split: str = (
        "loo"  # (str) "loo": leave-one-out per user (last=test, second-last=valid); "temporal": global time split
    )
    temporal_valid: float = 0.8  # (float) temporal split: events at or after this time quantile are valid/test
    temporal_test: float = 0.9  # (float) temporal split: events at or after this time quantile are test
    price_bands: int = 5  # (int) numeric catalog columns are bucketed into this many quantile bands
    list_separator: str = "|"  # (str) separator of multi-valued catalog cells, e.g. "Makeup|Face"
    skip_bad_rows: bool = False  # (bool) skip unparsable rows (and report how many and why) instead of failing
    max_skip_share: float = 0.1  # (float) with skip_bad_rows: stop if more than this share of the rows is bad
    duplicates: str = "drop"  # (str) exact duplicate rows: "drop" (and report), "keep" (and report), "error"
    time_format: str = ""  # (str) strftime format of text timestamps, e.g. "%m/%d/%Y"; "" = epoch numbers or ISO-8601
    separator: str = ","  # (str) field separator of csv files (interactions and catalog), e.g. ";" or "\t"


@dataclass(frozen=True)
class ModelConfig:
    max_len: int = 50  # (int) the model reads the user's last max_len items
    d_model: int = 64  # (int) width of item tokens and hidden states
    n_layers: int = 2  # (int) Transformer blocks
    n_heads: int = 2  # (int) attention heads per block
    dropout: float = 0.2  # (float) dropout on embeddings, attention outputs and MLP
    attn_dropout: float = 0.2  # (float) dropout on attention weights during training
    use_attributes: bool = True  # (bool) add catalog attribute embeddings to each item token
    fused_attention: bool = True  # (bool) use torch's fused attention kernel in training (explain path is always eager)
    # Filled from the data at training time; never set by hand.
    n_items: int = 0  # (int) catalog size, item index 0 is padding
    fields: tuple[tuple[str, int, int], ...] = ()  # ((name, vocabulary size, values per item), ...) attribute fields
    text_dim: int = 0  # (int) width of a precomputed text embedding per item, 0 = no text field


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60  # (int) maximum passes over the training sequences
    batch_size: int = 256  # (int) training sequences per step
    lr: float = 0.002  # (float) AdamW learning rate
    weight_decay: float = 0.0  # (float) AdamW weight decay
    loss: str = "ce"  # (str) "ce": full-softmax cross-entropy over the catalog; "sampled": sampled softmax
    num_negatives: int = 256  # (int) sampled softmax: shared uniform negatives per step
    eval_every: int = 1  # (int) evaluate on valid every this many epochs
    patience: int = 8  # (int) stop after this many evaluations without a better valid NDCG@10
    seed: int = 42  # (int) seeds shuffling, initialisation and dropout
    threads: int = 0  # (int) torch CPU threads, 0 = torch's default


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (5, 10, 20)  # (tuple[int]) cut-offs for HR/NDCG/MRR/Recall/Precision/F1
    exclude_history: bool = True  # (bool) items already in the user's history are not ranked (as S3-Rec, ICLRec)
    num_negatives: int = 99  # (int) sampled protocol: uniform negatives per user
    batch_size: int = 1024  # (int) users scored per batch


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> Config:
        return _apply(cls(), raw, source)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path``, then ``section.key=value`` overrides."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", fix="pass an existing YAML file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (data, model, train, eval)")
        config = _apply(config, raw, str(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(
                f"override {item!r} is not of the form section.key=value",
                fix="e.g. --set train.epochs=3",
            )
        section, name = key.split(".", 1)
        config = _apply(config, {section: {name: yaml.safe_load(value)}}, f"--set {item}")
    return config


def _apply(config: Config, raw: dict[str, Any], source: str) -> Config:
    sections = {f.name: f for f in fields(Config)}
    updated = {}
    for section_name, values in raw.items():
        if section_name not in sections:
            raise ConfigError(
                f"{source}: unknown section {section_name!r}",
                fix=f"valid sections: {', '.join(sections)}",
            )
        current = getattr(config, section_name)
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section_name!r} must be a mapping of keys")
        updated[section_name] = _apply_section(current, values, f"{source}: {section_name}")
    return dataclasses.replace(config, **updated)


def _apply_section(section: Any, values: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(type(section))
    known = {f.name for f in fields(section)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}", fix=f"valid keys: {', '.join(sorted(known))}")
        changes[key] = _coerce(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(section, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = getattr(hint, "__origin__", None)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = hint.__args__
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def dumps(config: Config) -> str:
    return json.dumps(config.to_dict(), indent=2)
