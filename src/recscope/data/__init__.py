"""Data in: every source becomes one :class:`Dataset`; splits and batches come from it."""

from recscope.data.dataset import Dataset, ItemField, LoadReport
from recscope.data.formats import column_map, load_dataset
from recscope.data.split import EvalCases, Split, make_split, pad_left, split_of, training_windows

__all__ = [
    "Dataset",
    "EvalCases",
    "ItemField",
    "LoadReport",
    "Split",
    "column_map",
    "load_dataset",
    "make_split",
    "pad_left",
    "split_of",
    "training_windows",
]
