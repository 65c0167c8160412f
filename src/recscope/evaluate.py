"""Honest evaluation: full ranking over the whole catalog by default, one code path for every scorer.

A scorer maps a batch of left-padded histories ``(B, T)`` to next-item scores
``(B, n_items + 1)`` (column 0, padding, is never ranked); given ``events`` (the run's event
labels of every event), the scorer is called with the histories' ``(B, T)`` labels too. The model and the baselines
(popularity, item-to-item co-occurrence kNN) all go through :func:`evaluate`.

A scorer that also offers ``encode`` and ``score_items`` (:class:`ChunkScorer`: the model and
popularity) is ranked chunk by chunk over the catalog (``chunk_size`` items at a time), so memory
stays ``(batch_size, chunk_size)`` scores however big the catalog; the ranks are the ones the
whole score matrix gives (:func:`recscope.ranking.rank_chunks`).

Protocols:
- ``full``: the target is ranked against every item; by default items already in the
  user's history are not ranked (as the S3-Rec and ICLRec code do), the target itself
  always is.
- ``sampled``: the target against ``num_negatives`` uniform items the user never had
  (the S3-Rec / SASRec sampled protocol, for comparing with older papers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch

from recscope.data import Dataset, EvalCases, Split, pad_left
from recscope.metrics import all_metrics
from recscope.progress import track
from recscope.ranking import rank_among, rank_chunks

if TYPE_CHECKING:
    from recscope.model import SeqRec
    from recscope.recommend import Recommender

Scorer = Callable[[torch.Tensor], torch.Tensor]


@runtime_checkable
class ChunkScorer(Protocol):
    """A scorer that can score a part of the catalog: ``encode`` a batch of histories once (and
    their event labels, when it reads them), then ``score_items`` any items (a slice or (K,)
    indices) -> (B, K), equal to those columns of ``__call__``'s (B, n_items + 1) scores."""

    n_items: int

    def __call__(self, histories: torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor: ...

    def encode(self, histories: torch.Tensor, events: torch.Tensor | None = None) -> Any: ...

    def score_items(self, encoded: Any, items: slice | torch.Tensor) -> torch.Tensor: ...


def rank_targets(
    scorer: Scorer,
    data: Dataset,
    cases: EvalCases,
    max_len: int,
    *,
    protocol: str = "full",
    exclude_history: bool = True,
    num_negatives: int = 99,
    batch_size: int = 1024,
    chunk_size: int = 65_536,
    seed: int = 0,
    progress: str | None = None,
    exclude: np.ndarray | None = None,
    events: np.ndarray | None = None,
) -> np.ndarray:
    """0-based rank of each case's target among the candidates.

    ``exclude`` (full protocol): item indices that are no candidates for any case (the cold-start
    evaluation ranks a held-out item among the held-out items only by excluding the others).

    Ties are broken by the one tie rule of :mod:`recscope.ranking` (seeded random): a target
    tied with n candidates lands uniformly among them. Counting only strictly higher scores would
    flatter scorers with many equal scores (co-occurrence kNN gives most items 0; popularity ties
    items bought equally often).

    ``progress`` names the step in a progress display (``recscope.progress.track``); None
    shows none (training validates inside its own bar). ``chunk_size``: a :class:`ChunkScorer`
    scores this many items at a time (the ranks do not depend on it).
    """
    if protocol not in ("full", "sampled") or (protocol == "sampled" and exclude is not None):
        raise ValueError(f"unknown protocol {protocol!r} (or exclude with sampled): use 'full' or 'sampled'")
    rng = np.random.default_rng(seed)
    ranks = np.empty(len(cases), dtype=np.int64)
    starts = range(0, len(cases), batch_size)
    for start in track(starts, progress) if progress else starts:
        sl = slice(start, start + batch_size)
        users, hist_len, targets = cases.users[sl], cases.hist_len[sl], cases.targets[sl]
        items = torch.from_numpy(targets)
        # Only as wide as the batch's longest history: positions are counted from the right,
        # so columns of padding in every row change no score, they only cost time.
        histories = torch.from_numpy(pad_left(data, users, hist_len, min(max_len, max(int(hist_len.max()), 1))))
        given = (histories,)
        if events is not None:
            given += (torch.from_numpy(pad_left(data, users, hist_len, histories.shape[1], events)),)
        own, chunks = _scores(scorer, given, items, chunk_size)
        # The whole history (not only the last max_len items) is excluded / avoided.
        full_hist = torch.from_numpy(pad_left(data, users, hist_len, max(int(hist_len.max()), 1)))
        if protocol == "full":  # the target is ranked even if owned (a repeat purchase)
            owned = full_hist if exclude_history else None
            ranks[sl] = rank_chunks(chunks, items, own, owned=owned, exclude=exclude, rng=rng).numpy()
        else:
            negatives = _sample_negatives(rng, data.n_items, full_hist.numpy(), targets, num_negatives)
            neg_scores = _gather(chunks, torch.from_numpy(negatives))  # (B, num_negatives)
            ranks[sl] = rank_among(neg_scores, own, rng).numpy()
    return ranks


def _scores(
    scorer: Scorer | ChunkScorer, given: tuple[torch.Tensor, ...], targets: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, Iterable[tuple[int, torch.Tensor]]]:
    """The targets' scores (B,) and the catalog's scores as ``(offset, (B, K) scores)`` chunks:
    a :class:`ChunkScorer`'s ``chunk_size`` items at a time, any other scorer's in one."""
    if not isinstance(scorer, ChunkScorer):
        scores = scorer(*given).float()  # (B, n_items + 1)
        return scores.gather(1, targets[:, None])[:, 0], [(0, scores)]
    encoded = scorer.encode(*given)
    # (B, B) and its diagonal: the targets' scores from a matrix product, as a chunk's are
    own = scorer.score_items(encoded, targets).float().diagonal()
    n = scorer.n_items + 1
    # parts as equal as can be, so none is a single column
    bounds = np.linspace(0, n, -(-n // chunk_size) + 1).round().astype(int).tolist()
    chunks = (
        (lo, scorer.score_items(encoded, slice(lo, hi)).float()) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    )
    return own, chunks


def _gather(chunks: Iterable[tuple[int, torch.Tensor]], wanted: torch.Tensor) -> torch.Tensor:
    """(B, R) the scores of the items ``wanted`` (B, R), read from the chunks that hold them."""
    scores = torch.empty(wanted.shape)
    for offset, chunk in chunks:
        rows, cols = ((wanted >= offset) & (wanted < offset + chunk.shape[1])).nonzero(as_tuple=True)
        scores[rows, cols] = chunk[rows, wanted[rows, cols] - offset]
    return scores


def _sample_negatives(
    rng: np.random.Generator, n_items: int, histories: np.ndarray, targets: np.ndarray, n: int
) -> np.ndarray:
    """(B, n) uniform items outside each user's history and target, redrawn until clean."""
    negatives = rng.integers(1, n_items + 1, size=(len(targets), n))
    known = np.concatenate([histories, targets[:, None]], axis=1)
    for _ in range(100):
        clash = (negatives[:, :, None] == known[:, None, :]).any(-1)
        if not clash.any():
            break
        negatives[clash] = rng.integers(1, n_items + 1, size=int(clash.sum()))
    return negatives


def evaluate(
    scorer: Scorer,
    data: Dataset,
    cases: EvalCases,
    max_len: int,
    ks: tuple[int, ...] = (5, 10, 20),
    **kwargs,
) -> dict[str, float]:
    return all_metrics(rank_targets(scorer, data, cases, max_len, **kwargs), ks)


# ---------------------------------------------------------------------- scorers
class ModelScorer:
    """The model as a :class:`ChunkScorer`: its item table fused once; a history is encoded
    as its last hidden state (B, C), and an item's score is the task's prediction for the pair."""

    def __init__(self, model: SeqRec):
        model.eval()
        self.model = model
        self.n_items = model.cfg.n_items
        with torch.no_grad():
            self.table = model.item_table()  # (n_items + 1, C)

    def __call__(self, histories: torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.score(histories, self.table, events)

    @torch.no_grad()
    def encode(self, histories: torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
        # as score() reads them (query), in chunks of similar length: a batch of mostly short
        # histories is not run at the width of its longest
        return self.model.last_hidden(histories, self.table, events=events)  # (B, C)

    @torch.no_grad()
    def score_items(self, encoded: torch.Tensor, items: slice | torch.Tensor) -> torch.Tensor:
        return self.model.predict_many(encoded, self.table[items])  # (B, K)


def model_scorer(model: SeqRec) -> ModelScorer:
    return ModelScorer(model)


class PopularityScorer:
    """Most-bought items first, counted over the training events only."""

    def __init__(self, data: Dataset, train: np.ndarray):
        """``train`` (n_events,) bool: the events trained on (``Split.train``)."""
        counts = np.bincount(data.items[train], minlength=data.n_items + 1).astype(np.float32)
        self.scores = torch.from_numpy(counts)
        self.n_items = data.n_items

    def __call__(self, histories: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(histories), -1).clone()

    def encode(self, histories: torch.Tensor) -> int:
        return len(histories)  # the same scores for every history

    def score_items(self, encoded: int, items: slice | torch.Tensor) -> torch.Tensor:
        return self.scores[items].expand(encoded, -1)


class ItemKNNScorer:
    """Item-to-item co-occurrence kNN: cosine similarity of items over training users,
    summed over the history with more weight on recent items (``decay`` per step back)."""

    def __init__(self, data: Dataset, train: np.ndarray, neighbours: int = 100, decay: float = 0.8):
        users = np.repeat(np.arange(data.n_users), data.lengths)[train]  # ``train``: Split.train
        items = data.items[train]
        x = sp.csr_matrix(
            (np.ones_like(items, dtype=np.float32), (users, items)), shape=(data.n_users, data.n_items + 1)
        )
        x.data[:] = 1.0  # repeated purchases count once
        co = (x.T @ x).tocsr()  # (N + 1, N + 1) co-occurrence counts
        norms = np.sqrt(np.asarray(co.diagonal()).clip(min=1.0))
        sim = sp.diags(1.0 / norms) @ co @ sp.diags(1.0 / norms)
        sim.setdiag(0.0)
        self.sim = _keep_top(sim.tocsr(), neighbours)
        self.decay = decay

    def __call__(self, histories: torch.Tensor) -> torch.Tensor:
        w = _recency(histories, self.decay, self.sim.shape[0])
        return torch.from_numpy(np.asarray((w @ self.sim).todense(), dtype=np.float32))


def _recency(histories: torch.Tensor, decay: float, width: int) -> sp.csr_matrix:
    """(B, width) sparse weights of the items in left-padded ``histories`` (B, T): the last item
    weighs 1, each step back ``decay`` times less; padding weighs nothing."""
    B, T = histories.shape
    h = histories.numpy()
    weights = np.broadcast_to(decay ** np.arange(T - 1, -1, -1, dtype=np.float32), (B, T))
    rows = np.repeat(np.arange(B), T)
    return sp.csr_matrix((weights.ravel() * (h.ravel() > 0), (rows, h.ravel())), shape=(B, width))


class AttributesOnlyScorer:
    """Content only, no learned weight: the cosine between each candidate's field vector and the
    history's profile (its items' vectors summed, the last weighing 1 and each step back
    ``decay`` times less). The reference a cold item's score from its fields is measured against.

    An item's vector has one block per attribute field (its values' multi-hot) and one for its
    text vector (the run's frozen pretrained vectors, when it has text); each block is scaled to
    unit length, so every field weighs the same, and the whole vector to unit length (cosine).
    Items without any field score 0.
    """

    def __init__(self, data: Dataset, text: np.ndarray | None = None, decay: float = 0.8):
        n = data.n_items + 1
        blocks = []
        for f in data.fields:
            rows = np.repeat(np.arange(n), f.values.shape[1])
            cols = f.values.ravel()
            keep = cols > 0  # value 0 is "none"
            block = sp.csr_matrix(
                (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=(n, f.vocab_size)
            )
            blocks.append(block.multiply(1.0 / _norms(block)[:, None]).tocsr())
        if text is not None:
            text = np.asarray(text, dtype=np.float32)
            norms = np.linalg.norm(text, axis=1)
            blocks.append(sp.csr_matrix(text / np.where(norms > 0, norms, 1.0)[:, None]))
        if not blocks:
            raise ValueError("attributes_only needs a catalog with attribute fields or text")
        vectors = sp.hstack(blocks).tocsr()
        self.vectors = vectors.multiply(1.0 / _norms(vectors)[:, None]).tocsr().astype(np.float32)  # (N + 1, D)
        self.decay = decay

    def __call__(self, histories: torch.Tensor) -> torch.Tensor:
        profile = (_recency(histories, self.decay, self.vectors.shape[0]) @ self.vectors).toarray()  # (B, D)
        # The profile's length is the same for every candidate: it changes no ranking, so it is not divided out.
        scores = (self.vectors @ profile.T).T  # (B, N + 1): sparse @ dense, a dense result
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))


def _norms(matrix: sp.csr_matrix) -> np.ndarray:
    """(rows,) each row's L2 norm, 1 where it is 0 (an empty row stays empty)."""
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(1)).ravel())
    return np.where(norms > 0, norms, 1.0)


def _keep_top(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's k largest similarities (the 'k' of kNN)."""
    rows, cols, vals = [], [], []
    for r in track(range(sim.shape[0]), "item-kNN: each item's nearest neighbours"):
        lo, hi = sim.indptr[r], sim.indptr[r + 1]
        if hi - lo > k:
            top = np.argpartition(-sim.data[lo:hi], k)[:k] + lo
        else:
            top = np.arange(lo, hi)
        rows.append(np.full(len(top), r))
        cols.append(sim.indices[top])
        vals.append(sim.data[top])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=sim.shape, dtype=np.float32
    )


def evaluate_run(rec: Recommender, split: str = "test", protocol: str = "full", baselines: bool = False) -> dict:
    """Metrics of ``rec``'s model (and optionally the baselines) on the run's valid or test split;
    recorded in run.json under the run's lock (refused while another process writes the run).

    Returns ``{scorer: metrics}``; for a ``cold_items`` run also ``"cold_items"`` and
    ``"warm_items"`` (see :func:`cold_start`), ``"cold_items_among_cold"`` (full protocol) and
    ``"cases"``. A rating or click run is measured by its task's metrics against its task's
    baseline (:mod:`recscope.tasks`), always in the same call; ``protocol`` is about ranking and
    does not apply there.
    """
    from recscope.errors import RunError
    from recscope.tasks import TASKS

    if split not in ("valid", "test"):
        raise RunError(f"unknown split {split!r}", fix="use valid or test")
    if protocol not in ("full", "sampled"):
        raise RunError(f"unknown protocol {protocol!r}", fix="use full or sampled")
    cfg = rec.config
    parts = rec.split()
    task = TASKS[cfg.train.task]
    if not task.ranks_catalog:
        results = task.evaluate(rec.model, rec.data, parts, split, rec.inputs)
        _record(rec, f"{split}/{task.name}", results)
        return results
    cases = getattr(parts, split)
    kwargs = protocol_options(cfg, protocol)
    scorers = {"recscope": model_scorer(rec.model)}
    events = {"recscope": None if rec.inputs is None else rec.inputs.codes}
    if baselines:
        scorers["popularity"] = PopularityScorer(rec.data, parts.train)
        scorers["item-kNN"] = ItemKNNScorer(rec.data, parts.train)
    results = {
        name: evaluate(
            scorer,
            rec.data,
            cases,
            cfg.model.max_len,
            cfg.eval.ks,
            progress=f"evaluate: {name}",
            events=events.get(name),
            **kwargs,
        )
        for name, scorer in scorers.items()
    }
    if len(parts.cold):
        results.update(cold_start(rec, parts, cases, protocol))
    _record(rec, f"{split}/{protocol}", results)
    return results


def _record(rec: Recommender, key: str, results: dict) -> None:
    """Keep ``results`` in run.json's evaluations under ``key`` (when the run has a folder)."""
    from recscope.run import record_evaluation

    if rec.path is not None:
        rec.info = record_evaluation(rec.path, key, results)


def protocol_options(cfg, protocol: str) -> dict:
    """rank_targets' keyword arguments for ``protocol`` under a run's eval config."""
    return dict(
        protocol=protocol,
        exclude_history=cfg.eval.exclude_history,
        num_negatives=cfg.eval.num_negatives,
        batch_size=cfg.eval.batch_size,
        chunk_size=cfg.eval.chunk_size,
    )


def cold_start(rec: Recommender, parts: Split, cases: EvalCases, protocol: str = "full") -> dict:
    """The cold-start report of a ``cold_items`` run: its cases split by whether the target is a
    held-out item, each half ranked as every case is (the whole catalog, history excluded).

    - ``cold_items``: the model, ``popularity`` (training counts: a held-out item has none, so it
      ranks among the items with no training event, by the tie rule) and ``attributes_only``
      (:class:`AttributesOnlyScorer`);
    - ``warm_items``: the same scorers on the other cases (the cost of holding items out);
    - ``cold_items_among_cold`` (full protocol): the held-out target ranked among the held-out
      items only, where popularity is no better than chance;
    - ``cases``: how many cases each half has.
    """
    from recscope.errors import RunError

    recorded = rec.info.state.cold_items
    drawn = [rec.data.item_ids[i] for i in parts.cold]
    if recorded is not None and recorded != drawn:
        raise RunError(
            f"the run's config draws other held-out items than the {len(recorded):,} it was trained without "
            "(run.json state.cold_items)",
            fix="evaluate with the recscope (and numpy) version that trained the run, or train it again",
        )
    cfg = rec.config
    kwargs = protocol_options(cfg, protocol)
    text = rec.model.text_vectors.numpy() if cfg.model.text_dim else None
    scorers = {
        "recscope": model_scorer(rec.model),
        "popularity": PopularityScorer(rec.data, parts.train),
        "attributes_only": AttributesOnlyScorer(rec.data, text),
    }
    is_cold = np.isin(cases.targets, parts.cold)
    groups = {"cold_items": cases.subset(is_cold), "warm_items": cases.subset(~is_cold)}
    report: dict = {"cases": {group: len(c) for group, c in groups.items()}}

    codes = None if rec.inputs is None else rec.inputs.codes  # the model reads event types, baselines do not

    def measure(group: str, group_cases: EvalCases, **extra) -> dict:
        return {
            name: evaluate(
                scorer,
                rec.data,
                group_cases,
                cfg.model.max_len,
                cfg.eval.ks,
                progress=f"{group}: {name}",
                events=codes if name == "recscope" else None,
                **extra,
            )
            for name, scorer in scorers.items()
        }

    for group, group_cases in groups.items():
        report[group] = measure(group, group_cases, **kwargs)
    if protocol == "full":
        warm = np.setdiff1d(np.arange(1, rec.data.n_items + 1), parts.cold)
        report["cold_items_among_cold"] = measure("among cold", groups["cold_items"], exclude=warm, **kwargs)
    return report
