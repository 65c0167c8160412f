"""Explainers on a tiny model: shapes, sums, determinism, exactness, hooks, faithfulness on a toy."""

import dataclasses
import itertools

import pytest
import torch
from torch import nn

from recscope.config import ModelConfig
from recscope.explain.api import METHODS, make_explainer
from recscope.explain.counterfactual import smallest_removal
from recscope.explain.faithfulness import _aopc, _Case, _exit_rate, choose_default
from recscope.explain.fields import candidate_fields, field_game
from recscope.explain.gradients import IntegratedGradientsExplainer
from recscope.explain.occlusion import OcclusionExplainer, without
from recscope.explain.shapley import ShapleyExplainer
from recscope.model import SeqRec, SeqRecOutput

torch.set_num_threads(1)
N_ITEMS = 30


@pytest.fixture(scope="module")
def model() -> SeqRec:
    cfg = ModelConfig(
        max_len=10,
        d_model=16,
        n_layers=2,
        n_heads=2,
        dropout=0.0,
        attn_dropout=0.0,
        n_items=N_ITEMS,
        fields=(("brand", 4, 1), ("tags", 6, 2)),
    )
    torch.manual_seed(0)
    m = SeqRec(cfg)
    g = torch.Generator().manual_seed(2)
    m.set_item_fields(
        {
            "brand": torch.randint(1, 4, (N_ITEMS + 1, 1), generator=g),
            "tags": torch.randint(0, 6, (N_ITEMS + 1, 2), generator=g),
        }
    )
    with torch.no_grad():  # untrained weights are too small to give interesting scores
        for p in m.parameters():
            p.mul_(8.0) if p.dim() > 1 else None
    return m.eval()


HISTORY = torch.tensor([4, 9, 2, 17, 11, 5])
TARGETS = torch.tensor([3, 8, 20])


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_gives_one_weight_per_history_item_and_target(model, name):
    explainer = make_explainer(model, name)
    a = explainer.attribute(HISTORY, TARGETS)
    b = explainer.attribute(HISTORY, TARGETS)
    assert a.shape == (3, 6)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, msg="explanations must be deterministic")
    if not explainer.target_dependent:
        torch.testing.assert_close(a[0], a[1])
        torch.testing.assert_close(a.sum(1), torch.ones(3), msg="attention and rollout rows sum to 1")
    else:
        assert not torch.allclose(a[0], a[1]), "a target-dependent method must differ between targets"


def test_occlusion_equals_explicit_rescoring(model):
    weights = OcclusionExplainer(model).attribute(HISTORY, TARGETS)
    full = model.score(HISTORY[None, :])[0, TARGETS]
    for t in range(len(HISTORY)):
        shorter = torch.cat([HISTORY[:t], HISTORY[t + 1 :]])
        torch.testing.assert_close(
            weights[:, t], full - model.score(shorter[None, :])[0, TARGETS], rtol=1e-4, atol=1e-4
        )


def test_removal_moves_later_items_up_and_pads_left():
    history = torch.tensor([1, 2, 3, 4])
    masks = torch.tensor([[True, False, True, True], [False, False, True, False]])
    assert without(history, masks).tolist() == [[0, 1, 3, 4], [0, 0, 0, 3]]


def test_integrated_gradients_is_complete(model):
    explainer = IntegratedGradientsExplainer(model, n_steps=200)
    weights, delta = explainer.attribute(HISTORY, TARGETS, return_delta=True)
    histories = HISTORY[None, :].expand(3, -1)
    with torch.no_grad():
        tokens = model.item_tokens(histories)
        full = explainer.target_scores(histories, TARGETS, tokens)
        empty = explainer.target_scores(histories, TARGETS, torch.zeros_like(tokens))
    torch.testing.assert_close(weights.sum(1), full - empty, rtol=0.02, atol=0.02)
    assert delta.abs().max() < 0.02


@pytest.mark.parametrize("name", list(METHODS))
def test_field_attributions_add_up(model, name):
    explainer = make_explainer(model, name)
    game = field_game(model, explainer.table, HISTORY)
    assert game.fields == ["id", "brand", "tags"]
    weights = explainer.attribute_fields(game, TARGETS)
    assert weights.shape == (3, 3) and torch.isfinite(weights).all()
    # candidate side is exact: the fields add up to the score
    cand, names = candidate_fields(model, HISTORY, TARGETS)
    assert names == ["id", "brand", "tags"]
    torch.testing.assert_close(cand.sum(1), model.score(HISTORY[None, :])[0, TARGETS], rtol=1e-4, atol=1e-4)
    # one player per (position, field): the parts still add up to the tokens
    fine = field_game(model, explainer.table, HISTORY, by_position=True)
    assert fine.n_players == 18 and fine.positions[:4] == [0, 0, 0, 1]
    torch.testing.assert_close(fine.tokens(torch.ones(1, 18))[0], model.item_tokens(HISTORY))


def test_counterfactual_is_verified_by_reranking(model):
    explainer = OcclusionExplainer(model)
    scores = model.score(HISTORY[None, :])[0]
    scores[HISTORY] = float("-inf")
    k = 5
    found = 0
    for target in torch.topk(scores, k).indices.tolist():
        weights = explainer.attribute(HISTORY, torch.tensor([target]))[0]
        removal = smallest_removal(model, explainer.table, HISTORY, HISTORY, target, weights, k)
        positions, new_rank = removal.positions, removal.new_rank
        if positions is None:
            continue
        found += 1
        keep = [p for p in range(len(HISTORY)) if p not in positions]
        again = model.score(HISTORY[keep][None, :])[0]
        again[HISTORY] = float("-inf")
        rank = int((again > again[target]).sum()) + 1
        assert rank == new_rank and rank > k, "the counterfactual must really drop the item out"
        if len(positions) > 1:  # one fewer removal keeps it in: the set is the smallest greedy prefix
            keep = [p for p in range(len(HISTORY)) if p not in positions[:-1]]
            fewer = model.score(HISTORY[keep][None, :])[0]
            fewer[HISTORY] = float("-inf")
            assert int((fewer > fewer[target]).sum()) < k
    assert found, "no counterfactual found for any top item of the toy"


def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())


@pytest.mark.parametrize("name", list(METHODS))
def test_no_hooks_are_left_registered_even_after_an_error(model, name):
    explainer = make_explainer(model, name)
    explainer.attribute(HISTORY, TARGETS)
    assert _hooks(model) == 0
    with pytest.raises((IndexError, RuntimeError)):
        explainer.attribute(torch.tensor([4, N_ITEMS + 50]), TARGETS)  # no such item
    assert _hooks(model) == 0


class AdditiveModel(nn.Module):
    """score(history, any target) = sum of value[item] over the history: the truth is known."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values, dtype=torch.float32)
        self.cfg = dataclasses.replace(ModelConfig(), max_len=10, n_items=len(values) - 1)

    def forward(self, items, tokens=None, output_attentions=False):
        total = self.values[items].sum(1)  # (B,)
        return SeqRecOutput(total[:, None, None].expand(-1, items.shape[1], 1))

    def last_hidden(self, items, table=None, events=None):
        return self(items).hidden[:, -1]

    def query(self, items, events=None):
        return self(items).hidden[:, -1]

    def predict_many(self, hidden, candidates):
        return hidden @ candidates.T

    def predict_paired(self, hidden, candidates):
        return (hidden * candidates).sum(-1)

    def item_table(self):
        return torch.ones(len(self.values), 1)


def test_faithfulness_metrics_on_an_additive_toy():
    values = [0.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.0]  # item i adds values[i]; item 7 adds nothing
    model = AdditiveModel(values)
    table = model.item_table()
    read = torch.tensor([6, 1, 4, 2, 3, 5])
    targets = torch.tensor([7])
    case = _Case(
        read, read, targets, torch.tensor([sum(values[i] for i in read.tolist())]), torch.zeros(1, 6), torch.arange(6)
    )
    order = torch.argsort(torch.tensor([values[i] for i in read.tolist()]), descending=True)[None, :]
    comp, suff = _aopc(model, table, case, order)
    # removing the top 1..5 items drops 5, 9, 12, 14, 15 (AOPC 11); keeping them drops 10.5 .. 0.5
    assert comp == pytest.approx([5, 9, 12, 14, 15])
    assert suff == pytest.approx([10.5, 6.5, 3.5, 1.5, 0.5])
    # occlusion on an additive model is exactly the item values
    weights = OcclusionExplainer.attribute(type("E", (), {"model": model, "table": table})(), read, targets)
    torch.testing.assert_close(weights[0], torch.tensor([values[i] for i in read.tolist()]))
    # with every item scored alike, the target (item 7) stays tied with all others: rank 0 < k
    assert _exit_rate(model, table, case, order[:, :3], k=3) == 0.0


def test_default_is_the_best_mean_rank():
    results = {
        "a": dict(comprehensiveness=1.0, sufficiency=0.1, topk_exit_rate=0.6, target_dependent=True),
        "b": dict(comprehensiveness=0.5, sufficiency=0.3, topk_exit_rate=0.7, target_dependent=True),
        "att": dict(comprehensiveness=2.0, sufficiency=0.0, topk_exit_rate=0.9, target_dependent=False),
    }
    assert choose_default(results) == "a"


def test_explanations_are_json_and_html(tmp_path):
    from recscope.explain.base import Explanation, HistoryWeight

    e = Explanation(
        user="u",
        item_id="<b>",
        title="<img src=x onerror=alert(1)>",
        score=1.0,
        rank=1,
        method="occlusion",
        target_dependent=True,
        history=[HistoryWeight(0, "i1", "<script>x</script>", 0.5)],
        sentence="s",
    )
    assert '"item_id": "<b>"' in e.to_json()
    page = e._repr_html_()
    assert "<script>" not in page and "<img" not in page


def _brute_force_shapley(explainer, history, targets):
    """Shapley values by walking all T! orders one sub-history at a time: the definition."""
    T = len(history)
    phi = torch.zeros(len(targets), T)
    orders = list(itertools.permutations(range(T)))
    for order in orders:
        keep = torch.zeros(T, dtype=torch.bool)
        before = explainer.values(history, keep[None].clone(), targets)[0]
        for i in order:
            keep[i] = True
            after = explainer.values(history, keep[None].clone(), targets)[0]
            phi[:, i] += after - before
            before = after
    return phi / len(orders)


@torch.no_grad()
def test_exact_shapley_matches_the_definition_and_is_efficient(model):
    explainer = ShapleyExplainer(model)
    history = HISTORY[:5]
    weights = explainer.attribute(history, TARGETS)
    torch.testing.assert_close(weights, _brute_force_shapley(explainer, history, TARGETS), atol=1e-4, rtol=1e-4)
    full = explainer.values(history, torch.ones(1, 5, dtype=torch.bool), TARGETS)[0]
    empty = explainer.values(history, torch.zeros(1, 5, dtype=torch.bool), TARGETS)[0]
    torch.testing.assert_close(weights.sum(1), full - empty, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_sampled_shapley_agrees_with_exact_and_with_captum(model):
    from captum.attr import ShapleyValueSampling

    explainer = ShapleyExplainer(model)
    exact = explainer.exact(HISTORY, TARGETS)
    sampled = explainer.sampled(HISTORY, TARGETS, samples=1000)
    scale = float(exact.abs().max())
    assert float((sampled - exact).abs().max()) < 0.1 * scale
    # Captum's estimator of the same quantity, one target at a time, on keep-masks
    masks = torch.ones(1, len(HISTORY))
    for k, target in enumerate(TARGETS.tolist()):

        def forward(batch, target=target):
            return explainer.values(HISTORY, batch > 0.5, torch.tensor([target]))[:, 0]

        torch.manual_seed(0)
        captum = ShapleyValueSampling(forward).attribute(masks, baselines=torch.zeros_like(masks), n_samples=300)
        assert float((captum[0] - exact[k]).abs().max()) < 0.1 * scale
    # the long-history path (histories past the evaluation budget) is deterministic
    torch.testing.assert_close(explainer.sampled(HISTORY, TARGETS), explainer.sampled(HISTORY, TARGETS))


def test_shapley_scores_at_most_its_budget_of_sub_histories():
    """An explanation's cost is bounded whatever the history's length: exact while all 2^n
    sub-histories fit the budget, sampled orders beyond, and right either way (an additive game:
    each player is worth what it adds). With a positions budget (what an item explanation's
    sub-histories cost the model: their lengths), the sampled sub-histories' lengths add up to
    at most that, so a 50-item history costs what a 20-item one does, not six times as much."""
    from recscope.explain.shapley import BUDGET, POSITIONS, shapley

    worth = torch.arange(1.0, 61.0)
    for positions in (None, POSITIONS):
        for n in (1, 5, 9, 10, 20, 50, 60):
            scored, lengths = [], []

            def value(masks, n=n, scored=scored, lengths=lengths):
                scored.append(len(masks))
                lengths.append(int(masks.sum()))
                return (masks.float() * worth[:n]).sum(1, keepdim=True)

            weights = shapley(value, n, 1, positions=positions)
            assert sum(scored) <= BUDGET, (n, sum(scored))
            assert sum(scored) == 2**n or 2**n > BUDGET  # exact exactly when every sub-history fits
            if positions is not None and 2**n > BUDGET:
                assert sum(lengths) <= positions, (n, sum(lengths))
            torch.testing.assert_close(weights, worth[None, :n])
            assert len(scored) == 1  # one batch, however long the history


def test_an_item_explanation_of_a_long_history_reads_at_most_its_positions(model, monkeypatch):
    """The served explainer passes the positions budget: what the model reads for a 50-item
    history's top items is bounded (variants are scored once each, whatever the targets)."""
    from recscope.explain import variants
    from recscope.explain.shapley import POSITIONS

    history = torch.randint(1, model.cfg.n_items + 1, (50,))
    read = []
    original = variants.variant_hidden

    def counting(model_, table, history_, masks, *args, **kwargs):
        read.append(int(masks.sum()))
        return original(model_, table, history_, masks, *args, **kwargs)

    monkeypatch.setattr(variants, "variant_hidden", counting)  # a spy: the real scoring runs
    weights = ShapleyExplainer(model).attribute(history, TARGETS)
    assert weights.shape == (len(TARGETS), 50) and torch.isfinite(weights).all()
    assert 0 < sum(read) <= POSITIONS


def test_shapley_on_an_additive_model_is_each_items_value():
    values = [0.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.0]
    model = AdditiveModel(values)
    explainer = ShapleyExplainer.__new__(ShapleyExplainer)
    explainer.model, explainer.table = model, model.item_table()
    read = torch.tensor([6, 1, 4, 2, 3, 5])
    truth = torch.tensor([values[i] for i in read.tolist()])
    with torch.no_grad():
        torch.testing.assert_close(explainer.exact(read, torch.tensor([7]))[0], truth)
        torch.testing.assert_close(explainer.sampled(read, torch.tensor([7]))[0], truth)


def _explanation(weights, counterfactual=None, target_dependent=True):
    from recscope.explain.base import Explanation, HistoryWeight

    history = [HistoryWeight(t, f"i{t}", f"Item {t}", w) for t, w in enumerate(weights)]
    return Explanation(None, "c", "Cand", 5.0, 1, "shapley", target_dependent, history, counterfactual=counterfactual)


def test_sentence_cites_only_what_the_weights_carry():
    from recscope.explain.base import Counterfactual, HistoryWeight
    from recscope.explain.text import sentence

    # item 2 holds 6 of 8 positive units: cited; item 0 (1 unit, 12%) is not
    e = _explanation([1.0, -2.0, 6.0, 1.0])
    e.attributes_history, e.attributes_candidate = {"id": 2.0, "brand": 0.5}, {"id": 3.0, "brand=Acme": 0.3}
    text = sentence(e, {"brand": ["Acme"]})
    assert text.startswith("Because you bought “Item 2” (same brand: Acme).")
    assert "Item 0" not in text and "Item 1" not in text
    # a shared brand is claimed only while the brand bars beside the sentence push up, on both sides
    e.attributes_history["brand"] = -0.1
    assert sentence(e, {"brand": ["Acme"]}) == "Because you bought “Item 2”."
    e.attributes_history["brand"], e.attributes_candidate["brand=Acme"] = 0.5, -0.2
    assert "same brand" not in sentence(e, {"brand": ["Acme"]})
    # weights spread thin: nobody is named
    assert "no single past item stands out" in sentence(_explanation([1.0] * 8))
    # a push that is small next to the item's lead over the cut-off is not a reason
    assert "no single past item" in sentence(_explanation([0.3, 0.1]), margin=4.0)
    # the counterfactual is quoted only when verified, short lists by name, long ones by count
    gone = [HistoryWeight(2, "i2", "Item 2", 6.0)]
    verified = sentence(_explanation([1.0, 6.0], Counterfactual(gone, new_rank=14, k=10)))
    assert verified.endswith("Without “Item 2”, it would drop out of your top 10.")
    unverified = sentence(_explanation([1.0, 6.0], Counterfactual([], None, 10, found=False)))
    assert "drop out" not in unverified
    many = sentence(_explanation([1.0, 6.0], Counterfactual(gone * 5, new_rank=11, k=10)))
    assert many.endswith("only once 5 of your past items are taken away.")
    # attention is labelled as the same for every recommendation
    assert "same for every recommendation" in sentence(_explanation([0.2, 0.8], target_dependent=False))
