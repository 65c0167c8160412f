"""A plain training loop: shuffled windows, AdamW, evaluation on valid, early stopping, checkpoints.

Model selection uses the valid split only (NDCG@10, full ranking); the test split is
never looked at here. One process writes a run at a time (recscope.lock); a resumed run
must be given the same data (its fingerprint is in run.json) and the same model config.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recscope import versions
from recscope.config import Config, validate
from recscope.cpu import use_threads
from recscope.data import Dataset, split_of, training_windows
from recscope.errors import RunError
from recscope.evaluate import evaluate, model_scorer
from recscope.features.text import catalog_vectors
from recscope.lock import RunLock
from recscope.model import SeqRec
from recscope.run import (
    FORMAT,
    RETRAIN,
    RunInfo,
    fingerprint,
    load_data,
    load_info,
    load_model,
    load_optimizer,
    load_weights,
    save_info,
    save_optimizer,
    save_weights,
)

SELECT_ON = "NDCG@10"


def with_data_sizes(config: Config, data: Dataset, text_dim: int = 0) -> Config:
    """The config with the model sizes the data implies (catalog size, attribute fields, text width)."""
    fields = tuple((f.name, f.vocab_size, int(f.values.shape[1])) for f in data.fields)
    model = dataclasses.replace(config.model, n_items=data.n_items, fields=fields, text_dim=text_dim)
    return dataclasses.replace(config, model=model)


def fit(
    data: Dataset,
    config: Config,
    out: Path,
    *,
    data_spec: str,
    catalog: str | None = None,
    resume: bool = False,
    console: Console | None = None,
    origin: str = "train",
) -> RunInfo:
    """Train on ``data`` and write the run to ``out``; returns the run's summary.

    Everything is checked before anything is written; ``out`` is locked while it is written.
    """
    console = console or Console(stderr=True)
    out = Path(out)
    validate(config)
    threads = use_threads(config.train.threads)
    text = catalog_vectors(data, config.model.use_text, config.features)
    if text is not None:
        console.print(text.describe(), highlight=False)
    config = with_data_sizes(config, data, text_dim=0 if text is None else text.vectors.shape[1])
    split = split_of(data, config)
    if len(split.valid) == 0:
        raise RunError("no user has enough events for a valid case", fix="each user needs at least 3 events")
    with RunLock(out, "resume" if resume else "train", console):
        vectors = None if text is None else torch.from_numpy(text.vectors)
        return _fit(data, config, out, split, data_spec, catalog, resume, console, origin, threads, vectors)


def _fit(data, config, out, split, data_spec, catalog, resume, console, origin, threads, text) -> RunInfo:
    torch.manual_seed(config.train.seed)
    model = SeqRec(config.model)
    model.set_item_fields({f.name: torch.from_numpy(f.values) for f in data.fields}, text=text)
    unseen = _hold_out(model, split.cold)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    data_print = fingerprint(data)
    state = {"epoch": 0, "best_epoch": 0, "best_valid": None, "bad_evals": 0, "history": []}
    info = RunInfo(config, data_spec, catalog, state, origin=origin, data_fingerprint=data_print)
    if resume:
        info = _resume(out, config, data_print, data_spec, model, optimizer)
    else:
        if (out / "run.json").exists():
            raise RunError(f"{out} already holds a run", fix="pass --resume to continue it, or another --out")
        data.save(out)
    info.state["split"] = split.describe()
    if len(split.cold):  # evaluate splits the cases by it (and checks the config still draws the same items)
        info.state["cold_items"] = [data.item_ids[i] for i in split.cold]
    info.state["data"] = data.describe()

    windows = torch.from_numpy(training_windows(data, split.train, config.model.max_len))
    t = config.train
    console.print(
        f"[bold]{data.describe()}[/]\n{split.describe()}; {len(windows):,} training windows; {threads} thread(s)"
    )
    start_epoch = info.state["epoch"]
    best = info.state["best_valid"][SELECT_ON] if info.state["best_valid"] else -1.0
    started = time.perf_counter()
    with TrainingProgress(console, t.epochs, start_epoch) as progress:
        for epoch in range(start_epoch, t.epochs):
            tic = time.perf_counter()
            loss = _train_epoch(model, optimizer, windows, config, epoch, progress, unseen)
            seconds = time.perf_counter() - tic
            record = {"epoch": epoch + 1, "loss": loss, "train_seconds": round(seconds, 2)}
            if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
                tic = time.perf_counter()
                metrics = evaluate(
                    model_scorer(model),
                    data,
                    split.valid,
                    config.model.max_len,
                    config.eval.ks,
                    exclude_history=config.eval.exclude_history,
                    batch_size=config.eval.batch_size,
                )
                record["valid"] = metrics
                record["eval_seconds"] = round(time.perf_counter() - tic, 2)
                if metrics[SELECT_ON] > best:
                    best = metrics[SELECT_ON]
                    info.state.update(best_epoch=epoch + 1, best_valid=metrics, bad_evals=0)
                    save_weights(out / "model.safetensors", model)
                else:
                    info.state["bad_evals"] += 1
                progress.end_epoch(f"best valid {SELECT_ON} {best:.4f}")
                valid = f"  valid HR@10 {metrics['HR@10']:.4f} NDCG@10 {metrics['NDCG@10']:.4f}"
            else:
                progress.end_epoch()
                valid = ""
            console.print(
                f"epoch {epoch + 1:3d}  loss {loss:.4f}{valid}  ({seconds:.1f} s; "
                f"{_clock(time.perf_counter() - started)} in all)",
                highlight=False,
            )
            info.state["epoch"] = epoch + 1
            info.state["history"].append(record)
            info.state["train_seconds"] = round(sum(r["train_seconds"] for r in info.state["history"]), 2)
            save_weights(out / "last.safetensors", model)
            save_optimizer(out / "optimizer.safetensors", optimizer)
            save_info(out, info)
            if info.state["bad_evals"] >= t.patience:
                console.print(f"early stop: no better valid {SELECT_ON} for {t.patience} evaluations")
                break
    version = versions.publish(
        out,
        out / "model.safetensors",
        source="train",
        parent=versions.current(out),
        best_epoch=info.state["best_epoch"],
        best_valid=info.state["best_valid"],
    )
    console.print(
        f"best valid {SELECT_ON} {best:.4f} at epoch {info.state['best_epoch']}; run saved in {out} "
        f"(model version {version.id})"
    )
    return info


class TrainingProgress:
    """Two rows on a terminal: the run (epochs done, time since the start) and the current
    epoch (steps, its own time). The epoch row is reset each epoch, which restarts its
    clock; the run row finishes only when training does, so its clock never stops.
    """

    def __init__(self, console: Console, epochs: int, start_epoch: int = 0):
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.run = self.progress.add_task("epochs", total=epochs, completed=start_epoch, info="")
        self.epoch = self.progress.add_task(f"epoch {start_epoch + 1}", total=None, info="")
        self._loss, self._steps = 0.0, 0

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, steps: int) -> None:
        self._loss, self._steps = 0.0, 0
        self.progress.reset(self.epoch, total=steps, description=f"epoch {epoch}", info="loss -")

    def step(self, loss: float) -> None:
        self._loss += loss
        self._steps += 1
        self.progress.update(self.epoch, advance=1, info=f"loss {self._loss / self._steps:.4f}")

    def end_epoch(self, info: str | None = None) -> None:
        self.progress.advance(self.run)
        if info is not None:
            self.progress.update(self.run, info=info)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


def _train_epoch(
    model: SeqRec,
    optimizer,
    windows: torch.Tensor,
    config: Config,
    epoch: int,
    progress: TrainingProgress | None = None,
    unseen: torch.Tensor | None = None,
) -> float:
    t = config.train
    model.train()
    generator = torch.Generator().manual_seed(t.seed * 1000 + epoch)
    batches = _length_batches(windows, t.batch_size, generator)
    # Length-sorted batches hold very different numbers of targets: normalise by the mean
    # per batch, so every target weighs the same whatever batch it falls in.
    targets_per_batch = float(((windows[:, :-1] > 0) & (windows[:, 1:] > 0)).sum()) / len(batches)
    step: Callable[[float], None] = progress.step if progress else lambda loss: None
    if progress:
        progress.start_epoch(epoch + 1, len(batches))
    total = 0.0
    for index in batches:
        batch = windows[index]  # (B, T + 1), left-padded
        width = int((batch > 0).sum(1).max())
        batch = batch[:, -width:]  # drop columns that are padding in every row: same result, less work
        negatives = None
        if t.loss == "sampled" and unseen is None:
            negatives = torch.randint(1, config.model.n_items + 1, (t.num_negatives,), generator=generator)
        elif t.loss == "sampled":  # negatives among the items training may see
            pool = torch.flatnonzero(~unseen[1:]) + 1
            negatives = pool[torch.randint(len(pool), (t.num_negatives,), generator=generator)]
        dropped = None
        if t.id_dropout > 0:
            dropped = torch.rand(config.model.n_items + 1, generator=generator) < t.id_dropout
        loss = model.loss(batch[:, :-1], batch[:, 1:], negatives, "sum", unseen, dropped) / targets_per_batch
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        step(loss.item())
    return total / max(len(batches), 1)


def _hold_out(model: SeqRec, cold) -> torch.Tensor | None:
    """Make the ``cold`` items (dense indices) new to ``model``: their id embeddings zero, as an
    item added after training (SeqRec.set_items) has. Returns the (n_items + 1,) bool mask the
    loss hides them with (they are never targets, and never negatives), so they stay zero;
    None when no item is held out."""
    if len(cold) == 0:
        return None
    cold = torch.as_tensor(cold, dtype=torch.long)
    with torch.no_grad():
        model.item_emb.weight[cold] = 0.0
    unseen = torch.zeros(model.cfg.n_items + 1, dtype=torch.bool)
    unseen[cold] = True
    return unseen


def _length_batches(windows: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of windows of similar length (sorted within chunks of 64 batches),
    so short histories are not padded to the longest one in the data."""
    lengths = (windows > 0).sum(1)
    order = torch.randperm(len(windows), generator=generator)
    chunk = 64 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches.extend(part.split(batch_size))
    shuffle = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in shuffle]


# Keys a resumed run must keep: the model's shape, and the split its best valid score was measured on.
# (The data itself is checked by fingerprint; train.* and eval.* may change, e.g. more epochs.)
RESUME_KEYS = (
    "model",
    "features.text_encoder",
    "data.split",
    "data.temporal_valid",
    "data.temporal_test",
    "data.cold_share",
    "data.cold_seed",
)


def _resume(out: Path, config: Config, data_print: str, data_spec: str, model: SeqRec, optimizer) -> RunInfo:
    info = load_info(out)
    if info.format < FORMAT or info.data_fingerprint is None:
        raise RunError(
            f"{out} was written by an older recscope (run format {info.format}), before runs recorded their "
            "data fingerprint and optimizer state in a resumable form",
            fix=f"it can still be evaluated and explained; to train further, {RETRAIN}",
        )
    if info.data_fingerprint != data_print:
        raise RunError(
            f"--data {data_spec} is not the data {out} was trained on ({info.data_spec}): their fingerprints differ",
            fix="resume with the same --data, --catalog and data.* settings as the first run, "
            "or train a new run with another --out",
        )
    changed = _differences(info.config, config)
    if changed:
        raise RunError(
            f"--resume would change {', '.join(changed)} of {out}",
            fix=f"resume with the run's values (see {out / 'run.json'}), or train a new run with another --out",
        )
    # The run must be whole before it grows: resuming writes only what improves, so a damaged
    # best model or data file would outlive a resume that says it succeeded.
    load_data(out, info)
    load_model(out)
    load_model(out, weights=versions.weights(out)[0])  # the version served, when the run has versions
    load_weights(out / "last.safetensors", model)
    load_optimizer(out / "optimizer.safetensors", optimizer)
    info.config = config  # training keys (e.g. epochs) may be raised on resume
    return info


def _differences(old: Config, new: Config) -> list[str]:
    """``section.key (old -> new)`` for every RESUME_KEYS key that differs."""
    old_d, new_d = old.to_dict(), new.to_dict()
    changed = []
    for section in ("data", "model", "features"):
        for key, value in new_d[section].items():
            name = f"{section}.{key}"
            if (section in RESUME_KEYS or name in RESUME_KEYS) and old_d[section].get(key) != value:
                changed.append(f"{name} ({old_d[section].get(key)!r} -> {value!r})")
    return changed
