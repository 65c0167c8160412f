"""The merchant view weighs attribute values with the run's measured default method (or the one
asked for) and says which; the faithfulness measurements read as sentences with the numbers beside."""

from __future__ import annotations

import shutil

import pytest
import torch

from recscope.errors import RunError
from recscope.insights import global_view, value_game
from recscope.recommend import Recommender
from recscope.run import record_explain_eval
from recscope.viz.plain import in_ten, method_trust, trust


def measured(default: str) -> dict:
    """An explain-eval result in the shape the run records (recscope.explain.faithfulness)."""
    method = {
        "topk_exit_rate": 0.9,
        "topk_exit_rate_random": 0.12,
        "comprehensiveness": 0.8,
        "comprehensiveness_random": 0.08,
        "sufficiency": -0.2,
        "sufficiency_random": 0.45,
        "kendall_tau_loo": 0.4,
        "ms_per_explanation": 1.25,
        "target_dependent": True,
        "planted_hit@1": 0.97,
        "planted_hit@3": 1.0,
        "planted_cases": 31,
    }
    return {
        "default": default,
        "users": 40,
        "k": 10,
        "data": "synthetic",
        "methods": {"occlusion": method, "shapley": dict(method, topk_exit_rate=0.47)},
    }


@pytest.fixture(scope="module")
def rec(tiny_run, tmp_path_factory) -> Recommender:
    """The tiny run with explain-eval's choice recorded as occlusion (not the fallback, shapley)."""
    run = tmp_path_factory.mktemp("merchant") / "run"
    shutil.copytree(tiny_run, run)
    record_explain_eval(run, measured("occlusion"), "explain-eval")
    return Recommender.load(run)


def test_the_view_uses_the_method_the_run_recorded_and_says_so(rec):
    users = rec.data.user_ids[:6]
    view = global_view(rec, users, k=5)
    assert rec.default_method() == "occlusion"
    assert (view["method"], view["fields_method"], view["default_method"]) == ("occlusion", "occlusion", "occlusion")
    # occlusion by hand for one user and the #1 item: a value's history weight is the score the item
    # loses when that value's part leaves every history token holding it (the candidate side is exact)
    user = users[0]
    one = global_view(rec, [user], k=1)
    read = rec.tensor(rec.history(user))[0]
    top = rec.recommend(user, k=1)[0]
    target = torch.tensor([rec.data.item_index(top.item_id)])
    table = rec.model.item_table()
    parts = rec.model.field_embeddings(read)  # name -> (T, C)
    brand = next(f for f in rec.data.fields if f.name == "brand")
    value = brand.labels(int(read[-1]))[0]
    holds = torch.tensor([value in brand.labels(int(i)) for i in read.tolist()])

    def score(tokens):
        with torch.no_grad():
            hidden = rec.model(read[None], tokens=tokens[None], last_only=True).hidden[:, -1]
            return float(rec.model.predict_many(hidden, table[target])[0, 0])

    whole = sum(parts.values())
    without = whole - parts["brand"] * holds[:, None]  # single-valued: the whole brand part
    candidate = rec.model.field_embeddings(target)["brand"][0] if brand.labels(int(target)) == [value] else None
    with torch.no_grad():
        hidden = rec.model(read[None], last_only=True).hidden[0, -1]
    expected = score(whole) - score(without) + (float(hidden @ candidate) if candidate is not None else 0.0)
    driver = next(d for d in one["drivers"] if d["label"] == f"brand={value}")
    assert driver["weight"] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_shapley_weights_add_up_to_what_the_history_and_the_item_give(rec):
    """Efficiency, worked by hand: per recommendation the history's values share score(history) -
    score(empty tokens) and the item's own parts its score, so the drivers' weights sum to their mean."""
    users = rec.data.user_ids[10:13]
    view = global_view(rec, users, k=4, method="shapley")
    assert view["method"] == view["fields_method"] == "shapley" and view["default_method"] == "occlusion"
    table = rec.model.item_table()
    total = []
    for user in users:
        read = rec.tensor(rec.history(user))[0]
        targets = torch.tensor([rec.data.item_index(r.item_id) for r in rec.recommend(user, k=4)])
        with torch.no_grad():
            full = rec.model(read[None], last_only=True).hidden[:, -1]
            nothing = torch.zeros(1, len(read), table.shape[1])  # every part of every token removed
            empty = rec.model(read[None], tokens=nothing, last_only=True).hidden[:, -1]
            s, s0 = rec.model.predict_many(full, table[targets])[0], rec.model.predict_many(empty, table[targets])[0]
        total += (2 * s - s0).tolist()
    assert sum(d["weight"] for d in view["drivers"]) == pytest.approx(sum(total) / len(total), rel=1e-3)
    assert sum(d["share"] for d in view["drivers"]) == pytest.approx(1.0)
    top = view["drivers"][0]
    assert top["share"] == pytest.approx(abs(top["weight"]) / sum(abs(d["weight"]) for d in view["drivers"]))


def test_a_chosen_method_is_used_and_named(rec):
    users = rec.data.user_ids[:4]
    attention = global_view(rec, users, k=3, method="attention")
    # attention has no notion of fields: its values are Shapley values, and the view says so
    assert (attention["method"], attention["fields_method"]) == ("attention", "shapley")
    assert attention["drivers"] == global_view(rec, users, k=3, method="shapley")["drivers"]
    grad = global_view(rec, users, k=3, method="grad_input")
    assert grad["method"] == "grad_input" and grad["drivers"] != attention["drivers"]
    with pytest.raises(RunError, match="shapley"):
        global_view(rec, users, method="nonsense")


def test_the_value_game_adds_up_to_the_history_the_model_reads(rec):
    read = rec.tensor(rec.history(rec.data.user_ids[3]))[0]
    game, labels = value_game(rec.model, rec.model.item_table(), rec.data, read)
    assert len(labels) == len(set(labels)) == game.n_players and {"id", "text"} <= set(labels)
    tokens = game.tokens(torch.ones(1, game.n_players))[0]
    assert torch.allclose(tokens, sum(rec.model.field_embeddings(read).values()), atol=1e-5)
    brands = {f"brand={b}" for i in read.tolist() for b in rec.data.fields[0].labels(i)}
    assert rec.data.fields[0].name == "brand" and brands <= set(labels)


@pytest.mark.parametrize(
    "share, words",
    [
        (0.9, "9 of 10"),
        (0.473, "about 5 of 10"),
        (0.119, "about 1 of 10"),
        (0.03, "fewer than 1 of 10"),
        (0.97, "more than 9 of 10"),
        (0.0, "none of 10"),
        (1.0, "10 of 10"),
        (0.5, "5 of 10"),
    ],
)
def test_shares_of_cases_in_words(share, words):
    assert in_ten(share) == words


def test_faithfulness_reads_as_sentences_with_the_numbers_beside():
    words = trust(measured("occlusion"))
    assert words["default"] == "occlusion" and words["measured_on"] == "the top 10 of 40 test shoppers"
    lead = words["methods"]["occlusion"]["lead"]
    assert lead == (
        "Take away the 3 past items occlusion weighs most and the recommended item drops out of the top 10 "
        "in 9 of 10 cases (3 random past items: about 1 of 10)."
    )
    assert "about 5 of 10" in words["methods"]["shapley"]["lead"]
    assert words["methods"]["occlusion"]["planted"] == (
        "On this synthetic shop, where the real reason for each purchase is known, it names that reason first "
        "for more than 9 of 10 purchases (31 measured)."
    )
    few = method_trust("shapley", {"planted_hit@1": 0.625, "planted_cases": 8}, 10)["planted"]
    assert few.endswith("it names that reason first for 5 of the 8 purchases measured.")
    numbers = dict(words["methods"]["occlusion"]["numbers"])
    assert numbers["top-10 exit without its top 3"] == "0.900 (random items 0.120)"
    assert numbers["comprehensiveness: mean score drop without its top 1..5"] == "0.800 (random 0.080)"
    assert numbers["milliseconds per explanation"] == "1.2"
    same = method_trust("attention", {"topk_exit_rate": 0.15, "target_dependent": False}, 10)
    assert same["planted"] is None and "cannot say why one item and not another" in same["lead"]
    assert trust(None) is None and trust({"methods": {}}) is None
