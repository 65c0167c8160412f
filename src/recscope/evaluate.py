"""Honest evaluation: full ranking over the whole catalog by default, one code path for every scorer.

A scorer maps a batch of left-padded histories ``(B, T)`` to next-item scores
``(B, n_items + 1)`` (column 0, padding, is never ranked); given ``events`` (the run's event
labels of every event), the scorer is called with the histories' ``(B, T)`` labels too. The model and the baselines
(popularity, item-to-item co-occurrence kNN) all go through :func:`evaluate`.

Protocols:
- ``full``: the target is ranked against every item; by default items already in the
  user's history are not ranked (as the S3-Rec and ICLRec code do), the target itself
  always is.
- ``sampled``: the target against ``num_negatives`` uniform items the user never had
  (the S3-Rec / SASRec sampled protocol, for comparing with older papers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from recscope.data import Dataset, EvalCases, pad_left
from recscope.metrics import all_metrics
from recscope.progress import track
from recscope.ranking import rank, rank_among

if TYPE_CHECKING:
    from recscope.recommend import Recommender

Scorer = Callable[[torch.Tensor], torch.Tensor]


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
    seed: int = 0,
    progress: str | None = None,
    events: np.ndarray | None = None,
) -> np.ndarray:
    """0-based rank of each case's target among the candidates.

    Ties are broken by the one tie rule of :mod:`recscope.ranking` (seeded random): a target
    tied with n candidates lands uniformly among them. Counting only strictly higher scores would
    flatter scorers with many equal scores (co-occurrence kNN gives most items 0; popularity ties
    items bought equally often).

    ``progress`` names the step in a progress display (``recscope.progress.track``); None
    shows none (training validates inside its own bar).
    """
    rng = np.random.default_rng(seed)
    ranks = np.empty(len(cases), dtype=np.int64)
    starts = range(0, len(cases), batch_size)
    for start in track(starts, progress) if progress else starts:
        sl = slice(start, start + batch_size)
        users, hist_len, targets = cases.users[sl], cases.hist_len[sl], cases.targets[sl]
        # Only as wide as the batch's longest history: positions are counted from the right,
        # so columns of padding in every row change no score, they only cost time.
        histories = torch.from_numpy(pad_left(data, users, hist_len, min(max_len, max(int(hist_len.max()), 1))))
        if events is None:
            scores = scorer(histories).float()  # (B, n_items + 1)
        else:
            labels = pad_left(data, users, hist_len, histories.shape[1], events)
            scores = scorer(histories, torch.from_numpy(labels)).float()
        # The whole history (not only the last max_len items) is excluded / avoided.
        full_hist = torch.from_numpy(pad_left(data, users, hist_len, max(int(hist_len.max()), 1)))
        if protocol == "full":  # the target is ranked even if owned (a repeat purchase)
            ranks[sl] = rank(scores, targets, owned=full_hist if exclude_history else None, rng=rng).numpy()
        elif protocol == "sampled":
            negatives = _sample_negatives(rng, data.n_items, full_hist.numpy(), targets, num_negatives)
            neg_scores = scores.gather(1, torch.from_numpy(negatives))  # (B, num_negatives)
            target_scores = scores.gather(1, torch.from_numpy(targets)[:, None])  # (B, 1)
            ranks[sl] = rank_among(neg_scores, target_scores, rng).numpy()
        else:
            raise ValueError(f"unknown protocol {protocol!r}: use 'full' or 'sampled'")
    return ranks


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
def model_scorer(model: torch.nn.Module) -> Scorer:
    model.eval()
    with torch.no_grad():
        table = model.item_table()
    return lambda histories, events=None: model.score(histories, table, events)


class PopularityScorer:
    """Most-bought items first, counted over the training events only."""

    def __init__(self, data: Dataset, train_len: np.ndarray):
        counts = np.bincount(_train_events(data, train_len), minlength=data.n_items + 1).astype(np.float32)
        self.scores = torch.from_numpy(counts)

    def __call__(self, histories: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(histories), -1).clone()


class ItemKNNScorer:
    """Item-to-item co-occurrence kNN: cosine similarity of items over training users,
    summed over the history with more weight on recent items (``decay`` per step back)."""

    def __init__(self, data: Dataset, train_len: np.ndarray, neighbours: int = 100, decay: float = 0.8):
        users = np.repeat(np.arange(data.n_users), train_len)
        items = _train_events(data, train_len)
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
        B, T = histories.shape
        h = histories.numpy()
        weights = np.broadcast_to(self.decay ** np.arange(T - 1, -1, -1, dtype=np.float32), (B, T))
        rows = np.repeat(np.arange(B), T)
        w = sp.csr_matrix((weights.ravel() * (h.ravel() > 0), (rows, h.ravel())), shape=(B, self.sim.shape[0]))
        return torch.from_numpy(np.asarray((w @ self.sim).todense(), dtype=np.float32))


def _train_events(data: Dataset, train_len: np.ndarray) -> np.ndarray:
    users = np.repeat(np.arange(data.n_users), train_len)
    position = np.arange(len(users)) - np.repeat(np.cumsum(train_len) - train_len, train_len)
    return data.items[data.offsets[users] + position]


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

    A rating or click run is measured by its task's metrics against its task's baseline
    (:mod:`recscope.tasks`), always in the same call; ``protocol`` is about ranking and does not apply."""
    from recscope.errors import RunError
    from recscope.tasks import evaluate_task

    if split not in ("valid", "test"):
        raise RunError(f"unknown split {split!r}", fix="use valid or test")
    if protocol not in ("full", "sampled"):
        raise RunError(f"unknown protocol {protocol!r}", fix="use full or sampled")
    cfg = rec.config
    parts = rec.split()
    task = cfg.train.task
    if task != "next_item":
        results = evaluate_task(rec.model, rec.data, parts, task, split, rec.inputs)
        _record(rec, f"{split}/{task}", results)
        return results
    cases = getattr(parts, split)
    kwargs = dict(
        protocol=protocol,
        exclude_history=cfg.eval.exclude_history,
        num_negatives=cfg.eval.num_negatives,
        batch_size=cfg.eval.batch_size,
    )
    scorers = {"recscope": model_scorer(rec.model)}
    events = {"recscope": None if rec.inputs is None else rec.inputs.codes}
    if baselines:
        scorers["popularity"] = PopularityScorer(rec.data, parts.train_len)
        scorers["item-kNN"] = ItemKNNScorer(rec.data, parts.train_len)
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
    _record(rec, f"{split}/{protocol}", results)
    return results


def _record(rec: Recommender, key: str, results: dict) -> None:
    """Keep ``results`` in run.json's evaluations under ``key`` (when the run has a folder)."""
    from recscope.run import update_state

    if rec.path is not None:
        rec.info = update_state(
            rec.path, lambda state: state.setdefault("evaluations", {}).update({key: results}), "evaluate"
        )
