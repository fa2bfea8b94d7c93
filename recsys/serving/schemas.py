"""The public JSON contract, validated at the edge: anything that does not fit is a 400 with a clear message."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from recsys.settings import get_settings

_serving = get_settings().serving
MAX_TOP_K = _serving.max_top_k
MAX_BATCH_USERS = _serving.max_batch_users
MAX_ID = 2**63 - 1

UserId = Annotated[StrictInt, Field(ge=0, le=MAX_ID, description="the dataset's own user id (a non-negative integer)")]
TopK = Annotated[StrictInt, Field(ge=1, le=MAX_TOP_K, description=f"how many items to return (1..{MAX_TOP_K})")]
Label = Annotated[str, Field(min_length=1, max_length=40)]


def openapi_nullable(schema: dict[str, Any]) -> None:
    """Spell ``X | None`` fields the OpenAPI 3.0 way (``nullable: true``) in a model's JSON schema.

    BentoML serves OpenAPI 3.0 and keeps only the first branch of pydantic's ``anyOf: [X, {type: null}]`` for
    top-level fields, so /docs.json claimed that ``msg`` is always a string and that ``user_features`` may not
    be null, while the service answers ``"msg": null`` and accepts ``"user_features": null``.
    """
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf", [])
        if len(branches) == 2 and {"type": "null"} in branches:
            (value,) = [b for b in prop.pop("anyOf") if b != {"type": "null"}]
            prop.update(value, nullable=True)


class ApiModel(BaseModel):
    """Base of the public request and response models: their JSON schema is valid OpenAPI 3.0."""

    model_config = ConfigDict(json_schema_extra=openapi_nullable)


class UserFeatures(ApiModel):
    """Demographics of a user the models have never seen, for a better cold start than global popularity."""

    model_config = ConfigDict(extra="forbid")
    age: Label | None = Field(None, examples=["age_25_34"])
    sex: Label | None = Field(None, examples=["F"])
    income: Label | None = Field(None, examples=["income_20_40"])
    # StrictInt 0..1 rather than Literal[0, 1]: the Literal would also take `false` and `true` (False == 0).
    kids_flg: Annotated[StrictInt, Field(ge=0, le=1)] | None = Field(None, description="1 if the household has kids")


def unknown_label(requests: list[RecommendRequest], labels: dict[str, frozenset[str]], prefix: str = "") -> str | None:
    """What is wrong with the first ``user_features`` label the served model has no segment for, or None.

    The labels come from the training data, so pydantic cannot know them; without this check an unknown age band
    would silently fall back to a coarser segment.
    """
    for j, request in enumerate(requests):
        features = request.user_features
        for field, known in labels.items():
            value = getattr(features, field) if features else None
            if value is not None and value not in known:
                where = f"{prefix}{j}." if prefix else ""
                return (f"invalid request: {where}user_features.{field}: {value!r} is not a label of the served "
                        f"model; use one of {', '.join(sorted(known))}, or leave it out")
    return None


class RecommendRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")
    user_id: UserId
    top_k: TopK = 10
    exclude_seen: StrictBool = Field(True, description="drop items the user has already watched")
    user_features: UserFeatures | None = None


class BatchRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")
    requests: list[RecommendRequest] = Field(min_length=1, max_length=MAX_BATCH_USERS)


class Recommendation(ApiModel):
    item_id: int
    score: float | None = Field(description="CatBoost's score for a reranked item: higher ranks first, comparable "
                                "within one answer only; null in a cold-start answer, a popularity list in rank order")
    source: str = Field(description="reranked | segment | kids_segment | global")
    retrieved_by: list[str] = Field(default_factory=list, description="for reranked items, the candidate sources "
                                    "that proposed the item: lightfm, popular, cooc (co-occurrence), ease")


class RecommendResponse(ApiModel):
    user_id: int
    recommendations: list[Recommendation]
    status: Literal["success"] = "success"
    msg: str | None = None
    cold_start: bool = Field(description="true when the user had no history and popularity was used")
    model_version: str


class BatchResponse(ApiModel):
    results: list[RecommendResponse]
    status: Literal["success"] = "success"
    msg: str | None = None


class FlaskQuery(ApiModel):
    """The query of GET /get_recommendation (the Flask reference service's route): the same types as the body."""

    model_config = ConfigDict(extra="forbid")
    user_id: UserId
    top_k: TopK = 10


class FlaskResponse(ApiModel):
    """The Flask reference service's answer: item ids only, best first."""

    recommendations: list[int] = Field(description="item ids, best first; the same as POST /recommend's")
    status: Literal["success"] = "success"
    msg: str | None = None
