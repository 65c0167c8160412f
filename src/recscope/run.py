"""A run directory: everything needed to rebuild, evaluate and explain a trained model.

    RUN/
      run.json                config (with the data-derived model sizes), data spec and fingerprint,
                              training summary; "format" says which layout wrote it
      data.json               ids, titles, attribute vocabularies, load report
      data.safetensors        sequences and item attribute matrices
      model.safetensors       the best weights (selected on valid)
      last.safetensors        the latest weights, with optimizer.safetensors, for --resume
      optimizer.safetensors   AdamW state: tensors, with the param groups as JSON in the header
      ema.safetensors         with train.ema: the weights' moving average at the last epoch, for --resume
      skipped_rows.csv        every input row skipped or dropped as a duplicate, with its reason
      versions/               immutable model versions and the one served (recscope.versions)
      .lock                   present while a process writes the run (recscope.lock)

run.json's "state" is a :class:`TrainingState`, written by :func:`save_info` alone: training
calls it every epoch (holding the run's lock), anything else through :func:`update_state`
(:func:`record_evaluation`, :func:`record_explain_eval`), which takes the lock.

Every file is written to a temporary name and renamed, so a crash never leaves a
half-written checkpoint. Nothing is unpickled. Every file is checked as it is read: a
truncated, foreign or mismatched file is a RunError naming it and saying what to do.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from recscope import __version__
from recscope.config import Config
from recscope.data import Dataset
from recscope.errors import ConfigError, RunError
from recscope.files import atomic_write
from recscope.lock import RunLock
from recscope.model import SeqRec

# 1: before run.json said its format (optimizer.pt, no data fingerprint); readable, not resumable.
# 2: "format", "recscope_version", "origin", "data_fingerprint"; optimizer.safetensors.
FORMAT = 2
RETRAIN = "train the run again (recscope train --out <new dir>)"
# The files a run directory consists of (this module and Dataset.save write them): all that
# replacing a run (the demo) ever removes.
RUN_FILES = (
    "run.json",
    "data.json",
    "data.safetensors",
    "model.safetensors",
    "last.safetensors",
    "optimizer.safetensors",
    "ema.safetensors",  # train.ema
    "optimizer.pt",  # runs of format 1
    "skipped_rows.csv",
)


@dataclass
class PrivacySpent:
    """run.json's ``state.privacy``: what user-level DP-SGD spent (``train.privacy: dp``, see
    :mod:`recscope.privacy`). The guarantee is (epsilon, delta) for the model's weights, with one
    user's whole history as the unit that may be added or removed. A key of another recscope
    version is kept in ``other`` and written back."""

    epsilon: float  # the accountant's epsilon after the steps taken, at delta
    delta: float
    accountant: str  # Opacus's accountant: "prv" or "rdp"
    noise_multiplier: float  # Gaussian noise std per step, in units of max_grad_norm
    max_grad_norm: float  # each user's gradient clipped to this L2 norm
    sample_rate: float  # each user's chance to be in a step's batch (Poisson sampling)
    steps: int  # noisy steps taken
    target_epsilon: float  # train.dp_epsilon: what the noise was calibrated to reach after train.epochs
    users: int  # the examples: users with at least one training target, one example each
    other: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PrivacySpent:
        known = {f.name for f in fields(cls)} - {"other"}
        return cls(
            **{k: v for k, v in raw.items() if k in known}, other={k: v for k, v in raw.items() if k not in known}
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "other"} | self.other


@dataclass
class TrainingState:
    """run.json's "state": how far training got, what it selected on valid, and what was measured
    on the run since. A key of another recscope version is kept in ``other`` and written back."""

    epoch: int = 0  # epochs trained so far
    best_epoch: int = 0  # the epoch model.safetensors comes from, the best on valid (0: none yet)
    best_valid: dict[str, float] | None = None  # its valid metrics (the task's)
    bad_evals: int = 0  # valid evaluations since the best one (early stopping counts them)
    # per epoch: {"epoch", "loss", "train_seconds"}, and "valid", "eval_seconds" when it was evaluated
    history: list[dict[str, Any]] = field(default_factory=list)
    split: str | None = None  # how the data was split (Split.describe)
    cold_items: list[str] | None = None  # the items held out of training (data.cold_share), when any
    data: str | None = None  # the data trained on (Dataset.describe)
    inputs: str | None = None  # what of the data the model reads, and what not (train.inputs_note)
    train_seconds: float | None = None  # the epochs' time, evaluations aside
    evaluations: dict[str, dict] = field(default_factory=dict)  # "test/full", "valid/rating"...: {scorer: metrics}
    explain_eval: dict[str, Any] | None = None  # explain-eval's measurements; "default": the run's default method
    privacy: PrivacySpent | None = None  # with train.privacy=dp: the privacy spent so far
    other: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingState:
        """The state run.json holds (a copy: nothing is shared with ``raw``); absent keys take their defaults."""
        raw = copy.deepcopy(raw)
        known = {f.name for f in fields(cls)} - {"other"}
        state = cls(
            **{k: v for k, v in raw.items() if k in known}, other={k: v for k, v in raw.items() if k not in known}
        )
        if isinstance(state.privacy, dict):
            state.privacy = PrivacySpent.from_dict(state.privacy)
        return state

    def to_dict(self) -> dict[str, Any]:
        """run.json's form: the training keys always, the others when they are set."""
        state = {k: getattr(self, k) for k in ("epoch", "best_epoch", "best_valid", "bad_evals", "history")}
        for key in ("split", "cold_items", "data", "inputs", "train_seconds", "explain_eval"):
            if getattr(self, key) is not None:
                state[key] = getattr(self, key)
        if self.evaluations:
            state["evaluations"] = self.evaluations
        if self.privacy is not None:
            state["privacy"] = self.privacy.to_dict()
        return state | self.other

    # run.json's state was a dict before it had a type: ``state["epoch"]``, ``state.get("cold_items")``
    # still read it (the benchmarks do); code of this package reads the fields.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)


@dataclass
class RunInfo:
    config: Config
    data_spec: str
    catalog: str | None = None
    state: TrainingState = field(default_factory=TrainingState)
    origin: str = "train"  # "train" | "demo": the demo replaces only runs it wrote itself
    data_fingerprint: str | None = None  # fingerprint(data) of the data trained on; None in format 1
    format: int = FORMAT
    recscope_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": self.format,
                "recscope_version": self.recscope_version,
                "origin": self.origin,
                "config": self.config.to_dict(),
                "data_spec": self.data_spec,
                "catalog": self.catalog,
                "data_fingerprint": self.data_fingerprint,
                "state": self.state.to_dict(),
            },
            indent=2,
        )


def save_info(run: Path, info: RunInfo) -> None:
    """Write run.json: the one function that does. Callers hold the run's lock (fit does; others
    go through ``update_state``)."""
    run.mkdir(parents=True, exist_ok=True)
    info.format, info.recscope_version = FORMAT, __version__
    atomic_write(run / "run.json", lambda p: p.write_text(info.to_json()))


def update_state(run: str | Path, change: Callable[[TrainingState], None], command: str) -> RunInfo:
    """Re-read run.json under the run's lock, apply ``change`` to its state, write it back.

    The one way for anything but training to write a run (explain-eval, evaluations): a
    concurrent writer is refused with its pid, and nothing written meanwhile is lost.
    """
    run = Path(run)
    with RunLock(run, command):
        info = load_info(run)
        change(info.state)
        save_info(run, info)
    return info


def record_evaluation(run: str | Path, key: str, results: dict) -> RunInfo:
    """Keep ``results`` ({scorer: metrics}) among the run's evaluations under ``key`` ("test/full", ...)."""
    return update_state(run, lambda state: state.evaluations.update({key: results}), "evaluate")


def record_explain_eval(run: str | Path, result: dict, command: str) -> RunInfo:
    """Keep explain-eval's measurements: the method they favour (``result["default"]``) becomes the
    run's default. ``command`` names the writer to a concurrent one ("explain-eval", "demo")."""

    def change(state: TrainingState) -> None:
        state.explain_eval = result

    return update_state(run, change, command)


def load_info(run: Path) -> RunInfo:
    run = Path(run)
    path = run / "run.json"
    if not path.exists():
        raise RunError(
            f"{run} is not a recscope run (no run.json)",
            fix="pass the --out directory of `recscope train`, or train one first",
        )
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as e:  # JSONDecodeError is a ValueError
        raise RunError(f"{path} is not readable JSON ({_brief(e)})", fix=f"the file is damaged: {RETRAIN}") from None
    if not isinstance(raw, dict):
        raise RunError(f"{path} is not a recscope run.json (not a JSON object)", fix=RETRAIN)
    fmt = raw.get("format", 1)
    if not isinstance(fmt, int) or fmt < 1:
        raise RunError(f"{path} has an unknown format {fmt!r}", fix=RETRAIN)
    if fmt > FORMAT:
        raise RunError(
            f"{path} was written by a newer recscope ({raw.get('recscope_version', '?')}, run format {fmt}); "
            f"this is recscope {__version__} (format {FORMAT})",
            fix="upgrade recscope (pip install -U recscope), or train the run again with this version",
        )
    missing = [k for k in ("config", "data_spec", "state") if k not in raw]
    if missing:
        raise RunError(f"{path} lacks {', '.join(missing)}: it is not a complete recscope run", fix=RETRAIN)
    if not isinstance(raw["state"], dict) or not isinstance(raw["data_spec"], str):
        raise RunError(f"{path}: 'state' or 'data_spec' has the wrong type", fix=RETRAIN)
    try:
        config = Config.from_dict(raw["config"], str(path))
    except ConfigError as e:
        raise RunError(
            f"{e.problem} (the run's config is from another recscope version, or was edited)", fix=RETRAIN
        ) from None
    return RunInfo(
        config,
        raw["data_spec"],
        raw.get("catalog"),
        TrainingState.from_dict(raw["state"]),
        origin=raw.get("origin", "train"),
        data_fingerprint=raw.get("data_fingerprint"),
        format=fmt,
        recscope_version=raw.get("recscope_version", "unknown"),
    )


# ---------------------------------------------------------------------- weights
def save_weights(path: Path, model: SeqRec) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: save_file(state, str(p)))


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load ``path`` into ``model``; a missing, damaged or mismatched file is a RunError naming it."""
    if not path.exists():
        raise RunError(f"{path} is missing", fix=f"the run did not finish an epoch, or the file was removed: {RETRAIN}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path} is not a readable safetensors file ({_brief(e)})", fix=RETRAIN) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing / unexpected keys, wrong shapes
        raise RunError(
            f"{path} does not fit the model in run.json ({_mismatch(e)}): the weights come from another run",
            fix=f"put back this run's own weights, or {RETRAIN}",
        ) from None


def _mismatch(error: RuntimeError) -> str:
    lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    text = lines[0] if lines else _brief(error)
    return text if len(text) <= 160 else text[:157] + "..."


def save_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """AdamW state as safetensors: tensors as ``state.<param>.<name>``, param groups as JSON metadata."""
    sd = optimizer.state_dict()
    tensors = {
        f"state.{index}.{name}": value.detach().contiguous()
        for index, values in sd["state"].items()
        for name, value in values.items()
    }
    meta = {"param_groups": json.dumps(sd["param_groups"]), "optimizer": type(optimizer).__name__}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    if not path.exists():
        raise RunError(f"{path} is missing", fix=f"the run cannot be resumed without it: {RETRAIN}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key in f.keys():
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = f.get_tensor(key)
        groups = json.loads(meta["param_groups"])
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise RunError(f"{path} is not this run's optimizer state ({_brief(e)})", fix=RETRAIN) from None


# ---------------------------------------------------------------------- model and data
def build_model(config: Config) -> SeqRec:
    return SeqRec(config.model)


def load_model(
    run: Path,
    which: str = "model",
    weights: Path | None = None,
    n_items: int | None = None,
    n_events: int | None = None,
) -> tuple[SeqRec, RunInfo]:
    """The run's model with the ``which`` weights of the run directory, or the ``weights`` file
    given (a version's, see ``recscope.versions``). ``n_items``: the catalog the weights hold
    rows for, when a fine-tune grew it past the trained one (the version's items.json);
    ``n_events``: likewise the event labels (the version's events.json)."""
    from recscope.cpu import use_threads

    run = Path(run)
    info = load_info(run)
    use_threads()
    config = info.config
    grown = {k: v for k, v in (("n_items", n_items), ("n_events", n_events)) if v is not None}
    if grown:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, **grown))
    model = build_model(config)
    load_weights(weights or run / f"{which}.safetensors", model)
    model.eval()
    return model, info


def load_data(run: Path, info: RunInfo | None = None) -> Dataset:
    """The run's data, checked against the fingerprint run.json recorded at training."""
    run = Path(run)
    info = info or load_info(run)
    data = _read_data(run)
    if info.data_fingerprint is not None:
        if fingerprint(data) != info.data_fingerprint:
            raise RunError(
                f"{run / 'data.safetensors'} and {run / 'data.json'} are not the data {run / 'run.json'} "
                "was trained on (their fingerprint differs)",
                fix=f"put back this run's own data files, or {RETRAIN}",
            )
    elif data.n_items != info.config.model.n_items:  # format 1: no fingerprint, check what we can
        raise RunError(
            f"{run / 'data.json'} has {data.n_items} items but the model in run.json has {info.config.model.n_items}",
            fix=f"put back this run's own data files, or {RETRAIN}",
        )
    return data


def _read_data(run: Path) -> Dataset:
    """Dataset.load, with every way a damaged or foreign file can fail turned into a RunError naming it."""
    arrays, meta = run / "data.safetensors", run / "data.json"
    for path in (arrays, meta):
        if not path.exists():
            raise RunError(f"{path} is missing", fix=f"put back this run's own data files, or {RETRAIN}")
    try:
        with safe_open(str(arrays), framework="np"):
            pass
    except (SafetensorError, OSError) as e:
        raise RunError(f"{arrays} is not a readable safetensors file ({_brief(e)})", fix=RETRAIN) from None
    try:
        raw = json.loads(meta.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise RunError(f"{meta} is not readable JSON ({_brief(e)})", fix=RETRAIN) from None
    if not isinstance(raw, dict):
        raise RunError(f"{meta} is not a recscope data.json (not a JSON object)", fix=RETRAIN)
    try:
        data = Dataset.load(run)
        problem = _inconsistency(data)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, SafetensorError, OSError) as e:
        problem = f"{type(e).__name__}: {_brief(e)}"
    if problem:
        raise RunError(
            f"{meta} and {arrays} do not make one dataset ({problem}): a file is damaged or from another run",
            fix=f"put back this run's own data files, or {RETRAIN}",
        )
    return data


def _inconsistency(data: Dataset) -> str | None:
    """What breaks the Dataset's contract (see data/dataset.py), or None."""
    offsets, items = np.asarray(data.offsets), np.asarray(data.items)
    if not (isinstance(data.user_ids, list) and isinstance(data.item_ids, list)):
        return "user_ids and item_ids must be lists"
    if offsets.ndim != 1 or len(offsets) != data.n_users + 1:
        return f"offsets has {offsets.shape} entries for {data.n_users} users"
    if offsets[0] != 0 or offsets[-1] != len(items) or (np.diff(offsets) < 0).any():
        return "offsets do not index the item array"
    for name in ("timestamps", "events", "values"):
        if len(getattr(data, name)) != len(items):
            return f"{len(getattr(data, name))} {name} for {len(items)} events"
    if len(items) and (data.events.min() < 0 or data.events.max() > data.n_event_types):
        return f"event codes outside 0..{data.n_event_types}"
    if len(items) and (items.min() < 1 or items.max() > data.n_items):
        return f"item indices outside 1..{data.n_items}"
    for f in data.fields:
        if f.values.ndim != 2 or f.values.shape[0] != data.n_items + 1:
            return f"field {f.name!r} has shape {tuple(f.values.shape)}, expected ({data.n_items + 1}, width)"
        if f.values.size and (f.values.min() < 0 or f.values.max() >= f.vocab_size):
            return f"field {f.name!r} has values outside its vocabulary of {f.vocab_size}"
    return None


def fingerprint(data: Dataset) -> str:
    """A hash of the prepared data: sequences, timestamps, attribute matrices, ids and vocabularies.

    Two loads of the same input with the same data config give the same fingerprint;
    any change in who bought what, when, or in the catalog's attributes changes it.
    """
    h = hashlib.sha256()
    arrays = [("offsets", data.offsets), ("items", data.items), ("timestamps", data.timestamps)]
    arrays += [(f"field.{f.name}", f.values) for f in data.fields]
    # Event types, values and impressions count when the data has them (runs without keep their fingerprint).
    if data.n_event_types:
        arrays.append(("events", data.events))
    if data.has_values:
        arrays.append(("values", data.values))
    if data.impressions is not None:
        i = data.impressions
        arrays += [("impressions", np.stack([i.users, i.hist_len, i.items, i.clicked.astype(np.int64)]))]
    for name, array in arrays:
        array = np.ascontiguousarray(array)
        h.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        h.update(array.tobytes())
    ids = [data.user_ids, data.item_ids, [(f.name, f.kind, f.vocab) for f in data.fields]]
    if data.n_event_types:
        ids.append(data.event_types)
    h.update(json.dumps(ids).encode())
    return "sha256:" + h.hexdigest()


def _brief(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."
