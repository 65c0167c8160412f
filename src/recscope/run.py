"""A run directory: everything needed to rebuild, evaluate and explain a trained model.

    RUN/
      run.json            config (with the data-derived model sizes), data spec, training summary
      data.json           ids, titles, attribute vocabularies, load report
      data.safetensors    sequences and item attribute matrices
      model.safetensors   the best weights (selected on valid)
      last.safetensors    the latest weights, with optimizer.pt, for --resume
      optimizer.pt        AdamW state (tensors only; loaded with weights_only=True)

Every file is written to a temporary name and renamed, so a crash never leaves a
half-written checkpoint. Nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recscope.config import Config
from recscope.data import Dataset
from recscope.data.dataset import _atomic
from recscope.errors import RunError
from recscope.model import SeqRec


@dataclass
class RunInfo:
    config: Config
    data_spec: str
    catalog: str | None = None
    state: dict[str, Any] = field(default_factory=dict)  # epoch, best_epoch, best_valid, history, ...

    def to_json(self) -> str:
        return json.dumps(
            {
                "config": self.config.to_dict(),
                "data_spec": self.data_spec,
                "catalog": self.catalog,
                "state": self.state,
            },
            indent=2,
        )


def save_info(run: Path, info: RunInfo) -> None:
    run.mkdir(parents=True, exist_ok=True)
    _atomic(run / "run.json", lambda p: p.write_text(info.to_json()))


def load_info(run: Path) -> RunInfo:
    path = Path(run) / "run.json"
    if not path.exists():
        raise RunError(
            f"{run} is not a recscope run (no run.json)",
            fix="pass the --out directory of `recscope train`, or train one first",
        )
    raw = json.loads(path.read_text())
    return RunInfo(Config.from_dict(raw["config"], str(path)), raw["data_spec"], raw.get("catalog"), raw["state"])


def save_weights(path: Path, model: SeqRec) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    _atomic(path, lambda p: save_file(state, str(p)))


def save_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    _atomic(path, lambda p: torch.save(optimizer.state_dict(), p))


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    optimizer.load_state_dict(torch.load(path, weights_only=True))


def build_model(config: Config) -> SeqRec:
    return SeqRec(config.model)


def load_model(run: Path, which: str = "model") -> tuple[SeqRec, RunInfo]:
    run = Path(run)
    info = load_info(run)
    weights = run / f"{which}.safetensors"
    if not weights.exists():
        raise RunError(f"{weights} is missing", fix="the run did not finish an epoch: train it (again)")
    model = build_model(info.config)
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    return model, info


def load_data(run: Path) -> Dataset:
    run = Path(run)
    if not (run / "data.safetensors").exists():
        raise RunError(f"{run} has no data.safetensors", fix="train the run again")
    return Dataset.load(run)
