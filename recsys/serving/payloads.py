"""What travels between the entry and the two model services: one typed entry per user, numpy arrays inside.

They are TypedDicts, so at run time they stay the plain dicts of arrays that BentoML pickles between the services
(or encodes for JSON, recsys/serving/wire.py), while mypy checks every key the entry and the model services write
and read. The
services' ``@bentoml.api`` methods declare ``list[dict[str, Any]]``, the transport: BentoML derives an API schema
from those annotations, and it has none for numpy arrays inside a TypedDict.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

import numpy as np
from typing_extensions import TypeIs

from recsys.core.candidates import PopularList, Profile
from recsys.serving import wire

WARM: Literal["reranked"] = "reranked"  # the source of an answer the reranker ordered


class Query(TypedDict):
    """Entry -> candidates service: one user to find candidates for."""

    user_id: int
    exclude_seen: bool
    user_features: Profile | None
    raw_arrays: NotRequired[bytes | None]  # wire.RAW: wire.TAKES_RAW for numpy arrays, not their JSON-safe form


class Candidates(TypedDict):
    """Candidates service -> entry, for a user the candidate model knows."""

    source: Literal["reranked"]
    items: np.ndarray     # int64 (n,): item indices into the candidate model's items
    features: np.ndarray  # float32 (n, len(BATCH_FEATURES))


class PopularItems(TypedDict):
    """Candidates service -> entry, for a user without history: a popularity list, already the answer."""

    source: PopularList
    item_ids: np.ndarray  # int64 (max_top_k,): item ids, most popular first


CandidateAnswer = Candidates | PopularItems


class RankRequest(Candidates):
    """Entry -> ranker service: a known user's candidates, and how many to keep."""

    user_id: int
    top_k: int
    raw_arrays: NotRequired[bytes | None]  # as in Query


class Ranked(TypedDict):
    """Ranker service -> entry: a user's best items, best first."""

    item_ids: np.ndarray      # int64 (k,)
    scores: np.ndarray        # float32 (k,): CatBoost's scores
    retrieved_by: np.ndarray  # bool (k, len(SOURCES)): the candidate sources that proposed each item


def is_warm(answer: CandidateAnswer) -> TypeIs[Candidates]:
    """Whether the candidates service found candidates for the user (else the answer is a popularity list)."""
    return answer["source"] == WARM


def rank_request(user_id: int, top_k: int, candidates: Candidates) -> RankRequest:
    """What an in-process caller sends the ranker for a known user: the candidates as they came, the user and
    ``top_k``, and raw arrays back."""
    return {**candidates, "user_id": user_id, "top_k": top_k, "raw_arrays": wire.TAKES_RAW}
