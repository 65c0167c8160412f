"""What a run learns to predict (``train.task``), the event inputs, and each task's baselines.

Each task is a :class:`Task` in :data:`TASKS`, looked up once from the config
(``TASKS[config.train.task]``); it holds all that varies by task: the data it learns from and
checks for, its training windows and loss, its head's starting bias, its evaluation, the valid
metric model selection follows, and its baseline.

- ``next_item`` (the default): rank the catalog for the user's next item (:mod:`recscope.evaluate`).
- ``rating``: the next item's rating, from the data's ``value`` column (MovieLens ratings, a
  csv ``value``). Evaluated on the split's valid / test targets by RMSE and MAE, against a
  user/item bias baseline (global mean + regularised user and item biases, fitted on the
  training ratings, its regularisation chosen on valid) measured in the same call.
- ``click``: whether a shown item is clicked, from the data's impressions (the synthetic shop
  emits them with ``synthetic:impressions=N``). Evaluated on the impressions shown at the
  split's valid / test moments by AUC and log loss, against popularity-CTR (each item's
  smoothed training click rate, the smoothing chosen on valid).

The live store logs served lists and the feedback on them (``recscope.serve.store``): a
served list is an impression row per shown item (``served_items``: request, rank, item) for
the history the user had when it was served (``served.user_id``, ``served.created_at``: the
user's events up to that moment), clicked when a ``feedback`` row with action ``click`` (or
``purchase``) names the same request and item; a ``dismiss`` is a shown, not clicked item.
Click training will read them as :class:`recscope.data.dataset.Impressions` built that way
(``hist_len`` = the user's events before ``created_at``); that is the feedback loop's part.

Event inputs: an event's token adds the embedding of its label, which says what the user did
beyond the item: its type (``view``, ``purchase``, any string the data names) and, in a rating
run, the rating given (``rating=4``; an event without a type: ``value=4``). A label the run was
not trained on (a new kind of event, an ad-hoc history) is label 0, which adds nothing. The
labels are a model version's: a fine-tune over a store holding dismissals appends "dismiss"
(``histories.DISMISS``), so that version reads a user's dismissals as events of their history
(``recscope.finetune``); the version records its labels (``versions.event_labels``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from recscope.config import Config
from recscope.data import Dataset, EvalCases, Split, pad_left, training_windows
from recscope.data.dataset import NO_EVENT, Impressions
from recscope.errors import RunError
from recscope.evaluate import evaluate, model_scorer
from recscope.histories import TRAINING_EVENT
from recscope.metrics import auc, log_loss, mae, rmse

if TYPE_CHECKING:
    from recscope.model import SeqRec
    from recscope.train import TrainingData


# ---------------------------------------------------------------------- event inputs
def event_label(event: str, value: float | None, with_value: bool) -> str:
    """What an event's token says beyond its item: its type, and with ``with_value`` its value."""
    kind = "" if event in (NO_EVENT, TRAINING_EVENT) else event
    if with_value and value is not None and math.isfinite(value):
        return f"{kind or 'value'}={round(value, 1):g}"
    return kind


@dataclass
class EventInputs:
    """The event labels of a run: ``labels[code]`` (``labels[0]`` is "": nothing known), and the
    code of every event of its data, aligned with ``Dataset.items``."""

    labels: list[str]
    codes: np.ndarray  # (n_events,) int64
    with_value: bool  # labels hold the event's value (a rating run)

    def __post_init__(self) -> None:
        self._lookup = {label: i for i, label in enumerate(self.labels)}

    def code(self, event: str, value: float | None = None) -> int:
        """The label code of an event (0 for a label the run does not know)."""
        return self._lookup.get(event_label(event, value, self.with_value), 0)


def event_inputs(data: Dataset, config: Config, labels: list[str] | None = None) -> EventInputs | None:
    """The run's event labels, or None when the model reads none (``model.use_events`` off, or
    the data tells fewer than two labels apart). ``labels``: a model version's own labels
    (``versions.event_labels``: a fine-tune appended "dismiss" to its parent's, or gave a model
    that read none ``["", "dismiss"]``), against which the data's events are coded (a label the
    version does not know: 0)."""
    if labels is None and not config.model.use_events:
        return None
    with_value = TASKS[config.train.task].reads_values
    types = data.event_types
    per_event = [
        event_label(types[c], v, with_value) for c, v in zip(data.events.tolist(), data.values.tolist(), strict=True)
    ]
    if labels is None:
        labels = ["", *sorted(set(per_event) - {""})]
        if len(labels) < 3:
            return None
    lookup = {label: i for i, label in enumerate(labels)}
    return EventInputs(list(labels), np.array([lookup.get(p, 0) for p in per_event], dtype=np.int64), with_value)


# ---------------------------------------------------------------------- labelled cases
@dataclass
class Labelled:
    """Items to predict a label for: ``items[r]`` after the first ``hist_len[r]`` events of ``users[r]``."""

    users: np.ndarray
    hist_len: np.ndarray
    items: np.ndarray
    labels: np.ndarray  # float64: a rating, or 1.0 / 0.0 for a click

    def __len__(self) -> int:
        return len(self.users)


def rating_cases(data: Dataset, cases: EvalCases) -> Labelled:
    """The split's valid or test targets that have a rating."""
    ratings = data.values[data.offsets[cases.users] + cases.hist_len]
    keep = np.isfinite(ratings)
    return Labelled(cases.users[keep], cases.hist_len[keep], cases.targets[keep], ratings[keep])


def click_cases(data: Dataset, split: Split, part: str) -> Labelled:
    """The impressions of ``part``: "train" (shown while the user's history was all training
    events), "valid" or "test" (shown at the moment of the user's valid / test case)."""
    imp: Impressions = data.impressions
    if part == "train":
        mask = imp.hist_len < split.train_len[imp.users]
    else:
        cases = getattr(split, part)
        at = np.full(data.n_users, -1, dtype=np.int64)
        at[cases.users] = cases.hist_len
        mask = imp.hist_len == at[imp.users]
    rows = imp.rows(mask & (imp.hist_len >= 1))  # a history to read
    return Labelled(rows.users, rows.hist_len, rows.items, rows.clicked)


def training_ratings(data: Dataset, train_len: np.ndarray) -> Labelled:
    """Every training event with a rating (the bias baseline fits these)."""
    users = np.repeat(np.arange(data.n_users), train_len)
    position = np.arange(len(users)) - np.repeat(np.cumsum(train_len) - train_len, train_len)
    index = data.offsets[users] + position
    keep = np.isfinite(data.values[index])
    return Labelled(users[keep], position[keep], data.items[index][keep], data.values[index][keep])


# ---------------------------------------------------------------------- baselines
class BiasBaseline:
    """rating = global mean + user bias + item bias, the biases regularised by ``reg`` (fitted by
    alternating least squares on the training ratings; an unseen user or item has bias 0)."""

    name = "user/item bias"

    def __init__(self, data: Dataset, train: Labelled, reg: float, sweeps: int = 15):
        self.reg = reg
        self.mean = float(train.labels.mean())
        self.user_bias = np.zeros(data.n_users)
        self.item_bias = np.zeros(data.n_items + 1)
        user_n = np.bincount(train.users, minlength=data.n_users)
        item_n = np.bincount(train.items, minlength=data.n_items + 1)
        for _ in range(sweeps):
            rest = train.labels - self.mean - self.user_bias[train.users]
            self.item_bias = np.bincount(train.items, rest, minlength=data.n_items + 1) / np.maximum(item_n + reg, 1e-9)
            rest = train.labels - self.mean - self.item_bias[train.items]
            self.user_bias = np.bincount(train.users, rest, minlength=data.n_users) / np.maximum(user_n + reg, 1e-9)

    def __call__(self, cases: Labelled) -> np.ndarray:
        return self.mean + self.user_bias[cases.users] + self.item_bias[cases.items]


class PopularityCTR:
    """click probability = the item's training clicks over its impressions, smoothed toward the
    overall click rate by ``prior`` impressions' worth."""

    name = "popularity-CTR"

    def __init__(self, data: Dataset, train: Labelled, prior: float):
        self.prior = prior
        rate = float(train.labels.mean())
        shown = np.bincount(train.items, minlength=data.n_items + 1)
        clicks = np.bincount(train.items, train.labels, minlength=data.n_items + 1)
        self.ctr = (clicks + prior * rate) / (shown + prior)

    def __call__(self, cases: Labelled) -> np.ndarray:
        return self.ctr[cases.items]


REGULARISATION = (1.0, 3.0, 10.0, 25.0)  # the bias baseline's choices (picked on valid)
PRIORS = (1.0, 10.0, 100.0)  # popularity-CTR's smoothing choices (picked on valid)


# ---------------------------------------------------------------------- the tasks
class Task:
    """What a run learns to predict, and all that follows from it. Stateless: one instance per
    task in :data:`TASKS`."""

    name: ClassVar[str]
    select_on: ClassVar[str]  # the valid metric model selection follows
    higher_is_better: ClassVar[bool] = True
    ranks_catalog: ClassVar[bool] = False  # its scores rank the catalog: ranking metrics and their baselines
    reads_values: ClassVar[bool] = False  # it predicts the events' values; its event labels carry them
    learns_from_impressions: ClassVar[bool] = False

    def check(self, data: Dataset, spec: str = "the data") -> None:
        """A RunError when ``data`` lacks what the task learns from."""

    def improves(self, value: float, best: float | None) -> bool:
        """Whether a valid ``value`` of :attr:`select_on` beats the ``best`` so far (None: the first)."""
        return best is None or (value > best if self.higher_is_better else value < best)

    def head_bias(self, data: Dataset, split: Split) -> float | None:
        """The starting bias of the task's head (None: the task has no head)."""
        return None

    def training_tensors(self, data: Dataset, split: Split, max_len: int, codes: np.ndarray | None) -> dict:
        """The fields of the epoch's :class:`~recscope.train.TrainingData` but ``task``."""
        raise NotImplementedError

    def count_targets(self, training: TrainingData) -> float:
        """How many predictions an epoch over ``training`` makes."""
        raise NotImplementedError

    def describe_training(self, training: TrainingData) -> str:
        return f"{len(training.windows):,} training windows"

    def loss(
        self,
        model: SeqRec,
        training: TrainingData,
        index: Tensor,
        batch: Tensor,
        events: Tensor | None,
        negatives,
        unseen: Tensor | None,
        id_dropped: Tensor | None,
    ) -> Tensor:
        """The summed loss of ``batch``, ``training``'s windows at ``index`` cut to their longest
        history (``events``: their event labels, cut alike; the rest: see SeqRec.loss)."""
        raise NotImplementedError

    def validate(self, model: SeqRec, data: Dataset, split: Split, config: Config, inputs: EventInputs | None) -> dict:
        """The task's metrics on the valid split (model selection reads them)."""
        raise NotImplementedError

    def shown(self, metrics: dict) -> tuple[str, ...]:
        """The valid metrics an epoch's line shows."""
        raise NotImplementedError


def _windows(data: Dataset, split: Split, max_len: int, codes: np.ndarray | None) -> dict:
    """Every training sequence's windows (W, max_len + 1), with their event labels."""
    windows = torch.from_numpy(training_windows(data, split.train, max_len))
    events = None if codes is None else torch.from_numpy(training_windows(data, split.train, max_len, codes))
    return {"windows": windows, "events": events}


def _window_targets(training: TrainingData) -> float:
    """The positions of the windows whose next item is to be predicted (and has a rating, if rated)."""
    w = training.windows
    mask = (w[:, :-1] > 0) & (w[:, 1:] > 0)
    if training.ratings is not None:
        mask &= torch.isfinite(training.ratings[:, 1:])
    return float(mask.sum())


class NextItem(Task):
    """Rank the catalog for the user's next item: full softmax (or sampled) over the item table."""

    name = "next_item"
    select_on = "NDCG@10"
    ranks_catalog = True

    def training_tensors(self, data, split, max_len, codes) -> dict:
        return _windows(data, split, max_len, codes)

    def count_targets(self, training) -> float:
        return _window_targets(training)

    def loss(self, model, training, index, batch, events, negatives, unseen, id_dropped) -> Tensor:
        inputs = None if events is None else events[..., :-1]
        return model.loss(batch[..., :-1], batch[..., 1:], negatives, "sum", unseen, id_dropped, inputs)

    def validate(self, model, data, split, config, inputs) -> dict:
        return evaluate(
            model_scorer(model),
            data,
            split.valid,
            config.model.max_len,
            config.eval.ks,
            exclude_history=config.eval.exclude_history,
            batch_size=config.eval.batch_size,
            chunk_size=config.eval.chunk_size,
            events=None if inputs is None else inputs.codes,
        )

    def shown(self, metrics) -> tuple[str, ...]:
        return ("HR@10", "NDCG@10")


class LabelledTask(Task):
    """A head predicting a label for (history, item) pairs, measured on the split's labelled cases
    against the task's baseline."""

    def cases(self, data: Dataset, split: Split, part: str) -> Labelled:
        """The labelled cases of ``part`` ("train", "valid" or "test")."""
        raise NotImplementedError

    def metrics(self, labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def baseline(self, data: Dataset, split: Split):
        """The task's baseline, its one setting chosen on valid (never on test)."""
        raise NotImplementedError

    def prediction(self, values: Tensor) -> Tensor:
        """What the head's output (B,) predicts: the label itself, or its probability."""
        return values

    @torch.no_grad()
    def predict(
        self, model, data: Dataset, cases: Labelled, inputs: EventInputs | None, batch_size: int = 1024
    ) -> np.ndarray:
        """The model's prediction for every case."""
        model.eval()
        table = model.item_table()
        out = np.empty(len(cases))
        for start in range(0, len(cases), batch_size):
            sl = slice(start, start + batch_size)
            users, hist_len = cases.users[sl], cases.hist_len[sl]
            width = min(model.cfg.max_len, max(int(hist_len.max()), 1))
            histories = torch.from_numpy(pad_left(data, users, hist_len, width))
            events = None if inputs is None else torch.from_numpy(pad_left(data, users, hist_len, width, inputs.codes))
            hidden = model.last_hidden(histories, table, events=events)
            values = model.predict_paired(hidden, table[torch.from_numpy(cases.items[sl])])
            out[sl] = self.prediction(values).double().numpy()
        return out

    def evaluate(
        self, model, data: Dataset, split: Split, part: str, inputs: EventInputs | None, baselines: bool = True
    ) -> dict[str, dict[str, float]]:
        """{"recscope": metrics, "<baseline>": metrics} on ``part``."""
        cases = self.cases(data, split, part)
        if len(cases) == 0:
            raise RunError(f"the {part} split holds no {self.name} cases", fix="use data with more events per user")
        results = {"recscope": self.metrics(cases.labels, self.predict(model, data, cases, inputs))}
        if baselines:
            base = self.baseline(data, split)
            results[base.name] = self.metrics(cases.labels, base(cases))
        return results

    def validate(self, model, data, split, config, inputs) -> dict:
        return self.evaluate(model, data, split, "valid", inputs, baselines=False)["recscope"]

    def shown(self, metrics) -> tuple[str, ...]:
        return tuple(k for k in metrics if k != "cases")


class Rating(LabelledTask):
    """The next item's rating, from the data's values: squared error on the training windows."""

    name = "rating"
    select_on = "RMSE"
    higher_is_better = False
    reads_values = True

    def check(self, data, spec="the data") -> None:
        if not data.has_values:
            raise RunError(
                f"train.task=rating predicts each event's value, and {spec} has none",
                fix="give the interactions a numeric value column (ratings), e.g. --data movielens:DIR",
            )

    def head_bias(self, data, split) -> float:
        """The mean training rating."""
        return float(training_ratings(data, split.train_len).labels.mean())

    def training_tensors(self, data, split, max_len, codes) -> dict:
        tensors = _windows(data, split, max_len, codes)
        values = training_windows(data, split.train, max_len, data.values)
        tensors["ratings"] = torch.from_numpy(np.where(tensors["windows"].numpy() > 0, values, np.nan))
        return tensors

    def count_targets(self, training) -> float:
        return _window_targets(training)

    def loss(self, model, training, index, batch, events, negatives, unseen, id_dropped) -> Tensor:
        inputs = None if events is None else events[..., :-1]
        ratings = training.ratings[index][:, -batch.shape[-1] :]
        return model.rating_loss(batch[:, :-1], batch[:, 1:], ratings[:, 1:], inputs, reduction="sum")

    def cases(self, data, split, part) -> Labelled:
        return rating_cases(data, getattr(split, part))

    def metrics(self, labels, predicted) -> dict[str, float]:
        return {"RMSE": rmse(labels, predicted), "MAE": mae(labels, predicted), "cases": len(labels)}

    def baseline(self, data, split) -> BiasBaseline:
        valid = self.cases(data, split, "valid")
        train = training_ratings(data, split.train_len)
        candidates = [BiasBaseline(data, train, reg) for reg in REGULARISATION]
        return min(candidates, key=lambda b: rmse(valid.labels, b(valid)))


class Click(LabelledTask):
    """Whether a shown item is clicked, from the data's impressions: binary cross-entropy."""

    name = "click"
    select_on = "AUC"
    learns_from_impressions = True

    def check(self, data, spec="the data") -> None:
        if data.impressions is None or len(data.impressions) == 0:
            raise RunError(
                f"train.task=click learns from impressions (items shown, clicked or not), and {spec} has none",
                fix="use data with impressions, e.g. --data synthetic:impressions=5",
            )

    def head_bias(self, data, split) -> float:
        """The training click log-odds."""
        rate = float(np.clip(click_cases(data, split, "train").labels.mean(), 1e-4, 1 - 1e-4))
        return math.log(rate / (1 - rate))

    def training_tensors(self, data, split, max_len, codes) -> dict:
        """(W, max_len) the history each training impression was shown after, ``shown`` (W,) the
        item and ``clicked`` (W,) 1.0 / 0.0."""
        cases = click_cases(data, split, "train")
        windows = pad_left(data, cases.users, cases.hist_len, max_len)
        events = None if codes is None else pad_left(data, cases.users, cases.hist_len, max_len, codes)
        return {
            "windows": torch.from_numpy(windows),
            "events": None if events is None else torch.from_numpy(events),
            "shown": torch.from_numpy(cases.items),
            "clicked": torch.from_numpy(cases.labels),
        }

    def count_targets(self, training) -> float:
        return float(len(training.windows))

    def describe_training(self, training) -> str:
        return f"{len(training.windows):,} training impressions ({int(training.clicked.sum()):,} clicked)"

    def loss(self, model, training, index, batch, events, negatives, unseen, id_dropped) -> Tensor:
        return model.click_loss(batch, training.shown[index], training.clicked[index], events, reduction="sum")

    def prediction(self, values: Tensor) -> Tensor:
        return torch.sigmoid(values)

    def cases(self, data, split, part) -> Labelled:
        return click_cases(data, split, part)

    def metrics(self, labels, predicted) -> dict[str, float]:
        return {"AUC": auc(labels, predicted), "logloss": log_loss(labels, predicted), "cases": len(labels)}

    def baseline(self, data, split) -> PopularityCTR:
        valid = self.cases(data, split, "valid")
        train = click_cases(data, split, "train")
        candidates = [PopularityCTR(data, train, prior) for prior in PRIORS]
        return max(candidates, key=lambda b: auc(valid.labels, b(valid)))


# Every name config accepts for train.task (config.TASK_NAMES), in its order.
TASKS: dict[str, Task] = {task.name: task for task in (NextItem(), Rating(), Click())}
