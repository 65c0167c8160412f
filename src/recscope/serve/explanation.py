"""The explanation as the API sends it: typed pydantic models of ``Explanation.to_dict()``.

Every route that returns an explanation (a list with ``explain=true``, the single item's
explanation) declares these, so the OpenAPI document describes every key and a generated client
gets real types. The field names and meanings are those of the dataclasses in
``recscope.explain`` (``Explanation``, ``HistoryWeight``, ``Counterfactual``, ``Words``); the
models forbid other keys, and ``tests/test_openapi.py`` checks both sides hold the same fields,
so neither can change without the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from recscope.explain import base
from recscope.ranking import OUTSIDE_TOP_K, OWNED, RECOMMENDED


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryWeight(Out):
    """One item of the history the model read, and how much it pushed the explained item's score."""

    position: int = Field(ge=0, description="0-based position in the user's whole history, oldest first")
    item_id: str
    title: str
    weight: float | None = Field(
        description="how much this item pushed the score up (positive) or down (negative), in the score's units "
        "(null if the method could not compute a finite value)"
    )
    event: str | None = Field(
        None,
        description='the event\'s kind when the model read it as something else than an item the user had: "dismiss" '
        "(the user dismissed it; a model version that learned the label reads dismissals); absent otherwise",
    )

    @model_serializer(mode="wrap")
    def _event_only_when_there_is_one(self, handler: SerializerFunctionWrapHandler):
        """As ``Explanation.to_dict`` says it: an item the user had carries no ``event`` key."""
        out = handler(self)
        if self.event is None:
            out.pop("event", None)
        return out


class Counterfactual(Out):
    """The smallest set of history items found whose removal drops the item out of the top-K."""

    removed: list[HistoryWeight] = Field(description="the items to remove, most attributed first (greedy, verified)")
    new_rank: int | None = Field(description="the item's 1-based rank once they are removed; null if not found")
    k: int = Field(ge=1, description="the top-K it drops out of")
    replaced_by: str | None = Field(None, description="the item id that enters the top-K in its place")
    found: bool = True
    kind: Literal["own_score_fell", "others_rose", "not_found"] = Field(
        base.OWN_SCORE_FELL,
        description="own_score_fell: the removed items carried it (its own score fell below the old cut-off); "
        "others_rose: other items rose past it; not_found: no greedy prefix of the history drops it",
    )
    score_before: float | None = Field(None, description="the item's own score with the whole history")
    score_after: float | None = Field(None, description="its own score once the items are removed")
    cutoff: float | None = Field(None, description="the score of the first item outside the top-K, before the removal")


class WordWeight(Out):
    word: str = Field(description="as the text writes it")
    weight: float | None = Field(description="the score drop when the word is taken out of the text")


class TitleWords(Out):
    position: int = Field(ge=0, description="0-based position in the user's whole history")
    item_id: str
    title: str
    words: list[WordWeight]


class Words(Out):
    """Which words of the item's and the top history items' texts drive the score."""

    text_share: float | None = Field(description="the text field's share of the positive field attribution")
    candidate: list[WordWeight] = Field(default_factory=list, description="the item's own text, in text order")
    history: list[TitleWords] = Field(
        default_factory=list, description="the weighed history titles, largest weight first"
    )


class Explanation(Out):
    """Why one item is (or is not) recommended to one history."""

    user: str | None = Field(description="the user id; null for an anonymous history given in the request")
    item_id: str
    title: str
    score: float | None = Field(description="the model's score; null for an item the history owns (not ranked)")
    rank: int | None = Field(description="1-based rank among the rankable items; null if owned or dismissed")
    method: str = Field(description="the explanation method (shapley, occlusion, attention, ...)")
    target_dependent: bool = Field(description="false: the method gives every item the same history weights")
    history: list[HistoryWeight] = Field(description="every history item the model read, oldest first")
    attributes_history: dict[str, float | None] = Field(
        default_factory=dict,
        description='"id", "text" or "field=value" -> how much that part of the history\'s tokens pushed the score',
    )
    attributes_candidate: dict[str, float | None] = Field(
        default_factory=dict, description="the item's own fields -> their share of its score (an exact split)"
    )
    attributes_method: str = Field("", description="the method the attribute weights come from")
    status: Literal["recommended", "outside_top_k", "owned", "dismissed", "hidden"] = Field(
        RECOMMENDED,
        description=f"{RECOMMENDED}: in the top-K; {OUTSIDE_TOP_K}: ranked below it; {OWNED}: in the history, "
        f"never recommended; {base.DISMISSED}: the user said not interested, never recommended to them; "
        "hidden: hidden in the catalog (PUT /items/{id} hidden, DELETE /items/{id}), in no list",
    )
    k: int = Field(10, ge=1, description="the top-K the status and the counterfactual refer to")
    candidates: int | None = Field(None, description="how many items were ranked (the catalog minus hidden ones)")
    cited_drop: float | None = Field(
        None, description="the item's own score drop when the history items the sentence names are removed together"
    )
    attentions: list[list[list[float | None]]] | None = Field(
        None, description="(layers, heads, history length) attention of the last position, when asked"
    )
    counterfactual: Counterfactual | None = None
    words: Words | None = None
    sentence: str = Field("", description="the explanation in one or two plain sentences")
    ms: float = Field(0.0, description="milliseconds spent building it (its share of a batched call)")

    @classmethod
    def of(cls, explained: base.Explanation) -> Explanation:
        """The API's view of an explanation (its ``to_dict()``: non-finite numbers become null)."""
        return cls.model_validate(explained.to_dict())


class SingleExplanation(Explanation):
    """One explanation asked for on its own: with the version that computed it (a list names its
    version once, beside its explanations)."""

    model_version: str
