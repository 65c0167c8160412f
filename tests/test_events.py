"""Event types and values: kept by the loaders, saved with the run, read by the model, reported."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.numpy import load_file, save_file
from tests.conftest import _train

from recscope.data import load_dataset
from recscope.data.dataset import Dataset
from recscope.data.synthetic import ShopConfig, generate
from recscope.errors import DataError
from recscope.explain.occlusion import OcclusionExplainer, without
from recscope.recommend import Recommender

ROWS = "user_id,item_id,timestamp,event,value\nu,a,1,view,\nu,b,2,purchase,4.5\nv,a,3,,2\nv,c,4,cart,\n"


def test_event_types_and_values_are_kept_and_reported(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(ROWS)
    data = load_dataset(f"csv:{path}")
    assert data.event_types == ["", "cart", "purchase", "view"]
    labels = [data.event_types[c] for c in data.events]
    assert labels == ["view", "purchase", "", "cart"]  # grouped by user, in time order; "" = none
    np.testing.assert_array_equal(data.values, [np.nan, 4.5, 2.0, np.nan])
    notes = " ".join(data.report.notes)
    assert "event types in column 'event': 'cart' 1, 'purchase' 1, 'view' 1; 1 row(s) name none" in notes
    assert "an input of the model" in notes
    assert "values in column 'value': 2 from 2 to 4.5; 2 row(s) have none" in notes
    data.save(tmp_path / "saved")
    again = Dataset.load(tmp_path / "saved")
    assert again.event_types == data.event_types
    np.testing.assert_array_equal(again.events, data.events)
    np.testing.assert_array_equal(again.values, data.values)


def test_a_run_saved_before_events_loads_with_none(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(ROWS)
    load_dataset(f"csv:{path}").save(tmp_path / "old")
    arrays = load_file(str(tmp_path / "old" / "data.safetensors"))
    kept = {k: v for k, v in arrays.items() if k not in ("events", "values")}
    save_file(kept, str(tmp_path / "old" / "data.safetensors"))
    meta = json.loads((tmp_path / "old" / "data.json").read_text())
    del meta["event_types"]
    (tmp_path / "old" / "data.json").write_text(json.dumps(meta))
    old = Dataset.load(tmp_path / "old")
    assert old.event_types == [""] and not old.events.any() and not old.has_values


def test_a_value_that_is_not_a_number_is_a_located_bad_row(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp,value\nu,a,1,5\nu,b,2,five\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{path}")
    assert "value is not a finite number (value 'five')" in str(e.value) and "line 3" in str(e.value)


def test_movielens_ratings_are_kept_as_values(shared_data):
    data = load_dataset(f"movielens:{shared_data / 'ml-100k'}")
    assert data.has_values and set(np.unique(data.values)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert any("values in column 'value': 100,000 from 1 to 5" in n for n in data.report.notes)


# ---------------------------------------------------------------------- the model reads them
@pytest.fixture(scope="module")
def event_run(tmp_path_factory) -> Path:
    """A tiny run from a csv whose events are views and purchases (every third one a view)."""
    root = tmp_path_factory.mktemp("events")
    events, catalog = generate(ShopConfig(users=120, items=80, seed=5))
    kinds = np.where(np.arange(events.height) % 3 == 0, "view", "purchase")
    events.select("user_id", "item_id", "timestamp").with_columns(event=pl.Series(kinds)).write_csv(root / "e.csv")
    catalog.write_csv(root / "catalog.csv")
    more = ("--set", "train.epochs=1", "--set", "model.use_text=false")
    return _train(root / "run", f"csv:{root / 'e.csv'}", "--catalog", str(root / "catalog.csv"), *more)


def test_a_csv_with_event_types_trains_with_the_embedding_and_says_so(event_run):
    info = json.loads((event_run / "run.json").read_text())
    assert info["config"]["model"]["n_events"] == 3  # none, purchase, view
    assert info["state"]["inputs"].startswith("task next_item; event labels read as inputs: 2 (purchase, view)")
    rec = Recommender.load(event_run)
    user = rec.data.user_ids[0]
    history = rec.histories.history(user)
    assert {e.event for e in history.items} == {"view", "purchase"}  # the run's history knows its kinds
    codes = rec.event_codes(history)
    assert codes.tolist() == [rec.inputs.code(e.event) for e in history.items] and codes.min() >= 1


def test_changing_an_input_event_changes_the_score(event_run):
    rec = Recommender.load(event_run)
    history = rec.resolve(user=rec.data.user_ids[0])
    codes = rec.event_codes(history)
    flipped = codes.copy()
    flipped[-1] = 3 - flipped[-1]  # view <-> purchase on the last event
    a = rec.scores(history.indices, events=codes)
    b = rec.scores(history.indices, events=flipped)
    visible = torch.isfinite(a)
    assert float((a[visible] - b[visible]).abs().max()) > 1e-4
    # and the recommendation itself reads the history's kinds: it matches the scores with them
    top = rec.recommend(user=history.user_id, k=1)[0]
    assert top.score == pytest.approx(float(a.max()), abs=1e-5)


def test_removing_a_history_item_removes_its_event_too(event_run):
    rec = Recommender.load(event_run)
    history = rec.resolve(user=rec.data.user_ids[1])
    read = rec.tensor(history.indices)[0]
    events = rec.tensor(rec.event_codes(history))[0]
    targets = torch.tensor([5, 9])
    explainer = OcclusionExplainer(rec.model)
    weights = explainer.attribute(read, targets, events)
    model, table = rec.model, explainer.table
    full = model.score(read[None], table, events[None])[0, targets]
    for t in (0, len(read) - 1):
        keep = torch.ones(len(read), dtype=torch.bool)
        keep[t] = False
        shorter = model.score(without(read, keep[None]), table, without(events, keep[None]))[0, targets]
        torch.testing.assert_close(weights[:, t], full - shorter, rtol=1e-4, atol=1e-4)


def test_one_event_type_is_kept_but_not_read(tmp_path):
    path = tmp_path / "e.csv"
    rows = "".join(f"u{u},i{(u + j) % 7},{j},purchase\n" for u in range(12) for j in range(5))
    path.write_text("user_id,item_id,timestamp,event\n" + rows)
    out = _train(tmp_path / "run", f"csv:{path}", "--set", "train.epochs=1", "--set", "model.use_text=false")
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["model"]["n_events"] == 0
    assert "event type 'purchase' not used: a single type tells the model nothing" in info["state"]["inputs"]
