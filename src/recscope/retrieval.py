"""Approximate retrieval for big catalogs: a FAISS index over the item table, candidates scored exactly.

A next-item run scores an item by the inner product of the history's last hidden state with
the item's fused token (``SeqRec.item_table()``), so its top-K is a maximum-inner-product
search over that table. Above a catalog size (``retrieval.ann``, ``retrieval.ann_above``) the
Recommender asks an index for a pool of candidates (``k * retrieval.pool``, never an item
the caller hides: owned, dismissed, excluded), adds the items added since training (they are
not in the index and are searched exactly beside it), and has the model score that pool
exactly: every score returned is the model's own, ties are broken as ``recscope.ranking``
breaks them, and only recall is approximate. Runs with a rating or click head score exactly
at any size: their scores come from an MLP, not an inner product.

The index is built once per model version and cached beside it, in FAISS's own format
(``faiss.write_index``; nothing is pickled)::

    RUN/indexes/<version>/items.faiss   the index over items 1..n of the version's item table
    RUN/indexes/<version>/index.json    what it holds: version, items, width, kind and its build
                                        settings, file size and sha256, build time, FAISS version

``<version>`` is the version's id, the digest of its weights (``recscope.versions``), and the
item table is a function of the weights, so a cached index is reused as long as its
``index.json`` names the same items, width and build settings, its file has the recorded
size and digest, and sample rows of it equal the table (a change in how tokens are fused
would show there). Anything else is rebuilt, with a note naming the file and why. Training
builds it when it publishes a version (``versions.publish``); a version without one gets it
on first load.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.console import Console

from recscope.config import Config, RetrievalConfig
from recscope.files import atomic_write
from recscope.progress import track
from recscope.ranking import top_k_among

INDEXES = "indexes"
INDEX_FILE = "items.faiss"
META_FILE = "index.json"
FORMAT = 1
CHUNK = 50_000  # items added to an index per step (the progress bar's step)
SAMPLE_ROWS = 64  # rows of a cached index compared with the item table on load

_stderr = Console(stderr=True)


def wanted(config: Config, n_items: int) -> bool:
    """Whether a run of ``config`` with ``n_items`` items retrieves with an index (a rating or
    click run never does: ``train.task`` says so before training, ``model.head`` after)."""
    r = config.retrieval
    if config.model.head != "next_item" or config.train.task != "next_item" or r.ann == "off":
        return False
    return r.ann == "on" or n_items > r.ann_above


def _faiss():
    """FAISS, with as many OpenMP threads as torch uses (building is parallel; a single query is not)."""
    import faiss

    faiss.omp_set_num_threads(max(torch.get_num_threads(), 1))
    return faiss


# ---------------------------------------------------------------------- index kinds
class Kind(Protocol):
    """One kind of FAISS index: how it is built and how it is searched."""

    name: str

    def settings(self, cfg: RetrievalConfig, n_items: int) -> dict[str, int]:
        """What the built index depends on besides the table (a cached index must match them)."""

    def build(self, table: np.ndarray, settings: dict[str, int]) -> Any:
        """An index over ``table`` (N, C) float32, row i labelled i."""

    def params(self, cfg: RetrievalConfig, n: int, selector: Any) -> Any:
        """FAISS search parameters to find ``n`` items, restricted to ``selector`` (None: all)."""


def _add(index: Any, table: np.ndarray, what: str) -> None:
    for start in track(range(0, len(table), CHUNK), what, total=math.ceil(len(table) / CHUNK)):
        index.add(table[start : start + CHUNK])


class HNSW:
    """A graph over the items searched for the highest inner product (``IndexHNSWFlat``): the
    vectors are stored whole, so the distances it ranks by are exact inner products."""

    name = "hnsw"

    def settings(self, cfg: RetrievalConfig, n_items: int) -> dict[str, int]:
        return {"m": cfg.hnsw_m, "ef_construction": cfg.ef_construction}

    def build(self, table: np.ndarray, settings: dict[str, int]) -> Any:
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(table.shape[1], settings["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings["ef_construction"]
        _add(index, table, f"ANN index: linking {len(table):,} items (hnsw)")
        return index

    def params(self, cfg: RetrievalConfig, n: int, selector: Any) -> Any:
        return _faiss().SearchParametersHNSW(efSearch=max(cfg.ef_search, n), sel=selector)


class IVF:
    """Items clustered by k-means into inverted lists (``IndexIVFFlat``, inner product); a query
    scans the ``ivf_probe`` lists whose centroids score highest, with exact inner products."""

    name = "ivf"

    def settings(self, cfg: RetrievalConfig, n_items: int) -> dict[str, int]:
        # 4 sqrt(n) lists by default, and at least 39 items per list (fewer and k-means is told
        # it has too few points to learn from)
        lists = cfg.ivf_lists or min(int(4 * math.sqrt(n_items)), n_items // 39)
        return {"lists": max(1, min(lists, n_items))}

    def build(self, table: np.ndarray, settings: dict[str, int]) -> Any:
        faiss = _faiss()
        lists = settings["lists"]
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(table.shape[1]), table.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
        # k-means on a seeded sample: 64 points per list is plenty (FAISS itself caps at 256)
        rng = np.random.default_rng(0)
        sample = table[np.sort(rng.choice(len(table), min(len(table), 64 * lists), replace=False))]
        index.cp.seed = 0
        index.train(sample)
        _add(index, table, f"ANN index: filing {len(table):,} items into {lists:,} lists (ivf)")
        index.make_direct_map()  # lets the load check reconstruct sample rows
        return index

    def params(self, cfg: RetrievalConfig, n: int, selector: Any) -> Any:
        return _faiss().SearchParametersIVF(nprobe=cfg.ivf_probe, sel=selector)


KINDS: dict[str, Kind] = {kind.name: kind for kind in (HNSW(), IVF())}


# ---------------------------------------------------------------------- the index
@dataclass(frozen=True)
class IndexInfo:
    """index.json: what a cached index holds and how it was made."""

    version: str  # the model version (digest of its weights) whose item table it indexes
    items: int  # items 1..items of the table; label i is item i + 1
    width: int  # d_model
    kind: str
    settings: dict[str, int]
    bytes: int = 0  # size of items.faiss
    sha256: str = ""  # of items.faiss
    build_seconds: float = 0.0
    faiss: str = ""
    format: int = FORMAT


class ItemIndex:
    """An index over the trained items' tokens (dense indices 1..``info.items``) and the search
    settings of the run (``cfg``: ef_search, ivf_probe, pool: none of them changes the index)."""

    def __init__(self, index: Any, info: IndexInfo, cfg: RetrievalConfig):
        self.index, self.info, self.cfg = index, info, cfg
        self.kind = KINDS[info.kind]

    @property
    def items(self) -> int:
        return self.info.items

    def search(self, query: np.ndarray, n: int, hidden: np.ndarray) -> np.ndarray:
        """Dense indices of up to ``n`` indexed items with the highest inner product with
        ``query`` (C,), best first, none of ``hidden`` (dense indices); fewer when the index
        finds fewer (a search that must step around many hidden items)."""
        faiss = _faiss()
        labels = hidden[(hidden >= 1) & (hidden <= self.items)].astype(np.int64) - 1
        # Keep the selectors referenced until the search returns: FAISS holds raw pointers.
        inner = faiss.IDSelectorBatch(labels) if len(labels) else None
        selector = faiss.IDSelectorNot(inner) if inner is not None else None
        n = min(n, self.items)
        _, found = self.index.search(query.reshape(1, -1), n, params=self.kind.params(self.cfg, n, selector))
        found = found[0]
        return found[found >= 0] + 1


def build(table: torch.Tensor, version: str, cfg: RetrievalConfig) -> ItemIndex:
    """An index over rows 1.. of ``table`` (n_items + 1, C) (row 0 is padding)."""
    faiss = _faiss()
    vectors = _vectors(table)
    kind = KINDS[cfg.index]
    settings = kind.settings(cfg, len(vectors))
    started = time.perf_counter()
    index = kind.build(vectors, settings)
    info = IndexInfo(
        version, len(vectors), vectors.shape[1], kind.name, settings,
        build_seconds=round(time.perf_counter() - started, 2), faiss=faiss.__version__,
    )  # fmt: skip
    return ItemIndex(index, info, cfg)


def _vectors(table: torch.Tensor) -> np.ndarray:
    """(n_items, C) float32, C-contiguous: the items' rows of the table, as FAISS takes them."""
    return np.ascontiguousarray(table[1:].detach().to(torch.float32).numpy())


def folder(run: Path, version: str) -> Path:
    return Path(run) / INDEXES / version


def save(index: ItemIndex, where: Path) -> ItemIndex:
    """Write the index and its index.json into ``where`` (each file written whole and renamed;
    index.json last, so it only ever describes a complete index file)."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / INDEX_FILE
    atomic_write(path, lambda p: _faiss().write_index(index.index, str(p)), per_process=True)
    info = IndexInfo(**{**asdict(index.info), "bytes": path.stat().st_size, "sha256": _sha256(path)})
    atomic_write(where / META_FILE, lambda p: p.write_text(json.dumps(asdict(info), indent=1)), per_process=True)
    return ItemIndex(index.index, info, index.cfg)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def load(where: Path, table: torch.Tensor, version: str, cfg: RetrievalConfig) -> ItemIndex:
    """The index cached in ``where`` for ``table`` of model ``version``; a ValueError saying why
    when it is missing, damaged or made for another table or build settings."""
    meta, path = where / META_FILE, where / INDEX_FILE
    if not meta.exists():
        raise ValueError("there is none yet")
    try:
        info = IndexInfo(**json.loads(meta.read_text()))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{meta} is not readable ({e})") from None
    kind = KINDS.get(info.kind)
    expected = (version, len(table) - 1, table.shape[1], cfg.index, FORMAT)
    if kind is None or (info.version, info.items, info.width, info.kind, info.format) != expected:
        raise ValueError(f"it was made for another item table or index kind ({info.kind}, {info.items:,} items)")
    if info.settings != kind.settings(cfg, info.items):
        raise ValueError(f"it was built with other settings ({info.settings})")
    if not path.exists() or path.stat().st_size != info.bytes or _sha256(path) != info.sha256:
        raise ValueError(f"{path} is damaged (its size or sha256 differs from {meta})")
    try:
        index = _faiss().read_index(str(path))
    except RuntimeError as e:
        raise ValueError(f"{path} is not a readable FAISS index ({str(e).splitlines()[0][:120]})") from None
    if index.ntotal != info.items or index.d != info.width:
        raise ValueError(f"{path} holds {index.ntotal:,} vectors of width {index.d}, not the table's")
    rows = np.unique(np.linspace(0, info.items - 1, SAMPLE_ROWS).astype(np.int64))
    if not np.allclose(index.reconstruct_batch(rows), _vectors(table)[rows], rtol=1e-5, atol=1e-6):
        raise ValueError(f"{path} does not hold this item table (sample rows differ)")
    return ItemIndex(index, info, cfg)


def open_index(run: Path | None, version: str, table: torch.Tensor, cfg: RetrievalConfig) -> ItemIndex:
    """The index of model ``version`` of ``run``: the cached one when it is valid, else built
    (with a note saying why) and cached; without a run (or where the run cannot be written),
    built and kept in memory."""
    if run is None:
        return build(table, version, cfg)
    where = folder(run, version)
    try:
        return load(where, table, version, cfg)
    except ValueError as why:
        if (where / META_FILE).exists():
            _stderr.print(
                f"note: rebuilding the ANN index in {where}: {why}", markup=False, highlight=False, soft_wrap=True
            )
    index = build(table, version, cfg)
    try:
        return save(index, where)
    except OSError as e:
        _stderr.print(
            f"note: the ANN index could not be cached in {where} ({e}); kept in memory", markup=False, soft_wrap=True
        )
        return index


def prepare(run: Path, version: str) -> ItemIndex | None:
    """Build and cache the index of ``version`` when the run retrieves with one (training calls
    this as it publishes a version, so the service starts on a ready index); None otherwise."""
    from recscope import versions
    from recscope.run import load_info, load_model

    if not (Path(run) / "run.json").exists():  # weights published outside a run: nothing to index
        return None
    config = load_info(run).config
    if not wanted(config, config.model.n_items):
        return None
    model, _ = load_model(run, weights=versions.weights(run, version)[0])
    with torch.no_grad():
        table = model.item_table()
    return open_index(run, version, table, config.retrieval)


# ---------------------------------------------------------------------- retrieval
Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (1, C) hidden, (M, C) tokens -> (1, M)


def top_k(
    index: ItemIndex, query: torch.Tensor, table: torch.Tensor, k: int, hidden: np.ndarray, score: Scorer
) -> torch.return_types.topk | None:
    """The top-``k`` (values, dense indices) of the catalog for the hidden state ``query`` (1, C):
    candidates from ``index`` and every item added since training (past ``index.items``), none
    of ``hidden`` (owned, dismissed, excluded), scored exactly by ``score`` (the model's head).
    None when the index cannot vouch for it: it found fewer candidates than ``k`` while more
    items are visible (a search stepping around very many hidden items); score exactly then."""
    n_columns = len(table)
    hidden = np.unique(np.asarray(hidden, dtype=np.int64))
    hidden = hidden[(hidden >= 1) & (hidden < n_columns)]
    found = index.search(query[0].numpy(), k * index.cfg.pool, hidden)
    added = np.arange(index.items + 1, n_columns, dtype=np.int64)
    added = added[~np.isin(added, hidden)]
    candidates = torch.from_numpy(np.concatenate([found, added]))
    if len(candidates) < min(k, n_columns - 1 - len(hidden)):
        return None
    # index_select, not table[candidates]: with 2 threads on the busy machine, advanced indexing by
    # scattered rows took ~25 ms per query, index_select 0.002 ms
    scores = score(query, table.index_select(0, candidates))[0]  # (M,): the exact scores of the pool
    return top_k_among(scores, candidates, n_columns, k)
