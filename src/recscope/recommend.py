"""The Python API a notebook user calls; the CLI and the service wrap it.

rec = Recommender.load("runs/beauty")
rec.recommend(user="42", k=10)                 # a known user's next items
rec.recommend(history=["B001", "B002"], k=10)  # anyone, from item ids
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from recscope.data import Dataset, make_split
from recscope.errors import RunError
from recscope.evaluate import ItemKNNScorer, PopularityScorer, evaluate, model_scorer
from recscope.model import SeqRec
from recscope.run import RunInfo, load_data, load_model, save_info


@dataclass
class Recommendation:
    rank: int  # 1-based
    item_id: str
    title: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


def top_k(scores: torch.Tensor, k: int):
    """The ``k`` best of (n_items + 1,) scores, fewer if fewer are finite (owned items are -inf)."""
    return torch.topk(scores, min(k, int(torch.isfinite(scores).sum())))


class Recommender:
    def __init__(self, model: SeqRec, data: Dataset, info: RunInfo, path: Path | None = None):
        self.model, self.data, self.info, self.path = model, data, info, path
        self.config = info.config
        with torch.no_grad():
            self._table = model.item_table()
        self._explainers: dict = {}

    @classmethod
    def load(cls, run: str | Path) -> Recommender:
        model, info = load_model(Path(run))
        return cls(model, load_data(Path(run)), info, Path(run))

    # ------------------------------------------------------------------ histories
    def history(self, user: str) -> np.ndarray:
        """The known user's whole history (dense item indices, oldest first)."""
        return self.data.sequence(self.data.user_index(user))

    def history_from_ids(self, item_ids: list[str]) -> np.ndarray:
        if not item_ids:
            raise RunError("the history is empty", fix="pass at least one item id")
        return np.array([self.data.item_index(i) for i in item_ids], dtype=np.int64)

    def _resolve(self, user: str | None, history: list[str] | None) -> np.ndarray:
        if (user is None) == (history is None):
            raise RunError("pass exactly one of user=... or history=[...]")
        return self.history(user) if user is not None else self.history_from_ids(history)

    def tensor(self, history: np.ndarray) -> torch.Tensor:
        """(1, T) the last max_len items of a history, as the model reads them."""
        return torch.from_numpy(np.asarray(history[-self.config.model.max_len :], dtype=np.int64))[None, :]

    # ------------------------------------------------------------------ recommend
    def scores(self, history: np.ndarray, exclude_history: bool = True) -> torch.Tensor:
        """(n_items + 1,) next-item scores; padding and (by default) owned items are -inf."""
        scores = self.model.score(self.tensor(history), self._table)[0]
        if exclude_history:
            scores[torch.from_numpy(np.asarray(history, dtype=np.int64))] = float("-inf")
        return scores

    def recommend(
        self,
        user: str | None = None,
        *,
        history: list[str] | None = None,
        k: int = 10,
        exclude_history: bool = True,
    ) -> list[Recommendation]:
        return self._top(self._resolve(user, history), k, exclude_history)

    # ------------------------------------------------------------------ explain
    def default_method(self) -> str:
        """The method the faithfulness measurements chose for this run (explain-eval), else the fallback."""
        from recscope.explain.api import FALLBACK_DEFAULT

        measured = self.info.state.get("explain_eval", {})
        return measured.get("default", FALLBACK_DEFAULT)

    def explain(
        self,
        user: str | None = None,
        item: str | None = None,
        *,
        history: list[str] | None = None,
        top: int = 10,
        method: str | None = None,
        k: int = 10,
        counterfactual: bool = True,
        attentions: bool = False,
    ):
        """Explanations for one recommended item (``item=``) or the whole top-``top``.

        An ``item`` outside the top-K is explained too: its rank says where it stands.
        """
        from recscope.explain.api import explain_items, make_explainer

        hist = self._resolve(user, history)
        scores = self.scores(hist)
        if item is not None:
            target = self.data.item_index(item)
            targets = [target]
        else:
            targets = top_k(scores, top).indices.tolist()
        ranks = [int((scores > scores[t]).sum()) + 1 for t in targets]
        finite = int(torch.isfinite(scores).sum())
        cutoff = float(torch.topk(scores, k + 1).values[-1]) if finite > k else None
        explainer = self._explainers.get(method or self.default_method())
        if explainer is None:
            explainer = make_explainer(self.model, method or self.default_method())
            self._explainers[explainer.name] = explainer
        return explain_items(
            explainer,
            self.data,
            hist,
            targets,
            scores=[float(scores[t]) for t in targets],
            ranks=ranks,
            user=user,
            k=k,
            counterfactual=counterfactual,
            attentions=attentions,
            cutoff=cutoff,
        )

    def what_if(
        self,
        user: str | None = None,
        *,
        history: list[str] | None = None,
        remove: list[str] = (),
        add: list[str] = (),
        k: int = 10,
    ) -> dict:
        """Re-rank an edited history: items removed from it and/or appended to it.

        Returns the top-K before and after, and which items entered or left.
        """
        hist = self._resolve(user, history)
        drop = {self.data.item_index(i) for i in remove}
        edited = np.array([i for i in hist if i not in drop] + [self.data.item_index(i) for i in add], dtype=np.int64)
        if len(edited) == 0:
            raise RunError("the edited history is empty", fix="remove fewer items or add some")
        before = self._top(hist, k)
        after = self._top(edited, k)
        ids_before = [r.item_id for r in before]
        ids_after = [r.item_id for r in after]
        return {
            "before": [r.to_dict() for r in before],
            "after": [r.to_dict() for r in after],
            "entered": [i for i in ids_after if i not in ids_before],
            "left": [i for i in ids_before if i not in ids_after],
        }

    def _top(self, hist: np.ndarray, k: int, exclude_history: bool = True) -> list[Recommendation]:
        scores = self.scores(hist, exclude_history)
        top = top_k(scores, k)
        return [
            Recommendation(r + 1, self.data.item_ids[i], self.data.title(i), float(s))
            for r, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True))
        ]

    # ------------------------------------------------------------------ evaluate
    def split(self):
        """The run's train / valid / test split, as the run's config defines it."""
        cfg = self.config.data
        return make_split(self.data, cfg.split, cfg.temporal_valid, cfg.temporal_test)

    def evaluate(self, split: str = "test", protocol: str = "full", baselines: bool = False) -> dict[str, dict]:
        """Metrics of the model (and optionally the baselines) on valid or test; stored in run.json."""
        if split not in ("valid", "test"):
            raise RunError(f"unknown split {split!r}", fix="use valid or test")
        if protocol not in ("full", "sampled"):
            raise RunError(f"unknown protocol {protocol!r}", fix="use full or sampled")
        cfg = self.config
        parts = self.split()
        cases = getattr(parts, split)
        kwargs = dict(
            protocol=protocol,
            exclude_history=cfg.eval.exclude_history,
            num_negatives=cfg.eval.num_negatives,
            batch_size=cfg.eval.batch_size,
        )
        scorers = {"recscope": model_scorer(self.model)}
        if baselines:
            scorers["popularity"] = PopularityScorer(self.data, parts.train_len)
            scorers["item-kNN"] = ItemKNNScorer(self.data, parts.train_len)
        results = {
            name: evaluate(
                scorer, self.data, cases, cfg.model.max_len, cfg.eval.ks, progress=f"evaluate: {name}", **kwargs
            )
            for name, scorer in scorers.items()
        }
        if self.path is not None:
            self.info.state.setdefault("evaluations", {})[f"{split}/{protocol}"] = results
            save_info(self.path, self.info)
        return results
