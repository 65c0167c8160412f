"""Explanations that never contradict themselves, on a small trained shop and on constructed cases:
sentences agree with the bars beside them, counterfactuals say why an item left, every item
says what it is, JSON is standard, and bad input is named."""

import json
import re
from pathlib import Path

import pytest
import torch

from recscope.config import load
from recscope.data import load_dataset
from recscope.errors import DataError, RunError
from recscope.explain.api import METHODS, make_explainer
from recscope.explain.base import (
    NOT_FOUND,
    OTHERS_ROSE,
    OUTSIDE_TOP_K,
    OWN_SCORE_FELL,
    OWNED,
    RECOMMENDED,
    Counterfactual,
    Explanation,
    HistoryWeight,
)
from recscope.explain.counterfactual import smallest_removal
from recscope.explain.fields import field_game
from recscope.explain.text import sentence
from recscope.insights import global_view
from recscope.model import SeqRecOutput
from recscope.recommend import Recommender
from recscope.train import fit

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Recommender:
    """A 150-user shop trained for 4 tiny epochs: enough for sentences that cite and claim."""
    config = load(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", ["train.epochs=4"])
    data = load_dataset("synthetic:users=150,items=120,seed=3", config.data)
    run = tmp_path_factory.mktemp("shop")
    fit(data, config, run, data_spec="synthetic")
    return Recommender.load(run)


def claims(text: str) -> dict[str, list[str]]:
    """ "(same brand: Velo; same category: Home, Bikes)" -> {"brand": ["Velo"], "category": [...]}"""
    return {f: v.split(", ") for f, v in re.findall(r"same (\w+): ([^;)]+)", text)}


@pytest.mark.parametrize("method", list(METHODS))
def test_a_sentence_claims_only_attributes_its_own_bars_show_pushing_up(rec, method):
    claimed = 0
    for user in rec.data.user_ids[:25]:
        for e in rec.explain(user, top=10, method=method):
            assert e.attributes_method == ("shapley" if method in ("attention", "rollout") else method)
            for field in claims(e.sentence):
                claimed += 1
                assert e.attributes_history[field] > 0, (field, e.sentence, e.attributes_history)
                own = next(w for key, w in e.attributes_candidate.items() if key.split("=")[0] == field)
                assert own > 0, (field, e.sentence, e.attributes_candidate)
    if METHODS[method].target_dependent:
        assert claimed, "no sentence claimed a shared attribute: the test checked nothing"


@pytest.mark.parametrize("method", [m for m in METHODS if m != "grad_input"])
def test_field_attributions_are_complete_against_all_fields_removed(rec, method):
    """Shapley (and integrated gradients, attention/rollout through Shapley) add up to
    score(history) - score(every field's part removed); occlusion is leave-one-field-out."""
    explainer = make_explainer(rec.model, method)
    read = rec.tensor(rec.history(rec.data.user_ids[0]))[0]
    targets = torch.tensor([5, 17, 40])
    game = field_game(rec.model, explainer.table, read)
    assert game.fields == ["id", *rec.model.field_names, *(["text"] if rec.model.cfg.text_dim else [])]
    torch.testing.assert_close(game.tokens(torch.ones(1, game.n_players))[0], rec.model.item_tokens(read))
    weights = explainer.attribute_fields(game, targets)  # (K, F)
    with torch.no_grad():
        full, empty = game.scores(torch.tensor([[True] * game.n_players, [False] * game.n_players]), targets)
        if method == "occlusion":
            for f in range(game.n_players):
                keep = torch.ones(1, game.n_players, dtype=torch.bool)
                keep[0, f] = False
                torch.testing.assert_close(weights[:, f], full - game.scores(keep, targets)[0])
            return
    tolerance = 0.02 if method == "integrated_gradients" else 1e-4
    torch.testing.assert_close(weights.sum(1), full - empty, atol=tolerance, rtol=tolerance)


# ---------------------------------------------------------------- counterfactuals, constructed
class BagModel(torch.nn.Module):
    """hidden = the sum of the history items' 2-d vectors: every score is known by hand."""

    def __init__(self, vectors):
        super().__init__()
        self.vectors = torch.tensor(vectors, dtype=torch.float32)

    def forward(self, items, tokens=None, output_attentions=False):
        return SeqRecOutput(self.vectors[items].sum(1)[:, None, :].expand(-1, items.shape[1], -1))

    def last_hidden(self, items, table=None, events=None):
        return self(items).hidden[:, -1]

    def predict_many(self, hidden, candidates):
        return hidden @ candidates.T


# items 1, 2 are the history; 3 is the recommended item (1, 0), 4 its rival (0, 1)
TABLE = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
HISTORY = torch.tensor([1, 2])


def test_an_item_pushed_out_by_rivals_is_not_called_carried():
    # item 1 barely lifts the item (0.1) but holds its rival down (-10); item 2 carries it (2.0)
    model = BagModel([[0, 0], [0.1, -10.0], [2.0, 5.0], [0, 0], [0, 0]])
    found = smallest_removal(model, TABLE, HISTORY, HISTORY, 3, torch.tensor([9.0, 1.0]), k=1)
    assert found.positions == [0] and found.new_rank == 2 and found.entered == 4
    assert found.kind == OTHERS_ROSE
    assert (found.score_before, found.score_after, found.cutoff) == pytest.approx((2.1, 2.0, -5.0))
    cf = Counterfactual([HistoryWeight(0, "i1", "Coffee maker", 9.0)], 2, 1, "i4", True, found.kind)
    text = sentence(_explanation([9.0, 1.0], cf), margin=found.score_before - found.cutoff)
    assert "Without" not in text and "drop out" not in text


def test_a_removal_that_carried_the_item_is_preferred_to_a_shorter_one_where_rivals_rose():
    # history 1, 2, 3; item 4 = (1, 0) is recommended, 5 = (0, 1) its rival, 6 = (0, 0) scores 0.
    # Removing 1 frees the rival (others rose); removing 1 and 2 also takes the item's own score
    # below the cut-off (0, item 6's score): that removal is the reason, and the one reported.
    model = BagModel([[0, 0], [0.1, -10.0], [3.0, 0.0], [-0.5, 5.5], [0, 0], [0, 0], [0, 0]])
    table = torch.tensor([[0.0, 0.0]] * 4 + [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    history = torch.tensor([1, 2, 3])
    found = smallest_removal(model, table, history, history, 4, torch.tensor([9.0, 5.0, 1.0]), k=1)
    assert found.positions == [0, 1] and found.kind == OWN_SCORE_FELL
    assert (found.score_before, found.score_after, found.cutoff) == pytest.approx((2.6, -0.5, 0.0))


def test_an_item_whose_own_score_falls_is_carried_and_quoted():
    model = BagModel([[0, 0], [0.1, 1.0], [2.0, 0.0], [0, 0], [0, 0]])
    found = smallest_removal(model, TABLE, HISTORY, HISTORY, 3, torch.tensor([1.0, 9.0]), k=1)
    assert found.positions == [1] and found.kind == OWN_SCORE_FELL
    assert (found.score_before, found.score_after, found.cutoff) == pytest.approx((2.1, 0.1, 1.0))
    cf = Counterfactual([HistoryWeight(1, "i2", "Bike", 9.0)], 2, 1, "i4", True, found.kind)
    assert sentence(_explanation([1.0, 9.0], cf)).endswith("Without “Bike”, it would drop out of your top 1.")
    none = smallest_removal(model, TABLE, HISTORY, HISTORY, 3, torch.tensor([-1.0, -1.0]), k=1)
    assert none.positions is None and none.kind == NOT_FOUND


def test_a_sentence_never_names_items_whose_removal_barely_moves_the_score():
    # the weights single out item 1, but removing it (with its partner) lowers the score by 0.05
    # against a lead of 4 over the cut-off: it is not a reason
    e = _explanation([1.0, 6.0])
    e.cited_drop = 0.05
    assert "no single past item stands out" in sentence(e, margin=4.0)
    e.cited_drop = 1.5
    assert sentence(e, margin=4.0).startswith("Because you bought “Item 1”")


def _explanation(weights, counterfactual=None):
    history = [HistoryWeight(t, f"i{t}", f"Item {t}", w) for t, w in enumerate(weights)]
    return Explanation(None, "c", "Cand", 5.0, 1, "shapley", True, history, counterfactual=counterfactual)


def test_counterfactuals_of_a_run_say_their_kind_and_own_scores(rec):
    kinds = set()
    for user in rec.data.user_ids[:15]:
        for e in rec.explain(user, top=10):
            cf = e.counterfactual
            kinds.add(cf.kind)
            assert cf.score_before == pytest.approx(e.score, abs=1e-4)
            if cf.found:
                assert cf.new_rank > cf.k
                assert (cf.kind == OWN_SCORE_FELL) == (cf.score_after < cf.cutoff)
                if "Without" in e.sentence:
                    assert cf.kind == OWN_SCORE_FELL
            else:
                assert cf.kind == NOT_FOUND
    assert OWN_SCORE_FELL in kinds


# ---------------------------------------------------------------- what an item is; standard JSON
def test_items_outside_the_top_k_or_owned_say_what_they_are(rec):
    user = rec.data.user_ids[0]
    history = rec.history(user)
    scores = rec.scores(history)
    far = rec.data.item_ids[int(torch.argsort(scores, descending=True)[30])]
    outside = rec.explain(user, item=far, k=10)[0]
    assert (outside.status, outside.rank, outside.k) == (OUTSIDE_TOP_K, 31, 10)
    assert outside.candidates == int(torch.isfinite(scores).sum())
    assert outside.sentence.startswith(f"Ranked 31 of {outside.candidates:,}, outside your top 10")
    assert outside.counterfactual is None and "as a whole" not in outside.sentence
    owned = rec.explain(user, item=rec.data.item_ids[int(history[0])])[0]
    assert (owned.status, owned.score, owned.rank) == (OWNED, None, None)
    assert owned.sentence.startswith("Already in your history: not recommended")
    assert all(e.status == RECOMMENDED for e in rec.explain(user, top=10, k=10))
    for e in (outside, owned):
        text = e.to_json()
        assert "Infinity" not in text and "NaN" not in text
        back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
        json.dumps(back, allow_nan=False)
        assert back["status"] == e.status


def test_non_finite_numbers_become_null():
    e = _explanation([float("nan"), 1.0])
    e.score = float("-inf")
    back = json.loads(e.to_json())
    assert back["score"] is None and back["history"][0]["weight"] is None


# ---------------------------------------------------------------- input
def test_unknown_history_items_are_skipped_and_named(rec):
    known = rec.data.item_ids[1:4]
    result = rec.recommend(history=[known[0], "NOPE-1", known[1], "NOPE-2"], k=5)
    assert result.unknown == ["NOPE-1", "NOPE-2"] and len(result) == 5
    assert [r.item_id for r in result] == [r.item_id for r in rec.recommend(history=known[:2], k=5)]
    assert rec.recommend(history=known, k=3).unknown == []
    assert rec.explain(history=[known[0], "NOPE-1"], top=2).unknown == ["NOPE-1"]
    with pytest.raises(DataError, match="NOPE-1"):
        rec.recommend(history=[known[0], "NOPE-1"], unknown="error")
    with pytest.raises(RunError, match="none of the 2 history items"):
        rec.recommend(history=["NOPE-1", "NOPE-2"])
    with pytest.raises(RunError, match="policy"):
        rec.recommend(history=known, unknown="ignore")


def test_what_if_names_an_item_the_history_does_not_hold(rec):
    user = rec.data.user_ids[0]
    held = [rec.data.item_ids[int(i)] for i in rec.history(user)]
    stranger = next(i for i in rec.data.item_ids[1:] if i not in held)
    with pytest.raises(RunError, match=f"cannot remove '{stranger}': not in the history"):
        rec.what_if(user, remove=[held[0], stranger])
    result = rec.what_if(user, remove=[held[-1]], k=5)
    assert len(result["after"]) == 5 and result["unknown"] == []


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_k_and_top_must_be_at_least_one(rec, bad):
    user = rec.data.user_ids[0]
    for call in (
        lambda: rec.recommend(user, k=bad),
        lambda: rec.explain(user, top=bad),
        lambda: rec.explain(user, k=bad),
        lambda: rec.what_if(user, k=bad),
    ):
        with pytest.raises(RunError, match="at least 1"):
            call()


# ---------------------------------------------------------------- merchant view
def test_merchant_counts_never_exceed_the_recommendations(rec):
    view = global_view(rec, rec.data.user_ids[:40], k=10)
    n_recs = 40 * 10
    assert view["coverage"]["recommended_items"] <= n_recs
    assert max(d["count"] for d in view["drivers"]) <= n_recs
    assert next(d for d in view["drivers"] if d["label"] == "id")["count"] == n_recs


def test_excluded_items_are_never_recommended(rec):
    user = rec.data.user_ids[0]
    top = [r.item_id for r in rec.recommend(user, k=5)]
    without = [r.item_id for r in rec.recommend(user, k=4, exclude=[top[0], "no-such-item"])]
    assert without == top[1:]


# ---------------------------------------------------------------- exact ties: one list, one rank
def _fields_of(rec: Recommender, item: int) -> dict:
    """Attributes that give a new item ``item``'s attribute values (a price inside its band)."""
    attributes = {}
    for f in rec.data.fields:
        labels = f.labels(item)
        if f.kind == "numeric":
            low, high = (float(x) for x in labels[0].split("(")[1].rstrip(")").split("-"))
            attributes[f.name] = (low + high) / 2
        else:
            attributes[f.name] = labels if f.kind == "multi" else labels[0]
    return attributes


def test_with_exact_ties_an_explained_rank_is_the_items_place_in_the_list(rec):
    """Items added with the same fields and title have the same token, so they often score exactly
    alike: the list's order and every explained rank come from one tie draw, so they agree (they
    drew their ties apart before)."""
    user = rec.data.user_ids[0]
    best = rec.data.item_index(rec.recommend(user, k=1)[0].item_id)
    tied = [f"TIE/{i}" for i in range(8)]
    live = rec.with_snapshot(rec.snapshot)  # the module's recommender keeps its catalog
    for i in tied:  # one at a time: each token computed alone, the same to the bit
        live.set_item(i, "One title for all", _fields_of(rec, best))
    scores = live.scores(live.history(user))[[live.data.item_index(i) for i in tied]]
    assert torch.isfinite(scores).all() and len(set(scores.tolist())) < len(tied), "some added items tie exactly"
    listed = [r.item_id for r in live.recommend(user, k=live.data.n_items)]
    for i in tied:
        assert live.explain(user, item=i, method="occlusion", counterfactual=False)[0].rank == listed.index(i) + 1
    last = max(listed.index(i) + 1 for i in tied)
    whole = live.explain(user, top=last, k=last, method="occlusion", counterfactual=False)
    assert [e.item_id for e in whole] == listed[:last]
    assert [e.rank for e in whole] == list(range(1, last + 1))
