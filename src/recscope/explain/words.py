"""Word attributions: which words of the item texts drive a score, by word occlusion through the encoder.

When the model reads item text (its ``text`` field), an item's text vector is the sentence
encoder's vector of its text. A word's weight is the score drop of the explained item when
that word is taken out of one item's text and the text is encoded again::

    weight(word) = score(all words) - score(text without the word)

For the candidate its row of the item table changes (its own text); for a history item its
token changes wherever it stands in the history, and the last hidden state is recomputed.
Every variant of every title is encoded in one batched encoder call, and every variant is
scored in a few batched model passes (:func:`score_drops`, through
:func:`recscope.explain.variants.variant_hidden`).

Words are the runs of letters and digits of the text (inner apostrophes, hyphens and dots
kept: "L'Oréal", "anti-frizz", "2.5"), in their own surface form; punctuation stays in the
text when a word is taken out. Only the first :data:`MAX_WORDS` words of a text are weighed.

When: only on request (``Recommender.explain(words=True)``, ``recscope explain --words``,
``?words=true`` on the explanation route), since re-encoding costs ~5 ms per variant on 2
cores, and only when text drives the item (:func:`text_share`): the ``text`` field carries at
least :data:`TEXT_SHARE` of the positive field attribution on the item's own side
(``attributes_candidate``) or on the history's side (``attributes_history``). The history
titles weighed are those of the (at most :data:`HISTORY_TITLES`) history items with the
largest positive weights, which include every item the sentence may cite.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from recscope.explain.variants import variant_hidden
from recscope.model import SeqRec

WORD = re.compile(r"\w+(?:['’.\-]\w+)*")
MAX_WORDS = 24  # words weighed per text (a title rarely has more; a description is cut there)
TEXT_SHARE = 0.25  # text drives an item when it carries this share of a side's positive field weight
HISTORY_TITLES = 2  # history items whose titles are weighed: the largest positive weights
TOP_SHARE = 0.25  # a top word carries at least this share of the title's positive word weight

Encode = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, dim) unit vectors, one batched call


@dataclass
class WordWeight:
    word: str  # as the text writes it
    weight: float  # the score drop when the word is taken out of the text


@dataclass
class TitleWords:
    position: int  # 0-based position in the user's whole history
    item_id: str
    title: str
    words: list[WordWeight]


@dataclass
class Words:
    """The word attributions of one explained item (``Explanation.words``)."""

    text_share: float  # the text field's share of the positive field weight (the larger side)
    candidate: list[WordWeight] = field(default_factory=list)  # the item's own text, in text order
    history: list[TitleWords] = field(default_factory=list)  # the weighed history titles, largest weight first


def run_encoder(features) -> Encode:
    """The run's own text encoder (``features``: its FeaturesConfig) as an :data:`Encode`; the
    variants are not cached (they would only grow the cache), the model loads once per process."""
    from recscope.features.text import encoder

    def encode(texts: Sequence[str]) -> np.ndarray:
        return encoder(features.text_encoder, features.text_cache).encode(list(texts), features.text_batch_size)

    return encode


def spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word of ``text``, the first :data:`MAX_WORDS`."""
    return [m.span() for m in WORD.finditer(text)][:MAX_WORDS]


def without_words(text: str, cuts: Sequence[tuple[int, int]]) -> str:
    """``text`` with the words at ``cuts`` taken out and runs of spaces closed."""
    kept, last = [], 0
    for start, end in sorted(cuts):
        kept.append(text[last:start])
        last = end
    kept.append(text[last:])
    return " ".join("".join(kept).split())


def text_share(expl) -> float:
    """The ``text`` field's share of the positive field weight, on the side where it is larger."""
    shares = [0.0]
    for attrs in (expl.attributes_candidate, expl.attributes_history):
        positive = sum(w for w in attrs.values() if w > 0)
        text = attrs.get("text", 0.0)
        if positive > 0 and text > 0:
            shares.append(text / positive)
    return max(shares)


@torch.no_grad()
def score_drops(
    model: SeqRec,
    table: torch.Tensor,
    read: torch.Tensor,
    targets: torch.Tensor,
    items: torch.Tensor,
    vectors,
    events: torch.Tensor | None = None,
) -> torch.Tensor:
    """Row v: the drop of ``targets[v]``'s score (what the run's task predicts) for history ``read``
    (T,) with its event labels ``events`` (T,) when item ``items[v]`` gets the text vector
    ``vectors[v]`` (V, dim) instead of its own: its table row changes (when it is the target) and
    so do its tokens in the history (when it is there). -> (V,)."""
    vectors = torch.as_tensor(vectors, dtype=model.text_vectors.dtype)
    delta = model.text_proj(vectors) - model.text_proj(model.text_vectors[items])  # (V, C)
    rows = table[targets] + delta * (targets == items)[:, None]  # (V, C) the targets' changed rows
    whole = torch.ones(1, len(read), dtype=torch.bool)  # keep-mask: every item, each variant its own tokens
    base_hidden = variant_hidden(model, table, read, whole, events)[0]  # (C,)
    hidden = base_hidden.expand(len(items), -1).clone()  # (V, C)
    inside = read[None, :] == items[:, None]  # (V, T) where each changed item stands in the history
    changed = inside.any(1).nonzero().flatten()
    if len(changed):
        varied = table[read][None] + inside[changed, :, None] * delta[changed, None, :]  # (B, T, C)
        hidden[changed] = variant_hidden(model, table, read, whole.expand(len(changed), -1), events, varied)
    base = model.predict_paired(base_hidden.expand(len(targets), -1), table[targets])  # (V,)
    return base - model.predict_paired(hidden, rows)


@dataclass
class _Title:
    """One text to weigh for one explanation: the target, the item whose text varies, its words."""

    expl: int  # index of the explanation
    target: int
    item: int
    text: str
    spans: list[tuple[int, int]]
    position: int | None = None  # in the whole history (None: the candidate)


def word_weights(
    model: SeqRec,
    table: torch.Tensor,
    read: torch.Tensor,
    titles: list[_Title],
    encode: Encode,
    cuts: Callable[[_Title], list[list[tuple[int, int]]]] | None = None,
    events: torch.Tensor | None = None,
) -> list[np.ndarray]:
    """Per title, the score drop of each variant of its text: by default each word taken out alone
    (``cuts`` names other sets of words to take out together). One encoder call, batched scoring."""
    cuts = cuts or (lambda t: [[s] for s in t.spans])
    plans = [cuts(t) for t in titles]
    texts = sorted({without_words(t.text, c) for t, plan in zip(titles, plans, strict=True) for c in plan})
    if not texts:
        return [np.zeros(0) for _ in titles]
    encoded = np.asarray(encode(texts), dtype=np.float32)  # (n, dim) one batched call
    for i, text in enumerate(texts):
        if not text.strip():
            encoded[i] = 0.0  # no text: a zero vector, as an item without text has
    row = {text: i for i, text in enumerate(texts)}
    variant_rows, targets, items = [], [], []
    for t, plan in zip(titles, plans, strict=True):
        for c in plan:
            variant_rows.append(row[without_words(t.text, c)])
            targets.append(t.target)
            items.append(t.item)
    drops = score_drops(
        model,
        table,
        read,
        torch.tensor(targets, dtype=torch.long),
        torch.tensor(items, dtype=torch.long),
        torch.from_numpy(encoded[variant_rows]),
        events,
    ).numpy()
    out, start = [], 0
    for plan in plans:
        out.append(drops[start : start + len(plan)].astype(float))
        start += len(plan)
    return out


def titles_to_weigh(data, read: torch.Tensor, offset: int, targets: list[int], explanations) -> list[_Title]:
    """The candidate's text and the top history items' texts of every explanation text drives."""
    texts = data.item_texts()
    titles = []
    for j, expl in enumerate(explanations):
        if expl.score is None or text_share(expl) < TEXT_SHARE:
            continue
        target = targets[j]
        if texts[target]:
            titles.append(_Title(j, target, target, texts[target], spans(texts[target])))
        seen = set()
        for h in sorted(expl.history, key=lambda h: -h.weight):
            if len(seen) == HISTORY_TITLES or h.weight <= 0:
                break
            item = int(read[h.position - offset])
            if item in seen or not texts[item]:
                continue
            seen.add(item)
            titles.append(_Title(j, target, item, texts[item], spans(texts[item]), h.position))
    return titles


def add_words(model, table, data, read, offset, targets, explanations, encode: Encode, events=None) -> None:
    """Set ``words`` of every explanation text drives (:func:`text_share`): all in one encoder call.
    ``events`` (T,) are the history's event labels (None: none known)."""
    titles = titles_to_weigh(data, read, offset, targets, explanations)
    weights = word_weights(model, table, read, titles, encode, events=events)
    for j, expl in enumerate(explanations):
        mine = [(t, w) for t, w in zip(titles, weights, strict=True) if t.expl == j]
        if not mine:
            continue
        words = Words(text_share=text_share(expl))
        for t, w in mine:
            weighed = [WordWeight(t.text[a:b], float(x)) for (a, b), x in zip(t.spans, w, strict=True)]
            if t.position is None:
                words.candidate = weighed
            else:
                words.history.append(TitleWords(t.position, data.item_ids[t.item], data.title(t.item), weighed))
        expl.words = words


def top_words(weights: Sequence[WordWeight]) -> list[int]:
    """Indices of the words that carry at least :data:`TOP_SHARE` of the positive word weight."""
    total = sum(w.weight for w in weights if w.weight > 0)
    return [i for i, w in enumerate(weights) if total > 0 and w.weight > 0 and w.weight >= TOP_SHARE * total]


def phrases(weights: Sequence[WordWeight]) -> list[list[int]]:
    """Runs of adjacent top words (:func:`top_words`), the heaviest run first: 'argan' and 'oil'
    next to each other make the phrase 'argan oil'."""
    runs: list[list[int]] = []
    for i in top_words(weights):
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return sorted(runs, key=lambda run: -sum(weights[i].weight for i in run))


def shared_phrase(words: Words | None, positions: Sequence[int]) -> tuple[str, str] | None:
    """(phrase, history title): the heaviest run of the candidate's top words (or its longest part)
    that the title of a history item at ``positions`` also holds (case-insensitive, word by word)."""
    if words is None:
        return None
    cited = [h for h in words.history if h.position in set(positions)]
    for run in phrases(words.candidate):
        mine = [words.candidate[i].word for i in run]
        for size in range(len(mine), 0, -1):
            for start in range(len(mine) - size + 1):
                part = [w.casefold() for w in mine[start : start + size]]
                for h in cited:
                    theirs = [w.word.casefold() for w in h.words]
                    if any(theirs[i : i + size] == part for i in range(len(theirs) - size + 1)):
                        return " ".join(mine[start : start + size]), h.title
    return None


DELETED = (1, 2, 3)  # deletion sizes the faithfulness check measures
DRAWS = 5  # random draws per size and title


def deletion(model, table, data, read, offset, targets, explanations, rng: np.random.Generator, encode: Encode):
    """Faithfulness of the word attributions already on ``explanations``: per weighed title and
    size n (:data:`DELETED`, when the title has more than n words), the score drop when its n
    heaviest words are taken out together, and the mean drop over :data:`DRAWS` random n words.
    Returns [(side, n, top drop, random drop)], side "candidate" or "history"; one encoder call."""
    titles, heaviest = [], []
    texts = data.item_texts()
    for j, expl in enumerate(explanations):
        if expl.words is None:
            continue
        weighed = [(None, targets[j], expl.words.candidate)] + [
            (h.position, int(read[h.position - offset]), h.words) for h in expl.words.history
        ]
        for position, item, words in weighed:
            titles.append(_Title(j, targets[j], item, texts[item], spans(texts[item]), position))
            heaviest.append(np.argsort([-w.weight for w in words], kind="stable"))

    def cuts(t: _Title, order) -> list[list[tuple[int, int]]]:
        out = []
        for n in DELETED:
            if len(t.spans) > n:
                out.append([t.spans[i] for i in order[:n]])
                out += [[t.spans[i] for i in rng.choice(len(t.spans), n, replace=False)] for _ in range(DRAWS)]
        return out

    plans = {id(t): cuts(t, order) for t, order in zip(titles, heaviest, strict=True)}
    drops = word_weights(model, table, read, titles, encode, cuts=lambda t: plans[id(t)])
    rows = []
    for t, d in zip(titles, drops, strict=True):
        side = "candidate" if t.position is None else "history"
        sizes = [n for n in DELETED if len(t.spans) > n]
        for s, n in enumerate(sizes):
            block = d[s * (1 + DRAWS) : (s + 1) * (1 + DRAWS)]
            rows.append((side, n, float(block[0]), float(block[1:].mean())))
    return rows
