"""A plain training loop: shuffled windows, AdamW, evaluation on valid, early stopping, checkpoints.

Model selection uses the valid split only (NDCG@10, full ranking; a rating run: RMSE; a click
run: AUC, see :mod:`recscope.tasks`); the test split is never looked at here. One process
writes a run at a time (recscope.lock); a resumed run must be given the same data (its
fingerprint is in run.json) and the same model config.

Launched by torchrun (``torchrun --nproc-per-node N -m recscope.train --data SPEC --out RUN``,
the options of ``recscope train``), the same loop trains with DistributedDataParallel: each
process takes its share of every batch, rank 0 alone writes the run (see
:mod:`recscope.distributed` for the whole contract).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from recscope import distributed, retrieval, versions
from recscope.config import Config, TrainConfig, validate
from recscope.config import load as load_config
from recscope.cpu import use_threads
from recscope.data import Dataset, column_map, load_dataset, split_of
from recscope.data.split import Split
from recscope.distributed import SINGLE, BatchLoss, Distributed, PeerError
from recscope.errors import RecscopeError, RunError
from recscope.features.text import catalog_vectors
from recscope.lock import RunLock
from recscope.model import SeqRec
from recscope.run import (
    FORMAT,
    RETRAIN,
    RunInfo,
    TrainingState,
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
from recscope.sampling import describe_loss, make_optimizer, negative_sampler
from recscope.tasks import TASKS, EventInputs, Task, event_inputs
from recscope.views import exit_on_error, print_load_report, terminal_width


def sized_and_split(data: Dataset, config: Config, text, data_spec: str) -> tuple[Config, Split]:
    """What every trainer of ``data`` starts from: the task's check of the data, the config with
    the data's sizes (``text``: the catalog's vectors or None), and the split, its valid cases a
    seeded sample when ``eval.valid_users`` asks (big data)."""
    TASKS[config.train.task].check(data, data_spec)
    config = with_data_sizes(config, data, text_dim=0 if text is None else text.vectors.shape[1])
    split = split_of(data, config)
    split = dataclasses.replace(split, valid=split.valid.sample(config.eval.valid_users, config.train.seed))
    if len(split.valid) == 0:
        raise RunError("no user has enough events for a valid case", fix="each user needs at least 3 events")
    return config, split


def with_data_sizes(config: Config, data: Dataset, text_dim: int = 0) -> Config:
    """The config with the model sizes the data implies (catalog size, attribute fields, text width,
    event labels) and the head its task needs."""
    fields = tuple((f.name, f.vocab_size, int(f.values.shape[1])) for f in data.fields)
    inputs = event_inputs(data, config)
    model = dataclasses.replace(
        config.model,
        n_items=data.n_items,
        fields=fields,
        text_dim=text_dim,
        n_events=0 if inputs is None else len(inputs.labels),
        head=config.train.task,
    )
    return dataclasses.replace(config, model=model)


def inputs_note(data: Dataset, config: Config, task: Task, inputs: EventInputs | None) -> str:
    """What of the data the model reads, and what it does not (nothing is dropped silently)."""
    if inputs is not None:
        shown = ", ".join(inputs.labels[1:6]) + (", ..." if len(inputs.labels) > 6 else "")
        events = f"event labels read as inputs: {len(inputs.labels) - 1} ({shown})"
    elif data.n_event_types and not config.model.use_events:
        events = f"event types ({data.n_event_types}) not used: model.use_events=false"
    elif data.n_event_types:
        events = f"event type {data.event_types[1]!r} not used: a single type tells the model nothing"
    else:
        events = "no event types in the data"
    if task.reads_values:
        values = f"values: the {task.name} task predicts them"
    elif data.has_values:
        values = f"values not used: task {task.name} does not read them (train.task=rating does)"
    else:
        values = "no values in the data"
    impressions = ""
    if data.impressions is not None:
        use = (
            f"the {task.name} task learns from them"
            if task.learns_from_impressions
            else f"not used by task {task.name} (train.task=click)"
        )
        impressions = f"; {len(data.impressions):,} impressions: {use}"
    return f"task {task.name}; {events}; {values}{impressions}"


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
    Under torchrun, every process calls this with the same arguments (see recscope.distributed).
    """
    out = Path(out)
    validate(config)
    if resume and config.train.privacy == "dp":
        raise RunError(
            "--resume cannot continue a private run: its noise was calibrated to reach train.dp_epsilon after "
            "train.epochs epochs from the start, and the accountant's steps are not resumed",
            fix="train it again with another --out",
        )
    with distributed.start() as dist:
        console = (console or Console(stderr=True)) if dist.is_main else Console(quiet=True)
        threads = use_threads(dist.threads(config.train.threads))
        with dist.main_first():  # rank 0 fills the text cache; the others read it
            text = catalog_vectors(data, config.model.use_text, config.features)
        if text is not None:
            console.print(text.describe(), highlight=False)
        task = TASKS[config.train.task]
        config, split = sized_and_split(data, config, text, data_spec)
        with ExitStack() as held:

            def lock() -> None:  # rank 0 holds the lock; the others learn whether it got it
                held.enter_context(RunLock(out, "resume" if resume else "train", console))

            dist.on_main(lock)
            vectors = None if text is None else torch.from_numpy(text.vectors)
            return _fit(
                data, config, task, out, split, data_spec, catalog, resume, console, origin, threads, vectors, dist
            )


def _fit(data, config, task, out, split, data_spec, catalog, resume, console, origin, threads, text, dist) -> RunInfo:
    torch.manual_seed(config.train.seed)  # the same initial weights on every rank
    model = SeqRec(config.model)
    model.set_item_fields({f.name: torch.from_numpy(f.values) for f in data.fields}, text=text)
    unseen = _hold_out(model, split.cold)
    bias = task.head_bias(data, split)
    if bias is not None:
        model.head.bias.data.fill_(bias)
    model.to(dist.device)  # before the optimizer is built, so its state lives where the weights do
    unseen = None if unseen is None else unseen.to(dist.device)
    optimizer = make_optimizer(model, config)  # sampled softmax: sparse updates of the item table
    averaged = _weight_average(model, config.train.ema)
    data_print = fingerprint(data)
    dist.check_same(data_print, "data")
    info = RunInfo(config, data_spec, catalog, TrainingState(), origin=origin, data_fingerprint=data_print)

    def start_or_resume() -> dict:  # rank 0 only: it alone reads and writes the run directory
        nonlocal info
        if resume:
            info = _resume(out, config, data_print, data_spec, model, optimizer, averaged)
        else:
            if (out / "run.json").exists():
                raise RunError(f"{out} already holds a run", fix="pass --resume to continue it, or another --out")
            data.save(out)
        return info.state.to_dict()

    info.state = TrainingState.from_dict(dist.on_main(start_or_resume))  # JSON between ranks
    if resume:
        dist.broadcast_training_state(model, optimizer)
    # what is validated, selected and saved: the weights' moving average (train.ema) or the weights
    scored = model if averaged is None else averaged.module
    if dist.active:
        torch.manual_seed(config.train.seed + dist.rank)  # dropout: other masks on other ranks' windows
    state = info.state
    state.split = split.describe()
    if len(split.cold):  # evaluate splits the cases by it (and checks the config still draws the same items)
        state.cold_items = [data.item_ids[i] for i in split.cold]
    state.data = data.describe()

    inputs = event_inputs(data, config)
    state.inputs = inputs_note(data, config, task, inputs)
    batches = TrainingData.build(data, split, config, inputs).to(dist.device)
    batch_loss = dist.wrap(BatchLoss(model, batches.loss))
    t = config.train
    private = None
    if t.privacy == "dp":
        if dist.active:
            raise RunError(
                "train.privacy=dp trains in one process: Opacus's accounting here is for one sampler",
                fix="train without --nproc (or with --nproc 1), or with train.privacy=none",
            )
        from recscope.privacy import PrivateTraining  # Opacus takes seconds to import: only private runs pay

        private = PrivateTraining.build(data, split.train, batches.windows, batches.events, config, optimizer)
        optimizer = private.optimizer
    processes = f" x {dist.world} processes (DistributedDataParallel)" if dist.active else ""
    console.print(
        f"[bold]{data.describe()}[/]\n{split.describe()}; {batches.describe()}; {threads} thread(s){processes}\n"
        f"{state.inputs}\n{describe_loss(config)}" + ("" if private is None else f"\n{private.describe(config)}"),
        highlight=False,
    )
    start_epoch = state.epoch
    select_on = task.select_on
    best = state.best_valid[select_on] if state.best_valid else None
    started = time.perf_counter()
    with TrainingProgress(console, t.epochs, start_epoch) as progress:
        for epoch in range(start_epoch, t.epochs):
            tic = time.perf_counter()
            if private is not None:
                loss = private.train_epoch(model, config, epoch, progress, unseen, averaged)
                state.privacy = private.spent(config)
            else:
                loss = train_epoch(
                    model,
                    optimizer,
                    batches,
                    config,
                    epoch,
                    progress,
                    unseen,
                    dist=dist,
                    batch_loss=batch_loss,
                    averaged=averaged,
                )
            seconds = time.perf_counter() - tic
            record = {"epoch": epoch + 1, "loss": loss, "train_seconds": round(seconds, 2)}
            if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
                tic = time.perf_counter()
                # Rank 0 evaluates, every rank gets its metrics: the same selection and stopping everywhere.
                metrics = dist.on_main(lambda: task.validate(_on_cpu(scored), data, split, config, inputs))
                record["valid"] = metrics
                record["eval_seconds"] = round(time.perf_counter() - tic, 2)
                # A private run keeps its latest weights: choosing on valid would read the users' valid
                # items outside the privacy accounting (recscope.privacy).
                if private is not None or task.improves(metrics[select_on], best):
                    best = metrics[select_on]
                    state.best_epoch, state.best_valid, state.bad_evals = epoch + 1, metrics, 0
                    if dist.is_main:
                        save_weights(out / "model.safetensors", scored)
                else:
                    state.bad_evals += 1
                progress.end_epoch(f"best valid {select_on} {best:.4f}")
                valid = "  valid " + " ".join(f"{k} {metrics[k]:.4f}" for k in task.shown(metrics))
            else:
                progress.end_epoch()
                valid = ""
            console.print(
                f"epoch {epoch + 1:3d}  loss {loss:.4f}{valid}  ({seconds:.1f} s; "
                f"{_clock(time.perf_counter() - started)} in all)",
                highlight=False,
            )
            state.epoch = epoch + 1
            state.history.append(record)
            state.train_seconds = round(sum(r["train_seconds"] for r in state.history), 2)
            if dist.is_main:
                save_weights(out / "last.safetensors", model)
                save_optimizer(out / "optimizer.safetensors", optimizer)
                if averaged is not None:
                    save_weights(out / "ema.safetensors", averaged.module)
                save_info(out, info)
            if state.bad_evals >= t.patience:
                console.print(f"early stop: no better valid {select_on} for {t.patience} evaluations")
                break

    def publish() -> str:  # rank 0; the others wait in the broadcast of its id
        parent = versions.current(out)
        version = versions.publish(
            out, out / "model.safetensors", "train", parent, best_epoch=state.best_epoch, best_valid=state.best_valid
        ).id
        retrieval.prepare(out, version)  # the version's ANN index, when its catalog calls for one
        return version

    version = dist.on_main(publish)
    kept = "last" if private is not None else "best"
    console.print(
        f"{kept} valid {select_on} {best:.4f} at epoch {state.best_epoch}; run saved in {out} (model version {version})"
    )
    if state.privacy is not None:
        p = state.privacy
        console.print(
            f"privacy: epsilon {p.epsilon:.3f} at delta {p.delta:.3g} per user ({p.accountant} accountant, "
            f"{p.steps} steps, sample rate {p.sample_rate:.4g}, noise multiplier {p.noise_multiplier:.4g}, "
            f"clip {p.max_grad_norm:g})",
            highlight=False,
        )
    return info


def _on_cpu(model: SeqRec) -> SeqRec:
    """The model where evaluation runs (recscope evaluates on CPU): itself, or a CPU copy of a GPU model."""
    return model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()


class TrainingProgress:
    """Two rows on a terminal: the run (epochs done, time since the start) and the current
    epoch (steps, its own time). The epoch row is reset each epoch, which restarts its
    clock; the run row finishes only when training does, so its clock never stops.
    """

    def __init__(self, console: Console, epochs: int, start_epoch: int = 0, every: float = 10.0):
        # In a pipe or a log rich draws nothing live: a plain line every ``every`` seconds instead,
        # so a long epoch (minutes at a million items) never looks hung.
        self.console, self.every, self._lines = console, every, not console.is_terminal
        self._epoch, self._total, self._started, self._shown = 0, 0, 0.0, 0.0
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
        self._epoch, self._total = epoch, steps
        self._started = self._shown = time.perf_counter()
        self.progress.reset(self.epoch, total=steps, description=f"epoch {epoch}", info="loss -")

    def step(self, loss: float) -> None:
        self._loss += loss
        self._steps += 1
        self.progress.update(self.epoch, advance=1, info=f"loss {self._loss / self._steps:.4f}")
        now = time.perf_counter()
        if self._lines and now - self._shown >= self.every:
            self._shown = now
            self.console.print(
                f"epoch {self._epoch}: step {self._steps:,}/{self._total:,}, loss {self._loss / self._steps:.4f} "
                f"({_clock(now - self._started)})",
                highlight=False,
            )

    def end_epoch(self, info: str | None = None) -> None:
        self.progress.advance(self.run)
        if info is not None:
            self.progress.update(self.run, info=info)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


@dataclasses.dataclass
class TrainingData:
    """What one epoch goes over, as its task builds it (:meth:`recscope.tasks.Task.training_tensors`).
    Next item and rating: ``windows`` (W, max_len + 1) of items with their aligned event labels
    (``events``) and ratings (``ratings``, NaN = none) when the run reads them. Click: ``windows``
    (W, max_len) the history each impression was shown after, with ``shown`` (W,) the item and
    ``clicked`` (W,) 1.0 / 0.0. ``task`` may be given by name (``TrainingData("next_item", windows)``)."""

    task: Task
    windows: torch.Tensor
    events: torch.Tensor | None = None
    ratings: torch.Tensor | None = None
    shown: torch.Tensor | None = None
    clicked: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if isinstance(self.task, str):
            self.task = TASKS[self.task]

    @classmethod
    def build(cls, data: Dataset, split, config: Config, inputs: EventInputs | None) -> TrainingData:
        task = TASKS[config.train.task]
        codes = None if inputs is None else inputs.codes
        return cls(task, **task.training_tensors(data, split, config.model.max_len, codes))

    def to(self, device: torch.device) -> TrainingData:
        """The same windows on ``device`` (where the model trains)."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()}
        return TrainingData(**moved)

    def describe(self) -> str:
        return self.task.describe_training(self)

    def targets(self) -> float:
        """How many predictions an epoch makes (each batch's loss is a sum, divided by the mean per batch)."""
        return self.task.count_targets(self)

    def loss(
        self,
        model: SeqRec,
        index: torch.Tensor,
        negatives: torch.Tensor | None,
        unseen: torch.Tensor | None = None,
        id_dropped: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The summed loss of the windows at ``index`` (B,), or (towers, B): each tower its own
        windows, train.tower_batches=own (``unseen``, ``id_dropped``: see SeqRec.loss)."""
        batch = self.windows[index]  # left-padded
        width = max(int((batch > 0).sum(-1).max()), 1)
        batch = batch[..., -width:]  # drop columns that are padding in every row: same result, less work
        events = None if self.events is None else self.events[index][..., -width:]
        return self.task.loss(model, self, index, batch, events, negatives, unseen, id_dropped)


def train_epoch(
    model: SeqRec,
    optimizer,
    data: TrainingData,
    config: Config,
    epoch: int,
    progress: TrainingProgress | None = None,
    unseen: torch.Tensor | None = None,
    *,
    dist: Distributed = SINGLE,
    batch_loss: torch.nn.Module | None = None,
    averaged: AveragedModel | None = None,
) -> float:
    """One pass over ``data``; returns the mean batch loss. ``batch_loss``: the model's
    :class:`~recscope.distributed.BatchLoss` (in DDP when ``dist`` is several processes: then
    every rank goes through the same global batches, each computing its share). ``averaged``:
    the weights' moving average (train.ema), updated after every step."""
    t = config.train
    batch_loss = batch_loss or BatchLoss(model, data.loss)
    batch_loss.train()
    generator = torch.Generator().manual_seed(t.seed * 1000 + epoch)  # the same batches on every rank
    towers = config.model.towers if t.tower_batches == "own" else 1
    batches = _length_batches(data.windows.cpu(), t.batch_size, generator, towers)
    # Length-sorted batches hold very different numbers of targets: normalise by the mean
    # per (global) batch, so every target weighs the same whatever batch it falls in.
    targets_per_batch = data.targets() / len(batches)
    step: Callable[[float], None] = progress.step if progress else lambda loss: None
    if progress:
        progress.start_epoch(epoch + 1, len(batches))
    sampler = negative_sampler(data.windows, config, unseen)  # None: full softmax
    prepare_id_dropout(model, config, unseen)
    total = 0.0
    for i, index in enumerate(batches):
        if t.lr_schedule != "constant":
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(t, epoch + i / len(batches))
        negatives = None if sampler is None else sampler.draw(data.windows[index.flatten()], generator)
        dropped = None
        if t.id_dropout > 0:
            dropped = torch.rand(config.model.n_items + 1, generator=generator) < t.id_dropout
        loss = _step_loss(batch_loss, index, negatives, unseen, dropped, targets_per_batch, dist)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if averaged is not None:
            averaged.update_parameters(model)
        total += loss.item()
        step(loss.item())
    return dist.mean(total) / max(len(batches), 1)


_train_epoch = train_epoch  # the name bench/ still imports (train_speed, loss_speed, sampled_softmax, recbole_compare)


def prepare_id_dropout(model: SeqRec, config: Config, unseen: torch.Tensor | None) -> None:
    """Before an epoch with id dropout and ``model.cold_ids=neighbours``: each item's stand-in id,
    borrowed from its nearest trained items by content as a served item without an id borrows
    (``SeqRec.set_id_stand_ins``); the held-out ``unseen`` items lend none."""
    if config.train.id_dropout > 0 and config.model.cold_ids == "neighbours":
        known = torch.ones(model.cfg.n_items + 1, dtype=torch.bool, device=model.item_emb.weight.device)
        known[0] = False
        if unseen is not None:
            known &= ~unseen
        model.set_id_stand_ins(known.nonzero().flatten())


def learning_rate(t: TrainConfig, epochs_done: float) -> float:
    """The rate of a step ``epochs_done`` epochs into training (train.lr_schedule). A function of
    the step alone, so a resumed run continues the schedule where it stopped."""
    if t.lr_schedule == "cosine":
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * min(epochs_done / t.epochs, 1.0)))
    return t.lr


def _step_loss(
    batch_loss: torch.nn.Module,
    index: torch.Tensor,
    negatives: torch.Tensor | None,
    unseen: torch.Tensor | None,
    dropped: torch.Tensor | None,
    targets_per_batch: float,
    dist: Distributed = SINGLE,
) -> torch.Tensor:
    """This rank's part of the loss of the global batch ``index`` (B,): the summed loss of its
    share, over the mean targets per global batch, times the world size. DDP averages the
    ranks' gradients (divides their sum by the world size), so the average is the gradient of
    the whole batch's sum over ``targets_per_batch``: one process's gradient, as if unsharded."""
    return batch_loss(dist.shard(index), negatives, unseen, dropped) * dist.world / targets_per_batch


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


def _length_batches(
    windows: torch.Tensor, batch_size: int, generator: torch.Generator, towers: int = 1
) -> list[torch.Tensor]:
    """Shuffled batches of windows of similar length (sorted within chunks of 64 batches),
    so short histories are not padded to the longest one in the data. ``towers`` > 1
    (train.tower_batches=own): (towers, B) batches, each tower's row from its own shuffle of the
    epoch, as separately seeded models would read it; a step puts together the towers' batches
    of the same size and the same rank by length, so it pads about as little as one tower's."""
    if towers > 1:
        lengths = (windows > 0).sum(1)
        own = [_length_batches(windows, batch_size, generator) for _ in range(towers)]
        ranked = [sorted(batches, key=lambda b: (len(b), int(lengths[b].max()))) for batches in own]
        steps = [torch.stack(group) for group in zip(*ranked, strict=True)]
        return [steps[i] for i in torch.randperm(len(steps), generator=generator)]
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


def _weight_average(model: SeqRec, decay: float) -> AveragedModel | None:
    """The exponential moving average of ``model``'s weights with ``decay`` per step (None: off).
    Buffers (the catalog) are not averaged: they are the model's own, fixed while it trains."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def _resume(
    out: Path, config: Config, data_print: str, data_spec: str, model: SeqRec, optimizer, averaged=None
) -> RunInfo:
    info = load_info(out)
    if info.state.privacy is not None:
        raise RunError(
            f"{out} was trained with train.privacy=dp: its noise was calibrated to its epochs from the start, "
            "and the accountant's steps are not resumed",
            fix="train it again with another --out",
        )
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
    if averaged is not None:
        # the average goes on from where it was; a run trained without train.ema starts one now
        saved = out / "ema.safetensors"
        load_weights(saved if saved.exists() else out / "last.safetensors", averaged.module)
        averaged.n_averaged.fill_(1)
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


# ---------------------------------------------------------------------- one process of a torchrun launch
class _Options(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise RecscopeError(message, fix="see `recscope train --help` (all its options but --nproc)")


def main(argv: list[str] | None = None) -> None:
    """``torchrun --nproc-per-node N -m recscope.train --data SPEC --out RUN ...``: this process's
    part of a distributed run (``recscope train --nproc N`` starts it so), with the options of
    ``recscope train`` but ``--nproc``. Rank 0 prints; errors are one line on stderr, as the CLI's."""
    options = _Options(prog="python -m recscope.train", allow_abbrev=False)
    options.add_argument("--data", required=True)
    options.add_argument("--out", required=True, type=Path)
    options.add_argument("--catalog")
    options.add_argument("--config", type=Path)
    options.add_argument("--set", action="append", default=[])
    options.add_argument("--map", action="append", default=[])
    options.add_argument("--resume", action="store_true")
    console = Console(stderr=True, width=terminal_width(sys.stderr))
    try:
        given = options.parse_args(argv)
        config = load_config(given.config, given.set)
        data = load_dataset(given.data, given.catalog, config.data, column_map(given.map))
        if distributed.env_rank() == 0:
            print_load_report(console, data.report)
        fit(data, config, given.out, data_spec=given.data, catalog=given.catalog, resume=given.resume, console=console)
    except PeerError:
        sys.exit(2)  # rank 0 stopped the run and said why; no second copy of it
    except (Exception, KeyboardInterrupt) as e:
        exit_on_error(console, e)


if __name__ == "__main__":
    main()
