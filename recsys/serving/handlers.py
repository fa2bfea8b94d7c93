"""What the two model services do with a batch, as plain functions (so benchmarks can time them without HTTP).

Payloads between services are dicts of numpy arrays (typed in recsys/serving/payloads.py); BentoML pickles them
over its Unix sockets.
"""

from __future__ import annotations

import numpy as np

from recsys.core.candidates import CandidateBatch, CandidateModel, Mix, Profile
from recsys.core.reranker import Reranker, top_k_per_user
from recsys.serving.payloads import WARM, CandidateAnswer, Query, Ranked, RankRequest
from recsys.settings import CandidateSettings


def candidate_answers(model: CandidateModel, queries: list[Query], settings: CandidateSettings,
                      max_top_k: int) -> list[CandidateAnswer]:
    """Candidates (with their first-level features) for known users; a popularity list for the others: their
    segment's, from the features the request sent or else those the users table gave for them, or global."""
    user_ids = np.array([q["user_id"] for q in queries], dtype=np.int64)
    rows, known = model.user_rows(user_ids)
    answers: list[CandidateAnswer | None] = [None] * len(queries)
    for exclude_seen in (True, False):
        picked = np.nonzero(known & np.array([q.get("exclude_seen", True) == exclude_seen for q in queries]))[0]
        if len(picked) == 0:
            continue
        batch = model.generate(rows[picked], model.served_mix(Mix(*settings.mix)), exclude_seen)
        bounds = np.searchsorted(batch.owner, np.arange(len(picked) + 1))
        for j, q in enumerate(picked):
            part = slice(bounds[j], bounds[j + 1])
            answers[q] = {"source": WARM, "items": batch.items[part], "features": batch.features[part]}
    cold = np.nonzero(~known)[0]
    for q, stored in zip(cold, model.profiles(user_ids[cold]), strict=True):
        sent = queries[q].get("user_features")  # sent features win: the client may know more than the users table
        profile: Profile = (sent if sent is not None else stored) or {}
        items, source = model.segment_items(profile.get("age"), profile.get("sex"), profile.get("kids_flg"))
        answers[q] = {"source": source, "item_ids": model.item_ids[items[:max_top_k]]}
    return [answer for answer in answers if answer is not None]  # every query got one


def rank_answers(reranker: Reranker, item_ids: np.ndarray, requests: list[RankRequest]) -> list[Ranked]:
    """Score all requests' candidates in one CatBoost call and keep each user's top_k, with the first-level
    sources that proposed each kept item."""
    batch = CandidateBatch.of_users([r["items"] for r in requests], [r["features"] for r in requests])
    user_ids = np.array([r["user_id"] for r in requests], dtype=np.int64)
    scores = reranker.score(user_ids, batch)
    top_rows, top_scores = top_k_per_user(batch.owner, np.arange(len(batch)), scores, len(requests),
                                          max(r["top_k"] for r in requests))
    flags = batch.source_flags()  # once for the batch: per user it cost more than CatBoost's fixed cost
    answers: list[Ranked] = []
    for j, r in enumerate(requests):
        rows = top_rows[j, : r["top_k"]]
        rows = rows[rows >= 0]
        answers.append({"item_ids": item_ids[batch.items[rows]], "scores": top_scores[j, : len(rows)],
                        "retrieved_by": flags[rows]})
    return answers
