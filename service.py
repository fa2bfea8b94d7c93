"""BentoML service: Recommender (entry, JSON API) -> Candidates (LightFM, batchable) -> Ranker (CatBoost, batchable).

`bentoml serve service:Recommender` (or `make serve`). The model pair is resolved once, at import: the newest
ranker in the BentoML store, the pair packed into the Bento when served from one, or
RECSYS_SERVING__MODEL_VERSION; a missing, mismatched or damaged pair stops the start-up
with one line that says which model is wrong and how to fix it (`bentoml serve` exits 1).
"""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np

from recsys import model_store
from recsys.settings import get_settings
from serving.errors import CleanErrorsMiddleware
from serving.handlers import WARM, candidate_answers, rank_answers
from serving.openapi import PublicSpecMiddleware
from serving.schemas import BatchRequest, BatchResponse, RecommendRequest, RecommendResponse, UserFeatures

SETTINGS = get_settings()
try:
    VERSION = model_store.servable_version(SETTINGS.serving.model_version, source_dir=Path(__file__).parent)
except model_store.ModelStoreError as exc:
    raise SystemExit(f"recsys: cannot serve: {exc}") from None  # one line, no traceback; `bentoml serve` exits 1

# Calls between services recycle their connection pool after `max_requests`; in-flight calls then fail under
# load (bentoml#5540), so the pool is effectively never recycled.
INTERNAL = {"workers": 1, "traffic": {"timeout": 20}, "runner_connection": {"max_requests": 1_000_000_000}}
BATCHING = {"batchable": SETTINGS.serving.batching, "max_batch_size": SETTINGS.serving.max_batch_size,
            "max_latency_ms": SETTINGS.serving.max_latency_ms}


@bentoml.service(name="candidates", **INTERNAL)
class Candidates:
    model_ref = bentoml.models.BentoModel(f"{model_store.CANDIDATES}:{VERSION}")

    def __init__(self) -> None:
        self.model = model_store.load_candidates(self.model_ref)

    @bentoml.api(**BATCHING)
    def generate(self, queries: list[dict]) -> list[dict]:
        return candidate_answers(self.model, queries, SETTINGS.candidates, SETTINGS.serving.max_top_k)


@bentoml.service(name="ranker", **INTERNAL)
class Ranker:
    model_ref = bentoml.models.BentoModel(f"{model_store.RANKER}:{VERSION}")

    def __init__(self) -> None:
        bundle = model_store.load_ranker(self.model_ref)
        self.reranker = bundle.reranker

    @bentoml.api(**BATCHING)
    def rank(self, requests: list[dict]) -> list[dict]:
        return rank_answers(self.reranker, self.reranker.assembler.item_ids, requests)


@bentoml.service(name="recommender", workers=1, traffic={"timeout": 30, "max_concurrency": 512})
class Recommender:
    candidates = bentoml.depends(Candidates)
    ranker = bentoml.depends(Ranker)

    async def _recommend(self, requests: list[RecommendRequest]) -> list[RecommendResponse]:
        queries = [{"user_id": r.user_id, "exclude_seen": r.exclude_seen,
                    "user_features": r.user_features.model_dump() if r.user_features else None} for r in requests]
        candidates = await self.candidates.to_async.generate(queries)
        warm = [j for j, c in enumerate(candidates) if c["source"] == WARM]
        ranked = await self.ranker.to_async.rank([
            {"user_id": requests[j].user_id, "top_k": requests[j].top_k, **candidates[j]} for j in warm
        ]) if warm else []
        by_request = dict(zip(warm, ranked))
        responses = []
        for j, (request, cand) in enumerate(zip(requests, candidates)):
            if j in by_request:
                item_ids, scores = by_request[j]["item_ids"], by_request[j]["scores"]
            else:
                item_ids = cand["item_ids"][: request.top_k]
                scores = 1.0 - np.arange(len(item_ids)) / max(len(cand["item_ids"]), 1)
            responses.append(RecommendResponse(
                user_id=request.user_id,
                recommendations=[{"item_id": int(i), "score": round(float(s), 6), "source": cand["source"]}
                                 for i, s in zip(item_ids, scores)],
                cold_start=cand["source"] != WARM,
                model_version=VERSION,
            ))
        return responses

    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    async def recommend(self, user_id: int, top_k: int = 10, exclude_seen: bool = True,
                        user_features: UserFeatures | None = None) -> RecommendResponse:
        """Top-k items for one user: LightFM candidates reranked by CatBoost; popularity for unknown users."""
        request = RecommendRequest(user_id=user_id, top_k=top_k, exclude_seen=exclude_seen, user_features=user_features)
        return (await self._recommend([request]))[0]

    @bentoml.api(route="/recommend/batch", input_spec=BatchRequest)
    async def recommend_batch(self, requests: list[RecommendRequest]) -> BatchResponse:
        """Recommendations for up to `max_batch_users` users in one call."""
        return BatchResponse(results=await self._recommend(requests))


Recommender.add_asgi_middleware(CleanErrorsMiddleware)
Recommender.add_asgi_middleware(PublicSpecMiddleware)
