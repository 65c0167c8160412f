"""Prepared data sets: read, check and map ids once; ``train --data prepared:DIR`` reuses the result.

``recscope data prepare SPEC [--catalog FILE] --out DIR`` loads any data spec the way
``train`` does (the same checks, located errors, skip counts and notes) and writes::

    DIR/data.safetensors   offsets, items, timestamps, events, values, attribute matrices, extras
    DIR/data.json          user and item ids, titles, texts, vocabularies, the load report
    DIR/skipped_rows.csv   every row read but not kept (when there are any)
    DIR/prepared.json      what it was made from: spec, catalog, the data config's loading keys

The first three are :meth:`Dataset.save`'s files, the same a run folder holds: one writer,
one reader. Events are grouped by user and in time order, so a split is a cut per user.
``prepared.json`` is written last, so a folder without it is not (or not yet) a prepared data
set. Loading checks that the data config's loading keys (everything but the split's) are the
ones it was prepared with: other keys would have made other data, and a silent mix-up would
train on something else than the config says.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import NamedTuple

from safetensors import SafetensorError

from recscope import __version__
from recscope.config import DataConfig
from recscope.data.dataset import Dataset
from recscope.errors import DataError
from recscope.files import atomic_write

MANIFEST = "prepared.json"
FORMAT = 1
# Read after loading (they cut the loaded data): a prepared data set serves any of them.
SPLIT_KEYS = ("split", "cold_share", "cold_seed", "temporal_valid", "temporal_test")
DATA_FILES = ("data.safetensors", "data.json", "skipped_rows.csv")


def loading_keys(config: DataConfig) -> dict[str, object]:
    """The data config's keys that change what a load makes (JSON-ready)."""
    values = asdict(config)
    return {f.name: _plain(values[f.name]) for f in fields(config) if f.name not in SPLIT_KEYS}


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


class Prepared(NamedTuple):
    data: Dataset
    out: Path
    seconds_load: float  # reading, checking and mapping ids
    seconds_write: float


def prepare(
    spec: str,
    out: Path,
    catalog: str | Path | None = None,
    config: DataConfig | None = None,
    columns: dict[str, str] | None = None,
) -> Prepared:
    """Load ``spec`` (see :func:`load_dataset`) and write it to ``out`` as a prepared data set."""
    from recscope.data.formats import load_dataset

    config = config or DataConfig()
    out = Path(out)
    _check_out(out)
    started = time.perf_counter()
    data = load_dataset(spec, catalog, config, columns)
    loaded = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # until the new files are whole, the folder is not prepared
    (out / "skipped_rows.csv").unlink(missing_ok=True)  # an earlier prepare's, when this one skipped none
    data.save(out)
    manifest = {
        "format": FORMAT,
        "recscope_version": __version__,
        "spec": spec,
        "catalog": None if catalog is None else str(catalog),
        "columns": columns or {},
        "data_config": loading_keys(config),
        "users": data.n_users,
        "items": data.n_items,
        "events": data.n_events,
    }
    atomic_write(out / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2)))
    return Prepared(data, out, loaded - started, time.perf_counter() - loaded)


def _check_out(out: Path) -> None:
    """``out`` is new, empty or an earlier prepared data set: never write into some other folder."""
    if out.exists() and not out.is_dir():
        raise DataError("is a file, not a folder", file=str(out), fix="choose a folder for --out")
    if out.is_dir() and not (out / MANIFEST).exists():
        other = sorted(p.name for p in out.iterdir() if p.name not in DATA_FILES and not p.name.endswith(".tmp"))
        if other:
            raise DataError(
                f"the folder holds other files ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}) "
                "and is not a prepared data set",
                file=str(out),
                fix="choose a new or empty folder for --out",
            )


def _command(manifest: dict, folder: Path) -> str:
    """The ``recscope data prepare`` command that made ``folder`` (from its manifest)."""
    words = ["recscope data prepare", str(manifest.get("spec", "SPEC"))]
    if manifest.get("catalog"):
        words.append(f"--catalog {manifest['catalog']}")
    words += [f"--map {ours}={theirs}" for ours, theirs in (manifest.get("columns") or {}).items()]
    return " ".join([*words, f"--out {folder}"])


def load_prepared(rest: str, config: DataConfig) -> Dataset:
    """The data set ``recscope data prepare`` wrote to the folder ``rest``; the raw files are not read."""
    if not rest:
        raise DataError("spec 'prepared:' names no folder", fix="write it as prepared:DIR (from recscope data prepare)")
    folder = Path(rest).expanduser()
    redo = f"recscope data prepare SPEC --out {folder}"
    if not folder.is_dir():
        raise DataError("is not a folder", file=str(folder), fix=f"prepare it first: {redo}")
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise DataError(
            f"has no {MANIFEST}: not a prepared data set, or its preparation did not finish",
            file=str(folder),
            fix=f"prepare it (again): {redo}",
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        made_with = manifest["data_config"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise DataError(
            "is not a readable prepared.json", file=str(manifest_path), fix=f"prepare again: {redo}"
        ) from None
    redo = _command(manifest, folder)
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"was written in prepared format {manifest.get('format')!r}; this recscope reads format {FORMAT}",
            file=str(manifest_path),
            fix=f"prepare again: {redo}",
        )
    wanted = loading_keys(config)
    differ = [k for k in wanted if made_with.get(k) != wanted[k]]
    if differ:
        shown = "; ".join(f"data.{k} is {wanted[k]!r} here, {made_with.get(k)!r} when prepared" for k in differ)
        sets = " ".join(f"--set 'data.{k}={json.dumps(wanted[k])}'" for k in differ)
        raise DataError(
            f"the data config differs from the one the data set was prepared with ({shown})",
            file=str(folder),
            fix=f"use the same data.* settings, or prepare again with these: {redo} {sets}",
        )
    try:
        return Dataset.load(folder)
    except (KeyError, TypeError, ValueError, OSError, SafetensorError) as e:
        raise DataError(
            f"its data files are damaged or missing ({type(e).__name__}: {str(e)[:100]})",
            file=str(folder),
            fix=f"prepare again: {redo}",
        ) from None
