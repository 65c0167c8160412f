"""Sharded towers (``train.tower_shards``): each tower of a K-tower model trained alone on its
own disjoint shard of the users, SISA-style, so forgetting a user trains one tower again.

    RUN/shards/<k>-<digest>/   shard k's run: a single-tower run (towers=1, seed + k) of its users
    RUN/versions/<id>/         the K-tower model spliced from the shards' best weights

A user's shard is a stable hash of their id (the first 8 bytes of its SHA-256, mod K): the same on
every machine and in every run, recorded in run.json (``state.shards``). Shard k is trained with
``train.fit`` on the run's data restricted to its users (the whole catalog), as a model of its own.
The towers of a K-tower model are independent side by side (``recscope.model``: every width is
K x d_model, tower k owns the k-th d_model columns of each embedding, the k-th block of rows of
each tower-wide linear map and the k-th slice of each LayerNorm), so the K single-tower models'
parameters are copied into tower k's slices (:func:`splice`) and the K-tower model scores the mean
of their scores: it is their ensemble, exactly.

A shard's folder is named by a digest of its data and config: a shard whose users and events are
unchanged is the same folder and is reused, not trained again. Forgetting a user
(:func:`reshard`) rebuilds the data without every forgotten user, so only the shard that held
them has new data: it alone is trained, the others are reused, and the spliced model is
published as a new version of the run (source "forget") recording the tombstones it honoured.
The replaced shard's folder, trained on the forgotten user, is deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from recscope import retrieval, versions
from recscope.config import Config, validate
from recscope.data import Dataset, split_of
from recscope.errors import RunError
from recscope.lock import RunLock
from recscope.model import SeqRec
from recscope.run import RunInfo, TrainingState, fingerprint, load_data, load_info, load_model, save_info, save_weights

SHARDS = "shards"
FORGET = "forget"  # the source of a version spliced after a forget


def shard_of(user_id: str, towers: int) -> int:
    """The shard (tower) of a user: stable across machines, runs and Python processes."""
    digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % towers


def shard_config(config: Config, k: int) -> Config:
    """Shard k's config: one tower, its own seed (the towers start apart, as a joint model's do)."""
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, towers=1),
        train=dataclasses.replace(config.train, tower_shards=False, tower_batches="shared", seed=config.train.seed + k),
    )


def shard_data(data: Dataset, towers: int) -> list[Dataset]:
    """The K shards of ``data``: each its users' events over the whole catalog."""
    from recscope.forget import rebuild

    of = np.array([shard_of(u, towers) for u in data.user_ids], dtype=np.int64)
    return [rebuild(data, of == k, name=f"{data.name} (shard {k}/{towers})")[0] for k in range(towers)]


def _folder(part: Dataset, config: Config, k: int) -> str:
    """Shard k's folder name: a digest of its data and its config as training sizes it (so the
    config as given and as a trained run.json holds it name the same folder)."""
    from recscope.train import with_data_sizes

    sized = with_data_sizes(shard_config(config, k), part)
    sized = dataclasses.replace(sized, model=dataclasses.replace(sized.model, text_dim=0))  # the data's, not a choice
    h = hashlib.sha256(fingerprint(part).encode())
    h.update(json.dumps(sized.to_dict(), sort_keys=True, default=str).encode())
    return f"{k}-{h.hexdigest()[:16]}"


def train_shards(
    data: Dataset,
    config: Config,
    run: Path,
    *,
    data_spec: str,
    console: Console | None = None,
    reuse: Path | None = None,
) -> list[dict[str, Any]]:
    """Train (or reuse) every shard's run under ``run/shards/``; returns one record per shard:
    ``k``, ``folder``, ``users``, ``events``, ``retrained`` (False: the same data was trained
    before, in ``run`` or in ``reuse``'s shards, and is reused) and ``seconds``."""
    from recscope.train import fit

    towers = config.model.towers
    records = []
    for k, part in enumerate(shard_data(data, towers)):
        if part.n_users == 0:
            raise RunError(
                f"shard {k} of {towers} has no user: {data.n_users} users are too few for {towers} shards",
                fix="use fewer towers (model.towers) or more users, or train.tower_shards=false",
            )
        name = _folder(part, config, k)
        where = run / SHARDS / name
        tic = time.perf_counter()
        retrained = False
        if not (where / "run.json").exists():
            earlier = None if reuse is None else reuse / SHARDS / name
            tmp = run / SHARDS / f".{name}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            if earlier is not None and (earlier / "run.json").exists():
                shutil.copytree(earlier, tmp)
            else:
                if console is not None:
                    console.print(f"shard {k}/{towers}: {part.describe()}", highlight=False)
                fit(part, shard_config(config, k), tmp, data_spec=f"{data_spec} (shard {k}/{towers})", console=console)
                retrained = True
            tmp.rename(where)
        records.append(
            {
                "k": k,
                "folder": f"{SHARDS}/{name}",
                "users": part.n_users,
                "events": part.n_events,
                "retrained": retrained,
                "seconds": round(time.perf_counter() - tic, 2),
            }
        )
    return records


def _tower_dim(big: torch.Tensor, small: torch.Tensor, towers: int, name: str) -> int | None:
    """The dimension ``big`` is ``towers`` x ``small`` along (None: same shape, a shared buffer)."""
    if big.shape == small.shape:
        return None
    dims = [
        d
        for d in range(big.dim())
        if big.shape[d] == towers * small.shape[d]
        and all(big.shape[e] == small.shape[e] for e in range(big.dim()) if e != d)
    ]
    if big.dim() != small.dim() or len(dims) != 1:
        raise RunError(f"cannot splice {name}: {tuple(small.shape)} into {tuple(big.shape)} for {towers} towers")
    return dims[0]


def splice(config: Config, models: list[SeqRec]) -> SeqRec:
    """The K-tower model whose tower k is ``models[k]`` (single-tower models of one catalog)."""
    towers = len(models)
    spliced = SeqRec(dataclasses.replace(config.model, towers=towers))
    parts = [m.state_dict() for m in models]
    state = spliced.state_dict()
    for name, big in state.items():
        small = parts[0][name]
        dim = _tower_dim(big, small, towers, name)
        if dim is None:  # the catalog's buffers (field values, text vectors): one for all towers
            for k, part in enumerate(parts[1:], 1):
                if not torch.equal(part[name], small):
                    raise RunError(f"cannot splice {name}: shards 0 and {k} differ in it (not the same catalog)")
            big.copy_(small)
            continue
        width = small.shape[dim]
        for k, part in enumerate(parts):
            big.narrow(dim, k * width, width).copy_(part[name])
    spliced.load_state_dict(state)
    spliced.eval()
    return spliced


def spliced_model(run: Path, records: list[dict[str, Any]], config: Config) -> SeqRec:
    models = [load_model(run / r["folder"])[0] for r in records]
    return splice(config, models)


def _validate(model: SeqRec, data: Dataset, config: Config) -> dict:
    from recscope.tasks import TASKS, event_inputs

    task = TASKS[config.train.task]
    return task.validate(model, data, split_of(data, config), config, event_inputs(data, config))


def fit_sharded(
    data: Dataset,
    config: Config,
    out: Path,
    *,
    data_spec: str,
    catalog: str | None = None,
    console: Console | None = None,
    details: dict[str, Any] | None = None,
    reuse: Path | None = None,
    source: str = "train",
) -> RunInfo:
    """Train a run of ``config.model.towers`` towers, tower k on shard k's users (see the module's
    docstring), and write it to ``out`` as ``train.fit`` writes a run (run.json, the data, the
    spliced model as its version, with ``details``). ``reuse``: a run whose shard folders are
    copied when their data is the same (``recscope retrain`` of a sharded run)."""
    out = Path(out)
    validate(config)
    console = console or Console(stderr=True)
    if (out / "run.json").exists():
        raise RunError(f"{out} already holds a run", fix="give --out a new directory")
    with RunLock(out, "train", console):
        tic = time.perf_counter()
        records = train_shards(data, config, out, data_spec=data_spec, console=console, reuse=reuse)
        trained = load_info(out / records[0]["folder"]).config  # the data's sizes (catalog, fields, text)
        full = dataclasses.replace(trained, model=dataclasses.replace(trained.model, towers=config.model.towers))
        full = dataclasses.replace(full, train=config.train)
        model = spliced_model(out, records, full)
        valid = _validate(model, data, full)
        state = TrainingState(best_valid=valid, split=split_of(data, full).describe(), data=data.describe())
        state.train_seconds = round(time.perf_counter() - tic, 2)
        state.other["shards"] = {
            "towers": config.model.towers,
            "hash": "sha256(user id) first 8 bytes mod towers",
            "users": [r["users"] for r in records],
        }
        info = RunInfo(full, data_spec, catalog, state, data_fingerprint=fingerprint(data))
        data.save(out)
        save_weights(out / versions.WEIGHTS, model)
        save_info(out, info)
        version = versions.publish(
            out, out / versions.WEIGHTS, source, None, best_valid=valid, shards=records, **(details or {})
        )
        retrieval.prepare(out, version.id)
    console.print(
        f"{len(records)} shards ({sum(r['retrained'] for r in records)} trained); spliced valid "
        f"HR@10 {valid['HR@10']:.4f} NDCG@10 {valid['NDCG@10']:.4f}; run saved in {out} (model version {version.id})",
        highlight=False,
    )
    return info


def reshard(run: Path, store, console: Console | None = None) -> tuple[versions.Version, list[int]]:
    """After a forget: train again only the shards of ``run`` that held a forgotten user (every
    tombstone of ``store``), splice, publish the result as a new version (source "forget", its
    details the shards and the tombstones honoured), make it current and have every worker over
    ``store`` serve it; delete the replaced shards' folders. Returns (version, shards trained)."""
    from recscope.forget import honoured, rebuild

    run = Path(run)
    console = console or Console(stderr=True)
    with RunLock(run, FORGET, console):
        info = load_info(run)
        data = load_data(run, info)
        until = time.time()
        forgotten = store.forgotten()
        kept, _ = rebuild(data, np.array([u not in forgotten for u in data.user_ids], dtype=bool))
        before = {
            r["folder"]
            for v in versions.listing(run)
            for r in v.details.get("shards") or ()
            if (run / r["folder"]).exists()
        }
        records = train_shards(kept, info.config, run, data_spec=info.data_spec, console=console)
        model = spliced_model(run, records, info.config)
        weights = run / f".forget.{os.getpid()}.safetensors"
        try:
            save_weights(weights, model)
            version = versions.publish(
                run,
                weights,
                FORGET,
                versions.current(run),
                best_valid=_validate(model, kept, info.config),
                shards=records,
                tombstones=honoured(forgotten, until),
            )
        finally:
            weights.unlink(missing_ok=True)
        retrieval.prepare(run, version.id)
        store.set_serving(version.id)
        for folder in before - {r["folder"] for r in records}:  # trained on a user forgotten since
            shutil.rmtree(run / folder, ignore_errors=True)
    return version, [r["k"] for r in records if r["retrained"]]
