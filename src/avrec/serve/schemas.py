"""Request and response models of the HTTP API, and the one id rule for the query string, the path and the body."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from fastapi import Query
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from avrec.serve.config import MAX_K

#: the most events or items one request may carry
MAX_BATCH = 10_000

#: Every id, in a body, the query string or the path: 1-256 characters, no control characters, no
#: whitespace at either end (the data loader strips ids, so a padded id could never match one).
ID_MAX_LENGTH = 256
ID_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
ID_RULE = "ids are 1-256 characters, without control characters or whitespace at either end"
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
K = Annotated[int, Query(ge=1, le=MAX_K, description="how many items")]
UserQ = Annotated[str, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
ItemQ = Annotated[str, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
UserP = Annotated[str, PathParam(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
ItemP = Annotated[str, PathParam(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
#: a content-rules profile (``serve.profiles``), e.g. ``kids``; rules only add up, never lift the user's own
ProfileQ = Annotated[str | None, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN,
                                        description="content-rules profile, e.g. kids")]


# ---- request and response models -----------------------------------------------------------------
class ErrorBody(BaseModel):
    """What a refused request gets: one message naming the parameter, field, id or limit."""

    error: str
    detail: Any = None


#: the error answers any route can give (documented on every router, so clients and schema checks know them)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a bad parameter or body; the message names it"},
    401: {"model": ErrorBody, "description": "no or an unknown API key (write routes)"},
    403: {"model": ErrorBody, "description": "the API key lacks the scope this route needs"},
    404: {"model": ErrorBody, "description": "an unknown user, item, version or route"},
    409: {"model": ErrorBody, "description": "a conflict with the catalogue or the versions"},
    413: {"model": ErrorBody, "description": "the request body is too large"},
    429: {"model": ErrorBody, "description": "over the rate limit; Retry-After says when to try again"},
    503: {"model": ErrorBody, "description": "not ready yet (the search index is building) or unavailable"},
}


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    title: str
    position: int | None = Field(None, description="0-based slot in the list")
    propensity: float | None = Field(None, description="probability the policy put this item in this slot")
    explored: bool | None = Field(None, description="the policy explored here (not the model's top item)")
    explanation: str | None = None
    media_type: str | None = None
    genres: list[str] | None = None
    year: str | None = None


class RecommendResponse(BaseModel):
    user_id: str | None
    fallback: bool
    items: list[RecommendedItem]
    impression_id: str | None = Field(None, description="send it with /feedback on these items")
    policy: str | None = None


class HistoryRequest(BaseModel):
    """An anonymous or new visitor: the items they played or liked, and items to leave out."""

    model_config = ConfigDict(extra="forbid")
    history: list[Id] = Field(default_factory=list, max_length=MAX_BATCH)
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_BATCH)
    k: int = Field(10, ge=1, le=MAX_K)
    explain: bool = False
    details: bool = False
    user_id: Id | None = None
    profile: Id | None = None


class ScoredItem(BaseModel):
    item_id: str
    score: float
    title: str
    position: int | None = Field(None, description="0-based slot in the list")
    propensity: float | None = Field(None, description="probability the policy put this item in this slot")
    explored: bool | None = Field(None, description="the policy explored here (not the model's top item)")
    media_type: str | None = None
    genres: list[str] | None = None
    year: str | None = None


class SimilarResponse(BaseModel):
    item_id: str
    items: list[ScoredItem]
    impression_id: str | None = None
    policy: str | None = None


class SearchResponse(BaseModel):
    query: str
    user_id: str | None
    personalised: bool
    items: list[ScoredItem]
    impression_id: str | None = None
    policy: str | None = None


class ExplainResponse(BaseModel):
    user_id: str | None
    item_id: str
    text: str
    evidence: list[dict[str, Any]]


class FeedbackEvent(BaseModel):
    """One interaction: ``play``, ``like``, ``skip``, ``dislike`` or ``rate`` (with a ``value``)."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    item_id: Id
    event: Literal["play", "like", "skip", "dislike", "rate"]
    value: float | None = Field(None, allow_inf_nan=False)
    ts: float | None = Field(None, ge=0, allow_inf_nan=False, description="unix seconds; default now")
    impression_id: Id | None = Field(None, description="the list (from /recommend, /similar, /search) it answers")

    @model_validator(mode="after")
    def _rate_needs_value(self) -> FeedbackEvent:
        if self.event == "rate" and self.value is None:
            raise ValueError("a 'rate' event needs a numeric 'value'")
        return self


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_BATCH)


def _one_or_batch(key: str):
    """Pick the batch model when the body has ``key`` (so errors name only the fields of the chosen form)."""
    return lambda v: "batch" if isinstance(v, dict) and key in v else "one"


FeedbackBody = Annotated[
    Annotated[FeedbackEvent, Tag("one")] | Annotated[FeedbackBatch, Tag("batch")],
    Discriminator(_one_or_batch("events")),
]


class FeedbackResponse(BaseModel):
    stored: int
    ids: list[int]


class NewItem(BaseModel):
    """A catalogue item: ``item_id`` plus metadata (strings; lists become ``|``-separated values)."""

    model_config = ConfigDict(extra="allow")
    item_id: Id
    title: str = ""
    media_type: str = ""
    genres: str | list[str] = ""

    @field_validator("genres")
    @classmethod
    def _join(cls, v):
        return "|".join(str(x) for x in v) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _extras_are_text(self) -> NewItem:
        extra = self.model_extra or {}
        for key, value in extra.items():
            if isinstance(value, list) and all(isinstance(x, (str, int, float)) for x in value):
                value = "|".join(str(x) for x in value)
            elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"field {key!r} must be text, a number or a list of text")
            elif isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"field {key!r} must be finite")
            extra[key] = str(value)
        return self

    def record(self) -> dict[str, str]:
        return {"item_id": self.item_id, "title": self.title, "media_type": self.media_type,
                "genres": self.genres, **(self.model_extra or {})}


class ItemsBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[NewItem] = Field(min_length=1, max_length=MAX_BATCH)


ItemsBody = Annotated[
    Annotated[NewItem, Tag("one")] | Annotated[ItemsBatch, Tag("batch")],
    Discriminator(_one_or_batch("items")),
]


class ItemsResponse(BaseModel):
    added: int
    recommendable: bool
    n_items: int


VersionName = Annotated[str, Field(pattern=r"^v\d{4,}$", max_length=16, description="a model version, e.g. v0002")]


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: VersionName
    reason: str = Field("promoted through the API", max_length=500)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: VersionName | None = None
    reason: str = Field("rolled back through the API", max_length=500)
