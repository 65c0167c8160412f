"""A plain training loop: shuffled windows, AdamW, evaluation on valid, early stopping, checkpoints.

Model selection uses the valid split only (NDCG@10, full ranking); the test split is
never looked at here.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recscope.config import Config
from recscope.data import Dataset, make_split, training_windows
from recscope.errors import ConfigError, RunError
from recscope.evaluate import evaluate, model_scorer
from recscope.model import SeqRec
from recscope.run import RunInfo, load_info, load_optimizer, save_info, save_optimizer, save_weights

SELECT_ON = "NDCG@10"


def with_data_sizes(config: Config, data: Dataset) -> Config:
    """The config with the model sizes the data implies (catalog size, attribute fields)."""
    fields = tuple((f.name, f.vocab_size, int(f.values.shape[1])) for f in data.fields)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, n_items=data.n_items, fields=fields))


def validate(config: Config) -> None:
    m, t = config.model, config.train
    if m.d_model % m.n_heads:
        raise ConfigError(f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}")
    if t.loss not in ("ce", "sampled"):
        raise ConfigError(f"train.loss={t.loss!r} is unknown", fix='use "ce" or "sampled"')
    if config.data.split not in ("loo", "temporal"):
        raise ConfigError(f"data.split={config.data.split!r} is unknown", fix='use "loo" or "temporal"')
    for name, value in [("model.max_len", m.max_len), ("train.batch_size", t.batch_size), ("train.epochs", t.epochs)]:
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")


def fit(
    data: Dataset,
    config: Config,
    out: Path,
    *,
    data_spec: str,
    catalog: str | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> RunInfo:
    """Train on ``data`` and write the run to ``out``; returns the run's summary."""
    console = console or Console(stderr=True)
    out = Path(out)
    validate(config)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    config = with_data_sizes(config, data)
    split = make_split(data, config.data.split, config.data.temporal_valid, config.data.temporal_test)
    if len(split.valid) == 0:
        raise RunError("no user has enough events for a valid case", fix="each user needs at least 3 events")

    torch.manual_seed(config.train.seed)
    model = SeqRec(config.model)
    model.set_item_fields({f.name: torch.from_numpy(f.values) for f in data.fields})
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    info = RunInfo(
        config, data_spec, catalog, {"epoch": 0, "best_epoch": 0, "best_valid": None, "bad_evals": 0, "history": []}
    )
    if resume:
        info = _resume(out, config, model, optimizer)
    else:
        if (out / "run.json").exists():
            raise RunError(f"{out} already holds a run", fix="pass --resume to continue it, or another --out")
        data.save(out)
    info.state["split"] = split.describe()
    info.state["data"] = data.describe()

    windows = torch.from_numpy(training_windows(data, split.train_len, config.model.max_len))
    t = config.train
    console.print(f"[bold]{data.describe()}[/]\n{split.describe()}; {len(windows):,} training windows")
    start_epoch = info.state["epoch"]
    best = info.state["best_valid"][SELECT_ON] if info.state["best_valid"] else -1.0
    steps_per_epoch = -(-len(windows) // t.batch_size)  # about: length batching may add a few
    with Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  valid NDCG@10 {task.fields[valid]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("train", total=steps_per_epoch, epoch=start_epoch + 1, loss=0.0, valid="-")
        for epoch in range(start_epoch, t.epochs):
            tic = time.perf_counter()
            loss = _train_epoch(model, optimizer, windows, config, epoch, progress, task)
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
                progress.update(task, valid=f"{metrics[SELECT_ON]:.4f} (best {best:.4f})")
                console.print(
                    f"epoch {epoch + 1:3d}  loss {loss:.4f}  valid HR@10 {metrics['HR@10']:.4f} "
                    f"NDCG@10 {metrics['NDCG@10']:.4f}  ({seconds:.1f}s)"
                )
            info.state["epoch"] = epoch + 1
            info.state["history"].append(record)
            info.state["train_seconds"] = round(sum(r["train_seconds"] for r in info.state["history"]), 2)
            save_weights(out / "last.safetensors", model)
            save_optimizer(out / "optimizer.pt", optimizer)
            save_info(out, info)
            if info.state["bad_evals"] >= t.patience:
                console.print(f"early stop: no better valid {SELECT_ON} for {t.patience} evaluations")
                break
    console.print(f"best valid {SELECT_ON} {best:.4f} at epoch {info.state['best_epoch']}; run saved in {out}")
    return info


def _train_epoch(model: SeqRec, optimizer, windows: torch.Tensor, config: Config, epoch: int, progress, task) -> float:
    t = config.train
    model.train()
    generator = torch.Generator().manual_seed(t.seed * 1000 + epoch)
    batches = _length_batches(windows, t.batch_size, generator)
    # Length-sorted batches hold very different numbers of targets: normalise by the mean
    # per batch, so every target weighs the same whatever batch it falls in.
    targets_per_batch = float(((windows[:, :-1] > 0) & (windows[:, 1:] > 0)).sum()) / len(batches)
    progress.update(task, completed=0, total=len(batches), epoch=epoch + 1)
    total = 0.0
    for index in batches:
        batch = windows[index]  # (B, T + 1), left-padded
        width = int((batch > 0).sum(1).max())
        batch = batch[:, -width:]  # drop columns that are padding in every row: same result, less work
        negatives = None
        if t.loss == "sampled":
            negatives = torch.randint(1, config.model.n_items + 1, (t.num_negatives,), generator=generator)
        loss = model.loss(batch[:, :-1], batch[:, 1:], negatives, reduction="sum") / targets_per_batch
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        progress.update(task, advance=1, loss=total / (progress.tasks[task].completed + 1))
    return total / max(len(batches), 1)


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


def _resume(out: Path, config: Config, model: SeqRec, optimizer) -> RunInfo:
    from safetensors.torch import load_file

    info = load_info(out)
    if info.config.model != config.model:
        raise RunError(
            f"the model config differs from the one {out} was trained with",
            fix="resume with the same --config and --set model.* values",
        )
    model.load_state_dict(load_file(str(out / "last.safetensors")))
    load_optimizer(out / "optimizer.pt", optimizer)
    info.config = config  # training keys (e.g. epochs) may be raised on resume
    return info
