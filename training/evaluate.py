"""Offline evaluation on the holdout window: every model on the same users with the same seen-item filter."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import Columns
from recsys.core.candidates import SOURCES, CandidateModel
from recsys.core.reranker import Reranker, top_k_per_user
from recsys.settings import CandidateSettings, EvalSettings
from recsys.training.baselines import ease_recommend, ease_weights, popular_recommend
from recsys.training.metrics import candidate_recall, ranking_metrics
from recsys.training.second_stage import generate_candidates, truth_matrix

log = logging.getLogger(__name__)


def _seen_matrix(model: CandidateModel) -> sp.csr_matrix:
    """All users x items the model knows were watched: the seen filter and EASE's training data."""
    return sp.csr_matrix((np.ones(len(model.seen_indices), np.float32), model.seen_indices, model.seen_indptr),
                         shape=(len(model.user_ids), len(model.item_ids)))


def evaluate(model: CandidateModel, reranker: Reranker, holdout: pd.DataFrame, cands: CandidateSettings,
             settings: EvalSettings, seed: int = 42, threads: int = 2) -> dict[str, Any]:
    """Metrics of popularity, LightFM, EASE and the two-stage pipeline for warm holdout users."""
    k = settings.k
    holdout_users = np.unique(holdout[Columns.User].to_numpy(np.int64))
    rows, known = model.user_rows(holdout_users)
    users, rows = holdout_users[known], rows[known]
    truth = truth_matrix(holdout, users, model)
    has_truth = np.asarray(truth.sum(axis=1)).ravel() > 0
    users, rows = users[has_truth], rows[has_truth]
    if len(users) > settings.max_users:
        pick = np.sort(np.random.default_rng(seed).choice(len(users), settings.max_users, replace=False))
        users, rows = users[pick], rows[pick]
    truth = truth_matrix(holdout, users, model)
    n_items = len(model.item_ids)
    log.info("evaluating on %d warm holdout users (%d cold holdout users are served by popularity)",
             len(users), int((~known).sum()))

    batch = generate_candidates(model, users, cands)
    lfm = batch.take(batch.from_source("lightfm"))
    known_matrix = _seen_matrix(model)
    seen = known_matrix[rows]
    recommendations = {
        "popular": popular_recommend(model.popular, seen, k),
        "lightfm": top_k_per_user(lfm.owner, lfm.items, lfm.column("lfm_score"), len(users), k)[0],
    }
    subset = model.popular[: min(settings.ease_max_items, n_items)]
    weights = ease_weights(known_matrix[:, subset], settings.ease_lambda)
    recommendations["ease"] = ease_recommend(seen, weights, subset, k)
    scores = reranker.score(users, batch, threads=threads)
    recommendations["two_stage"] = top_k_per_user(batch.owner, batch.items, scores, len(users), k)[0]

    metrics = {name: ranking_metrics(recs, truth, n_items) for name, recs in recommendations.items()}
    recall = {}
    for name in SOURCES:
        part = batch.take(batch.from_source(name))
        recall[name] = candidate_recall(part.owner, part.items, truth)
    recall["combined"] = candidate_recall(batch.owner, batch.items, truth)
    return {
        "users": len(users),
        "cold_users": int((~known).sum()),
        "k": k,
        "candidates_per_user": len(batch) / max(len(users), 1),
        "metrics": metrics,
        "candidate_recall": recall,
    }
