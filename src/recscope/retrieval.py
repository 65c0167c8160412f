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

How deep a query searches (``ivf_probe`` lists, or ``ef_search`` graph candidates) is tuned
when the index is built: on held-out queries, the last hidden states of a seeded sample of the
run's own users' histories (``retrieval.tune_queries``; the index itself is built from the item
table alone), the depth is raised until the share of each query's exact top-10 that the index's
top-10 holds (recall@10, the candidates scored exactly as above) reaches
``retrieval.target_recall`` with 95% confidence (its one-sided lower bound over the queries
does, so the target holds on queries other than these), and the smallest depth that does is
kept, with the recall it reached, in ``index.json``. A target the deepest search cannot reach
(a quantized index with too small a pool) leaves the index at that depth, with a note.
``target_recall: 0`` searches at ``ivf_probe`` / ``ef_search`` as set.

The index is built once per model version and cached beside it, in FAISS's own format
(``faiss.write_index``; nothing is pickled)::

    RUN/indexes/<version>/items.faiss   the index over items 1..n of the version's item table
    RUN/indexes/<version>/rows.npy      64 rows of that table, spread over it (the load check)
    RUN/indexes/<version>/index.json    what it holds: version, items, width, kind and its build
                                        settings, file size and sha256, build time, FAISS version,
                                        and its tuning (target, depth chosen, recall reached)

``<version>`` is the version's id, the digest of its weights (``recscope.versions``), and the
item table is a function of the weights, so a cached index is reused as long as its
``index.json`` names the same items, width and build settings, its file has the recorded
size and digest, and the sample rows of the table it was built from (``rows.npy``) equal the
table's (a change in how tokens are fused would show there). Anything else is rebuilt, with a
note naming the file and why; another ``target_recall``, ``pool`` or ``tune_queries`` only
re-tunes the depth (index.json rewritten, the index kept).
Training builds it after it publishes a version (``prepare``); a version without one gets it
on first load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.console import Console

from recscope import versions
from recscope.config import Config, RetrievalConfig
from recscope.progress import track
from recscope.ranking import top_k_among

INDEXES = versions.INDEXES
INDEX_FILE = "items.faiss"
ROWS_FILE = "rows.npy"
META_FILE = versions.INDEX_META
FORMAT = 2  # 2: index.json holds the tuning
CHUNK = 50_000  # items added to an index per step (the progress bar's step)
SAMPLE_ROWS = 64  # rows of the table kept beside an index (rows.npy) and compared with the table on load
K = 10  # recall is recall@10: the share of a query's exact top-10 its approximate top-10 holds
TUNE_SEED = 0  # the seed of the users whose histories the depth is tuned on

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


def _note(text: str) -> None:
    _stderr.print(f"note: {text}", markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------- index kinds
class Kind(Protocol):
    """One kind of FAISS index: how it is built, and how deep a search of it goes."""

    name: str
    depth_key: str  # the RetrievalConfig key of its search depth (used as set when not tuned)

    def settings(self, cfg: RetrievalConfig, n_items: int) -> dict[str, int]:
        """What the built index depends on besides the table (a cached index must match them)."""

    def build(self, table: np.ndarray, settings: dict[str, int]) -> Any:
        """An index over ``table`` (N, C) float32, row i labelled i."""

    def depths(self, settings: dict[str, int], n_items: int, n: int) -> tuple[int, int]:
        """The shallowest and the deepest search worth tuning over, to find ``n`` items."""

    def params(self, depth: int, n: int, selector: Any) -> Any:
        """FAISS search parameters to find ``n`` items at ``depth``, restricted to ``selector`` (None: all)."""


def _add(index: Any, table: np.ndarray, what: str) -> None:
    for start in track(range(0, len(table), CHUNK), what, total=math.ceil(len(table) / CHUNK)):
        index.add(table[start : start + CHUNK])


class HNSW:
    """A graph over the items searched for the highest inner product (``IndexHNSWFlat``): the
    vectors are stored whole, so the distances it ranks by are exact inner products. Its depth
    is ``ef_search``, the candidates a search keeps (at least the ``n`` it returns)."""

    name = "hnsw"
    depth_key = "ef_search"

    def settings(self, cfg: RetrievalConfig, n_items: int) -> dict[str, int]:
        return {"m": cfg.hnsw_m, "ef_construction": cfg.ef_construction}

    def build(self, table: np.ndarray, settings: dict[str, int]) -> Any:
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(table.shape[1], settings["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings["ef_construction"]
        _add(index, table, f"ANN index: linking {len(table):,} items (hnsw)")
        return index

    def depths(self, settings: dict[str, int], n_items: int, n: int) -> tuple[int, int]:
        return n, max(n, min(n_items, 16_384))

    def params(self, depth: int, n: int, selector: Any) -> Any:
        return _faiss().SearchParametersHNSW(efSearch=max(depth, n), sel=selector)


class IVF:
    """Items clustered by k-means into inverted lists (``IndexIVFFlat``, inner product); a query
    scans the lists whose centroids score highest, with exact inner products. Its depth is
    ``ivf_probe``, the lists scanned (all of them: exact)."""

    name = "ivf"
    depth_key = "ivf_probe"

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
        return index

    def depths(self, settings: dict[str, int], n_items: int, n: int) -> tuple[int, int]:
        return 1, settings["lists"]

    def params(self, depth: int, n: int, selector: Any) -> Any:
        return _faiss().SearchParametersIVF(nprobe=depth, sel=selector)


class IVFPQ(IVF):
    """Inverted lists searched as ``ivf``'s, each item kept as a 4-bit code per dimension (product
    quantization with one sub-quantizer of 16 levels per dimension, ``IndexIVFPQFastScan``: C / 2
    bytes an item) and scanned by FAISS's SIMD fast scan. The inner products it ranks by are
    approximate, so the candidates (``k * pool``) are many and re-scored exactly. Fewer, longer
    lists than ``ivf`` (sqrt(n) / 4 by default): a single query's scan of many short lists is
    dominated by their overheads. On the structured 1M-item table it reaches recall@10 0.98 in
    1/2.8 of ``ivf``'s time a query, with an index of 38.5 MiB instead of 253 (docs/benchmarks.md)."""

    name = "ivfpq"

    def settings(self, cfg: RetrievalConfig, n_items: int) -> dict[str, int]:
        lists = cfg.ivf_lists or min(int(math.sqrt(n_items) / 4), n_items // 39)
        # 4 bits a code (fast scan's only width); codes scanned in blocks of 64 items, not FAISS's
        # default 32: a single query's scan of 1M items is ~15% faster (docs/benchmarks.md)
        return {"lists": max(1, min(lists, n_items)), "bits": 4, "block": 64}

    def build(self, table: np.ndarray, settings: dict[str, int]) -> Any:
        faiss = _faiss()
        lists, width = settings["lists"], table.shape[1]
        recipe = f"IVF{lists},PQ{width}x{settings['bits']}fs_{settings['block']}"
        index = faiss.index_factory(width, recipe, faiss.METRIC_INNER_PRODUCT)
        # k-means and the 16 levels of each dimension learnt on a seeded sample of 256 items a list
        # (FAISS's own cap): its few long lists are worth it (at 1M items, recall@10 +0.002 at the
        # same depth as from 64 a list, for a few seconds more of building)
        rng = np.random.default_rng(0)
        sample = table[np.sort(rng.choice(len(table), min(len(table), 256 * lists), replace=False))]
        ivf = faiss.downcast_index(index)
        ivf.cp.seed = 0
        ivf.pq.cp.min_points_per_centroid = 1  # a small table's 16 levels: no warning per dimension
        index.train(sample)
        _add(index, table, f"ANN index: coding {len(table):,} items into {lists:,} lists (ivfpq)")
        return index


KINDS: dict[str, Kind] = {kind.name: kind for kind in (HNSW(), IVF(), IVFPQ())}


# ---------------------------------------------------------------------- tuning the depth
@dataclass(frozen=True)
class Tuning:
    """How the search depth was chosen (index.json's ``tuning``)."""

    target: float  # retrieval.target_recall
    pool: int  # retrieval.pool: candidates searched per item asked for, as a query searches
    asked: int  # retrieval.tune_queries
    queries: int  # held-out queries it was measured on (fewer than asked: the run has fewer users)
    source: str  # where the queries came from
    depth: int  # the depth chosen (the kind's depth_key): the smallest reaching the target
    recall: float  # recall@10 on the queries at that depth
    lower: float  # its one-sided 95% lower confidence bound: what "reaches the target" asks of it
    reached: bool  # lower >= target (False: the deepest search falls short, and is kept)
    tried: list[list[float]]  # [depth, recall@10, lower bound] in the order tried
    seconds: float


Z95 = 1.645  # one-sided 95%: a depth reaches the target when recall - Z95 * its standard error does


def tune(index: Any, kind: Kind, settings: dict[str, int], vectors: np.ndarray, queries: np.ndarray,
         cfg: RetrievalConfig, source: str) -> Tuning:  # fmt: skip
    """The smallest search depth at which ``index`` over ``vectors`` (N, C) finds ``target_recall``
    of the exact top-10 of ``queries`` (Q, C), its ``K * pool`` candidates scored exactly as
    :func:`top_k` scores them. Reaching it means the recall's one-sided 95% lower bound (over
    the queries) does, so the target holds on other queries of the same kind, not only on
    these. The depth is doubled from the shallowest until it reaches the target, then bisected
    between the last depth short of it and the first reaching it (to 1/16 of the depth)."""
    started = time.perf_counter()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = min(K * cfg.pool, len(vectors))
    exact = _exact_top(vectors, queries, min(K, len(vectors)))
    lowest, deepest = kind.depths(settings, len(vectors), n)
    tried: dict[int, tuple[float, float]] = {}  # depth -> (recall, lower bound)

    def reaches(depth: int) -> bool:
        _, found = index.search(queries, n, params=kind.params(depth, n, None))  # (Q, n)
        hits = _hits(found, vectors, queries, exact)  # (Q,) each query's recall
        error = hits.std(ddof=1) / math.sqrt(len(hits)) if len(hits) > 1 else 0.0
        tried[depth] = (float(hits.mean()), float(hits.mean() - Z95 * error))
        return tried[depth][1] >= cfg.target_recall

    depth, short = lowest, None  # short: the deepest depth known to fall short of the target
    while not reaches(depth) and depth < deepest:
        short, depth = depth, min(2 * depth, deepest)
    while tried[depth][1] >= cfg.target_recall and short is not None and depth - short > max(1, depth // 16):
        middle = (short + depth) // 2
        if reaches(middle):
            depth = middle
        else:
            short = middle
    recall, lower = tried[depth]
    return Tuning(
        cfg.target_recall, cfg.pool, cfg.tune_queries, len(queries), source, depth, round(recall, 4),
        round(lower, 4), lower >= cfg.target_recall, [[d, round(r, 4), round(b, 4)] for d, (r, b) in tried.items()],
        round(time.perf_counter() - started, 2),
    )  # fmt: skip


def _exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) labels of each query's exact top-``k`` by inner product (queries a few at a time:
    32 rows of scores over a 1M-item table are 128 MB)."""
    table = torch.from_numpy(vectors)
    return np.vstack([
        torch.topk(torch.from_numpy(queries[s : s + 32]) @ table.T, k).indices.numpy()
        for s in range(0, len(queries), 32)
    ])  # fmt: skip


def _hits(found: np.ndarray, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """(Q,) each query's recall@k: the share of its ``exact`` (Q, k) top-k that the top-k of its
    ``found`` (Q, n) candidate labels (-1: none) holds, the candidates scored exactly as
    :func:`top_k` does."""
    scores = np.einsum("qnc,qc->qn", vectors[np.maximum(found, 0)], queries)
    scores[found < 0] = -np.inf
    best = np.take_along_axis(found, np.argsort(-scores, axis=1)[:, : exact.shape[1]], axis=1)
    return (best[:, :, None] == exact[:, None, :]).any(2).mean(1)


def tuning_users(n_users: int, n: int) -> np.ndarray:
    """The dense users (sorted) whose histories the depth is tuned on: a seeded sample of ``n``
    (all when the run has fewer). The benchmark measures recall on other users."""
    if n >= n_users:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(TUNE_SEED).choice(n_users, n, replace=False))


def held_out_queries(model: Any, data: Any, config: Config, table: torch.Tensor, n: int) -> np.ndarray:
    """(Q, C) the last hidden states of :func:`tuning_users`' histories (their last
    ``model.max_len`` events, with their event labels when the model reads them), as the
    service's queries are: what the search depth is tuned on."""
    from recscope.data import pad_left
    from recscope.tasks import event_inputs

    lengths = data.lengths
    users = np.flatnonzero(lengths > 0)
    users = users[tuning_users(len(users), n)]
    inputs = event_inputs(data, config) if config.model.n_events else None
    hidden = []
    with torch.no_grad():
        for s in range(0, len(users), 256):
            part = users[s : s + 256]
            items = torch.from_numpy(pad_left(data, part, lengths[part], config.model.max_len))
            events = None
            if inputs is not None:
                codes = pad_left(data, part, lengths[part], config.model.max_len, source=inputs.codes)
                events = torch.from_numpy(codes)
            hidden.append(model.query(items, events, table).to(torch.float32))
    return torch.cat(hidden).numpy()


def run_queries(run: Path, version: str, n: int) -> np.ndarray | None:
    """:func:`held_out_queries` of model ``version`` of ``run``; None when ``run`` is no run."""
    from recscope.run import load_data, load_info, load_model

    if not (Path(run) / "run.json").exists():
        return None
    config = load_info(run).config
    model, _ = load_model(run, weights=versions.weights(run, version)[0])
    model.eval()
    with torch.no_grad():
        table = model.item_table()
    return held_out_queries(model, load_data(run), config, table, n)


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
    tuning: Tuning | None = None  # None: not tuned (target_recall 0, or no queries to tune on)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IndexInfo:
        tuning = raw.get("tuning")
        return cls(**{**raw, "tuning": None if tuning is None else Tuning(**tuning)})


class ItemIndex:
    """An index over the trained items' tokens (dense indices 1..``info.items``) and the search
    settings of the run (``cfg``: pool, and the depth when the index is not tuned)."""

    def __init__(self, index: Any, info: IndexInfo, cfg: RetrievalConfig):
        self.index, self.info, self.cfg = index, info, cfg
        self.kind = KINDS[info.kind]
        # how deep a search goes: the tuned depth, else the config's
        self.depth: int = info.tuning.depth if info.tuning else getattr(cfg, self.kind.depth_key)
        self._unrestricted: dict[tuple[int, int], Any] = {}  # (depth, n) -> search parameters hiding nothing

    @property
    def items(self) -> int:
        return self.info.items

    def search(self, query: np.ndarray, n: int, hidden: np.ndarray) -> np.ndarray:
        """Dense indices of up to ``n`` indexed items with the highest inner product with
        ``query`` (C,), best first, none of ``hidden`` (dense indices); fewer when the index
        finds fewer (a search that must step around many hidden items)."""
        labels = hidden[(hidden >= 1) & (hidden <= self.items)].astype(np.int64) - 1
        n = min(n, self.items)
        if len(labels):
            faiss = _faiss()
            # Keep the selectors referenced until the search returns: FAISS holds raw pointers.
            inner = faiss.IDSelectorBatch(labels)
            selector = faiss.IDSelectorNot(inner)
            params = self.kind.params(self.depth, n, selector)
        else:  # the same parameters every time: made once (a query is ~1 ms; every 0.01 ms shows)
            params = self._unrestricted.get((self.depth, n))
            if params is None:
                params = self._unrestricted[self.depth, n] = self.kind.params(self.depth, n, None)
        _, found = self.index.search(query.reshape(1, -1), n, params=params)
        found = found[0]
        return found[found >= 0] + 1


def build(
    table: torch.Tensor, version: str, cfg: RetrievalConfig, queries: np.ndarray | None = None, source: str = ""
) -> ItemIndex:
    """An index over rows 1.. of ``table`` (n_items + 1, C) (row 0 is padding), its depth tuned
    on ``queries`` (Q, C) (from ``source``) to ``cfg.target_recall``; untuned without them."""
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
    return _tuned(ItemIndex(index, info, cfg), vectors, queries, source)


def _tuned(index: ItemIndex, vectors: np.ndarray, queries: np.ndarray | None, source: str) -> ItemIndex:
    """``index`` with its depth tuned to its config's target (untuned: target 0, or no queries)."""
    cfg = index.cfg
    tuning = None
    if cfg.target_recall > 0 and queries is not None and len(queries):
        tuning = tune(index.index, index.kind, index.info.settings, vectors, queries, cfg, source)
        if not tuning.reached:
            _note(
                f"the ANN index ({index.kind.name}) finds {tuning.recall:.3f} of the exact top-{K} at its deepest "
                f"search ({index.kind.depth_key}={tuning.depth}), short of retrieval.target_recall "
                f"{cfg.target_recall}: it searches that deep (set retrieval.ann=off to score exactly)"
            )
    return ItemIndex(index.index, replace(index.info, tuning=tuning), cfg)


def _tuning_stale(info: IndexInfo, cfg: RetrievalConfig) -> str | None:
    """Why the index's tuning does not answer ``cfg`` (None: it does)."""
    t = info.tuning
    if cfg.target_recall == 0:
        return None if t is None else "retrieval.target_recall is 0 now"
    if t is None:
        return "it is not tuned"
    if (t.target, t.pool, t.asked) != (cfg.target_recall, cfg.pool, cfg.tune_queries):
        return f"it was tuned for target {t.target}, pool {t.pool}, {t.asked} queries"
    return None


def _vectors(table: torch.Tensor) -> np.ndarray:
    """(n_items, C) float32, C-contiguous: the items' rows of the table, as FAISS takes them."""
    return np.ascontiguousarray(table[1:].detach().to(torch.float32).numpy())


def folder(run: Path, version: str) -> Path:
    return versions.index_folder(run, version)


def save(index: ItemIndex, where: Path, table: torch.Tensor) -> ItemIndex:
    """Write the index, sample rows of the ``table`` it was built from, and its index.json into
    ``where`` (each file written whole and renamed; index.json last, so it only ever describes
    complete files)."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / INDEX_FILE
    _atomic(path, lambda p: _faiss().write_index(index.index, str(p)))
    rows = _sample(_vectors(table))
    _atomic(where / ROWS_FILE, lambda p: _save_rows(p, rows))
    info = replace(index.info, bytes=path.stat().st_size, sha256=_sha256(path))
    _write_meta(where, info)
    return ItemIndex(index.index, info, index.cfg)


def _save_rows(path: Path, rows: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file, not a name: np.save would append .npy to the temporary one
        np.save(f, rows, allow_pickle=False)


def _sample(vectors: np.ndarray) -> np.ndarray:
    """(<= SAMPLE_ROWS, C) rows spread over the table: what a cached index is checked against (a
    quantized index cannot give its rows back exactly, so they are kept beside it)."""
    return vectors[np.unique(np.linspace(0, len(vectors) - 1, SAMPLE_ROWS).astype(np.int64))]


def _write_meta(where: Path, info: IndexInfo) -> None:
    _atomic(where / META_FILE, lambda p: p.write_text(json.dumps(asdict(info), indent=1)))


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write to a temporary sibling of this process, then rename: a reader never sees half a
    file, and two processes building the same index do not write into each other's."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def load(where: Path, table: torch.Tensor, version: str, cfg: RetrievalConfig) -> ItemIndex:
    """The index cached in ``where`` for ``table`` of model ``version``; a ValueError saying why
    when it is missing, damaged or made for another table or build settings. Its tuning is
    as recorded, whatever ``cfg`` asks (:func:`open_index` re-tunes a stale one)."""
    meta, path = where / META_FILE, where / INDEX_FILE
    if not meta.exists():
        raise ValueError("there is none yet")
    try:
        raw = json.loads(meta.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"it was written in format {raw.get('format')}, this recscope reads {FORMAT}")
        info = IndexInfo.from_dict(raw)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{meta} is not readable ({e})") from None
    kind = KINDS.get(info.kind)
    expected = (version, len(table) - 1, table.shape[1], cfg.index)
    if kind is None or (info.version, info.items, info.width, info.kind) != expected:
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
    try:
        rows = np.load(where / ROWS_FILE, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where / ROWS_FILE} is missing or damaged ({e})") from None
    sample = _sample(_vectors(table))
    if rows.shape != sample.shape or not np.allclose(rows, sample, rtol=1e-5, atol=1e-6):
        raise ValueError(f"{path} was not built from this item table (sample rows differ)")
    return ItemIndex(index, info, cfg)


Queries = Callable[[], "np.ndarray | None"]  # the held-out queries, computed only when a tuning needs them


def run_source(cfg: RetrievalConfig) -> str:
    return f"last hidden states of the histories of {cfg.tune_queries:,} of the run's users (seed {TUNE_SEED})"


def open_index(
    run: Path | None,
    version: str,
    table: torch.Tensor,
    cfg: RetrievalConfig,
    queries: Queries | None = None,
    source: str | None = None,
) -> ItemIndex:
    """The index of model ``version`` of ``run``: the cached one when it is valid (re-tuned when
    its tuning is for another target or pool), else built, tuned and cached, with a note saying
    why; without a run (or where the run cannot be written), built and kept in memory.
    ``queries`` gives the held-out queries to tune on (``source`` says what they are); by
    default the run's own (:func:`run_queries`), none without a run (the depth is the config's)."""
    if queries is None:
        queries = (lambda: run_queries(run, version, cfg.tune_queries)) if run is not None else (lambda: None)
    source = source or run_source(cfg)
    if run is None:
        return build(table, version, cfg, queries(), source)
    where = folder(run, version)
    try:
        index = load(where, table, version, cfg)
    except ValueError as why:
        if (where / META_FILE).exists():
            _note(f"rebuilding the ANN index in {where}: {why}")
        index = build(table, version, cfg, queries(), source)
        try:
            return save(index, where, table)
        except OSError as e:
            _note(f"the ANN index could not be cached in {where} ({e}); kept in memory")
            return index
    stale = _tuning_stale(index.info, cfg)
    if stale is None:
        return index
    given = queries() if cfg.target_recall > 0 else None
    if cfg.target_recall > 0 and given is None:
        return index  # nothing to tune on: the depth stays the config's
    _note(f"re-tuning the ANN index in {where}: {stale}")
    index = _tuned(index, _vectors(table), given, source)
    try:
        _write_meta(where, index.info)
    except OSError as e:
        _note(f"the ANN index's tuning could not be written in {where} ({e}); kept in memory")
    return index


def prepare(run: Path, version: str) -> ItemIndex | None:
    """Build, tune and cache the index of ``version`` when the run retrieves with one (training
    calls this after it publishes a version, so the service starts on a ready index); None
    otherwise."""
    from recscope.run import load_data, load_info, load_model

    if not (Path(run) / "run.json").exists():  # weights published outside a run: nothing to index
        return None
    config = load_info(run).config
    if not wanted(config, config.model.n_items):
        return None
    model, _ = load_model(run, weights=versions.weights(run, version)[0])
    model.eval()
    with torch.no_grad():
        table = model.item_table()
    cfg = config.retrieval
    queries = lambda: held_out_queries(model, load_data(run), config, table, cfg.tune_queries)  # noqa: E731
    return open_index(run, version, table, cfg, queries)


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
    candidates = found
    if n_columns - 1 > index.items:
        added = np.arange(index.items + 1, n_columns, dtype=np.int64)
        candidates = np.concatenate([found, added[~np.isin(added, hidden)]])
    candidates = torch.from_numpy(candidates)
    if len(candidates) < min(k, n_columns - 1 - len(hidden)):
        return None
    # index_select, not table[candidates]: with 2 threads on the busy machine, advanced indexing by
    # scattered rows took ~25 ms per query, index_select 0.002 ms
    scores = score(query, table.index_select(0, candidates))[0]  # (M,): the exact scores of the pool
    return top_k_among(scores, candidates, n_columns, k)
