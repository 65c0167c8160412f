"""Word attributions (recscope.explain.words): a hand-built case, batched == one by one, the
sentence, JSON, the report's contract and a tiny run's text-driven items."""

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from recscope.config import FeaturesConfig, ModelConfig
from recscope.explain.base import Explanation, HistoryWeight
from recscope.explain.text import sentence
from recscope.explain.words import (
    TitleWords,
    Words,
    WordWeight,
    _Title,
    run_encoder,
    score_drops,
    shared_phrase,
    spans,
    without_words,
    word_weights,
)
from recscope.model import SeqRec

TITLE = "Petal argan oil shampoo for dry hair"


@pytest.fixture(scope="module")
def encode():
    return run_encoder(FeaturesConfig())  # the packaged MiniLM (the session's temporary cache)


def test_words_keep_their_surface_form_and_taking_them_out_keeps_the_rest():
    text = "L'Oréal anti-frizz Serum, 2.5 oz"
    found = [text[a:b] for a, b in spans(text)]
    assert found == ["L'Oréal", "anti-frizz", "Serum", "2.5", "oz"]
    assert without_words(text, [spans(text)[1], spans(text)[3]]) == "L'Oréal Serum, oz"
    assert without_words("one", spans("one")) == ""


def test_the_one_decisive_word_ranks_first(encode):
    # a model whose candidate's text part is exactly (text vector . vector of "argan"): the history
    # item has no text, so its token (and the last hidden state) ignores text_proj
    torch.manual_seed(0)
    cfg = ModelConfig(max_len=4, d_model=16, n_layers=1, n_heads=2, dropout=0, attn_dropout=0, n_items=2, text_dim=384)
    model = SeqRec(cfg).eval()
    read = torch.tensor([1])
    with torch.no_grad():
        model.text_vectors[2] = torch.from_numpy(encode([TITLE]))[0]
        hidden = model(read[None]).hidden[0, -1]
        decisive = torch.from_numpy(encode(["argan"]))[0]
        model.text_proj.weight.copy_(hidden[:, None] * decisive[None, :] / (hidden @ hidden))
        table = model.item_table()
    weights = word_weights(model, table, read, [_Title(0, 2, 2, TITLE, spans(TITLE))], encode)[0]
    words = [TITLE[a:b] for a, b in spans(TITLE)]
    assert words[int(np.argmax(weights))] == "argan"
    others = np.delete(weights, words.index("argan"))
    assert weights[words.index("argan")] > 3 * np.abs(others).max()
    assert np.isfinite(weights).all()


def _text_driven(rec):
    """(explanations with words, history) of the first tiny-run user whose top-5 text drives."""
    for user in rec.data.user_ids[:20]:
        explained = rec.explain(user, top=5, words=True, counterfactual=False)
        if any(e.words is not None and e.words.history for e in explained):
            return explained, rec.history(user)
    pytest.fail("no text-driven item in the tiny run's first 20 users")


def test_a_tiny_run_gives_words_and_batched_equals_one_by_one(tiny_run, encode):
    from recscope.recommend import Recommender

    rec = Recommender.load(tiny_run)
    explained, history = _text_driven(rec)
    plain = rec.explain(history=[rec.data.item_ids[i] for i in history], top=5, counterfactual=False)
    assert all(e.words is None for e in plain)  # only when asked
    e = next(e for e in explained if e.words is not None and e.words.history)
    assert e.words.text_share >= 0.25 and e.words.candidate
    model, data = rec.model, rec.data
    read = torch.from_numpy(np.asarray(history[-model.cfg.max_len :], dtype=np.int64))
    offset = len(history) - len(read)
    target = data.item_index(e.item_id)
    texts = data.item_texts()
    weighed = [(target, e.words.candidate)] + [(int(read[h.position - offset]), h.words) for h in e.words.history]
    for item, words in weighed:
        assert [w.word for w in words] == [texts[item][a:b] for a, b in spans(texts[item])]
        for (a, b), w in zip(spans(texts[item]), words, strict=True):
            # one by one: encode this variant alone, give the item that text vector, rank again
            vector = torch.from_numpy(encode([without_words(texts[item], [(a, b)])]))[0]
            saved = model.text_vectors[item].clone()
            with torch.no_grad():
                before = model.score(read[None], model.item_table())[0, target]
                model.text_vectors[item] = vector
                after = model.score(read[None], model.item_table())[0, target]
                model.text_vectors[item] = saved
            assert math.isfinite(w.weight)
            assert w.weight == pytest.approx(float(before - after), abs=1e-4)


def test_score_drops_is_zero_for_an_unchanged_text(tiny_run):
    from recscope.recommend import Recommender

    rec = Recommender.load(tiny_run)
    model = rec.model
    read = torch.tensor([3, 8, 5])
    items = torch.tensor([8, 40, 3, 12])
    targets = torch.tensor([40, 40, 9, 12])
    drops = score_drops(model, model.item_table(), read, targets, items, model.text_vectors[items])
    torch.testing.assert_close(drops, torch.zeros(4), atol=1e-5, rtol=0)


def _explanation_with_words() -> Explanation:
    history = [
        HistoryWeight(0, "p1", "Voltra Phone Smart 3", 3.0),
        HistoryWeight(1, "p2", "Casa Air Mirror", 0.1),
    ]
    e = Explanation(None, "a1", "Voltra Case for Phone Smart 3", 5.0, 1, "shapley", True, history)
    e.attributes_candidate, e.attributes_history = {"text": 2.0, "id": 1.0}, {"text": 1.0}
    candidate = [("Voltra", 0.1), ("Case", 0.2), ("for", 0.0), ("Phone", 0.3), ("Smart", 0.9), ("3", 0.7)]
    own = [WordWeight(w, 0.1) for w in "Voltra Phone smart 3".split()]  # any case matches
    e.words = Words(
        text_share=2 / 3,
        candidate=[WordWeight(w, x) for w, x in candidate],
        history=[TitleWords(0, "p1", "Voltra Phone Smart 3", own)],
    )
    return e


def test_the_sentence_names_the_shared_words():
    e = _explanation_with_words()
    assert shared_phrase(e.words, [0]) == ("Smart 3", "Voltra Phone Smart 3")
    assert shared_phrase(e.words, [1]) is None  # only the titles of cited items count
    text = sentence(e)
    assert text == "Because you bought “Voltra Phone Smart 3”; its title shares 'Smart 3' with “Voltra Phone Smart 3”."
    e.words.history[0].words = [WordWeight("Casa", 0.1)]
    assert "shares" not in sentence(e)
    e.words = None
    assert sentence(e) == "Because you bought “Voltra Phone Smart 3”."


def test_words_round_trip_through_json_and_stay_finite():
    e = _explanation_with_words()
    e.words.candidate[0].weight = float("nan")
    back = json.loads(e.to_json())
    assert back["words"]["candidate"][0] == {"word": "Voltra", "weight": None}
    assert back["words"]["history"] == [asdict(h) for h in e.words.history]


def test_the_report_carries_word_weights(tiny_run):
    from recscope.recommend import Recommender
    from recscope.viz.report import Case, payload, report_data

    rec = Recommender.load(tiny_run)
    explained, history = _text_driven(rec)
    ids = [rec.data.item_ids[i] for i in history]
    data = report_data(rec, [Case("a shopper", history=ids)], k=5, methods=[rec.default_method()])
    words = data["histories"][0]["explanations"][rec.default_method()]["words"]
    shown = [w for w in words if w is not None]
    assert shown, "a text-driven item has its words on the page"
    for w in shown:
        assert w["texts"][0]["index"] is None and w["limit"] > 0
        for text in w["texts"]:
            assert all(isinstance(word, str) and (x is None or math.isfinite(x)) for word, x in text["words"])
    assert "<" not in payload(data)
