"""What the two model services do with a batch, as plain functions (so benchmarks can time them without HTTP).

Payloads between services are dicts of numpy arrays (typed in recsys/serving/payloads.py); BentoML pickles them
over its Unix sockets.

Each model service runs a few made-up batches through its handler as it starts, before it is ready
(:func:`warm_up_queries`, :func:`warm_up_requests`): the first batches of a fresh process otherwise paid for
lazy imports (pyarrow's pandas bridge on the first batch CatBoost reads as a DataFrame), first calls into
CatBoost and numpy and first touches of the mapped arrays, 2-6x a warm batch's time (first call of each kind in
process: ranker 12 and 14 ms against 2 and 11, candidates 15 against 4 ms on the default pair; ~40 against ~20 ms
each at Kion's size), in the first users' latency after every start or restart.
"""

from __future__ import annotations

import numpy as np

from recsys.core.candidates import BATCH_FEATURES, CandidateBatch, CandidateModel, Mix, Profile
from recsys.core.reranker import FRAME_FROM_ROWS, Reranker, top_k_per_user
from recsys.serving import wire
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


WARM_UP_USERS = 32  # a full burst of 32 connections


def warm_up_queries(model: CandidateModel) -> list[Query]:
    """Queries that take every path of :func:`candidate_answers` once: known users with the seen filter (the
    stored lists) and without (the computed lists), and an unknown user (a popularity list)."""
    known = model.user_ids[:WARM_UP_USERS].tolist()
    unknown = int(model.user_ids[-1]) + 1 if len(model.user_ids) else 0
    return [{"user_id": int(user), "exclude_seen": j != 1, "user_features": None, "raw_arrays": wire.TAKES_RAW}
            for j, user in enumerate([unknown, *known])]  # the first known user without the seen filter


def warm_up_requests(reranker: Reranker) -> list[list[RankRequest]]:
    """Two batches for :func:`rank_answers`, made-up candidates of the feature store's first users: one below
    :data:`FRAME_FROM_ROWS` candidates (CatBoost reads strings) and one above it (a DataFrame)."""
    ids = reranker.assembler.users.ids
    items = len(reranker.assembler.item_ids)
    per_user = max(1, min(items, -(-FRAME_FROM_ROWS // WARM_UP_USERS)))
    def batch(users: int) -> list[RankRequest]:
        return [{"user_id": int(ids[j % len(ids)]) if len(ids) else j, "top_k": 10, "source": WARM,
                 "items": np.arange(per_user, dtype=np.int64),
                 "features": np.zeros((per_user, len(BATCH_FEATURES)), np.float32), "raw_arrays": wire.TAKES_RAW}
                for j in range(users)]
    return [batch(1), batch(max(WARM_UP_USERS, -(-FRAME_FROM_ROWS // per_user)))]
