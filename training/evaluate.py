"""Offline evaluation on the holdout window: every model on the same users with the same seen-item filter."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import Columns
from recsys.core.candidates import SOURCES, CandidateModel
from recsys.core.reranker import Reranker, top_k_per_user
from recsys.settings import CandidateSettings, EvalSettings
from recsys.training.baselines import (
    choose_ease_l2,
    ease_gram,
    ease_recommend,
    ease_weights,
    excluded_matrix,
    popular_recommend,
    seen_matrix,
)
from recsys.training.metrics import candidate_recall, ranking_metrics
from recsys.training.second_stage import generate_candidates, truth_matrix

log = logging.getLogger(__name__)


def _warm_users(model: CandidateModel, window: pd.DataFrame, max_users: int,
                seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Users of ``window`` the model knows and with a window item it knows (at most ``max_users``, a seeded
    sample), their rows in the model, and how many of the window's users it does not know."""
    window_users = np.unique(window[Columns.User].to_numpy(np.int64))
    rows, known = model.user_rows(window_users)
    users, rows = window_users[known], rows[known]
    has_truth = np.asarray(truth_matrix(window, users, model).sum(axis=1)).ravel() > 0
    users, rows = users[has_truth], rows[has_truth]
    if len(users) > max_users:
        pick = np.sort(np.random.default_rng(seed).choice(len(users), max_users, replace=False))
        users, rows = users[pick], rows[pick]
    return users, rows, int((~known).sum())


def choose_ease_lambda(model: CandidateModel, window: pd.DataFrame, settings: EvalSettings,
                       seed: int = 42) -> tuple[float, dict[float, float]]:
    """EASE's L2 weight with the best ndcg@k on ``window`` when EASE learns from what ``model`` saw (training:
    the history, scored on the label window), and the ndcg@k of every weight tried. On a large catalogue the
    search runs on the ``ease_tuning_items`` most popular titles: each weight tried is a matrix inverse, cubic in
    the titles (15k: minutes each on 2 cores)."""
    users, rows, _ = _warm_users(model, window, settings.ease_tuning_users, seed)
    truth = truth_matrix(window, users, model)
    known_matrix = seen_matrix(model)
    subset = model.popular[: min(settings.ease_tuning_items, settings.ease_max_items, len(model.item_ids))]
    gram = ease_gram(known_matrix[:, subset])
    excluded = excluded_matrix(model)[rows]

    def ndcg(l2: float) -> float:
        recommended = ease_recommend(known_matrix[rows], ease_weights(known_matrix[:, subset], l2, gram), subset,
                                     settings.k, excluded=excluded)
        return ranking_metrics(recommended, truth, len(model.item_ids))[f"ndcg@{settings.k}"]

    best, scores = choose_ease_l2(ndcg)
    log.info("EASE L2 weight %.4g: ndcg@%d %.4f on %d validation users (tried %s)", best, settings.k, scores[best],
             len(users), ", ".join(f"{l2:.3g}: {v:.4f}" for l2, v in scores.items()))
    return best, scores


def evaluate(model: CandidateModel, reranker: Reranker, holdout: pd.DataFrame, cands: CandidateSettings,
             settings: EvalSettings, seed: int = 42, threads: int = 2, ease_lambda: float | None = None) -> dict[str, Any]:
    """Metrics of popularity, LightFM, EASE (with L2 weight ``ease_lambda``; left out when None) and the two-stage
    pipeline for warm holdout users. A ``model`` that carries EASE has it with this weight (the pipeline adds the
    baseline's weight to it), so over the whole catalogue its weights are the baseline's, not computed again (at
    Kion's size a second 0.9 GB inverse)."""
    k = settings.k
    users, rows, cold = _warm_users(model, holdout, settings.max_users, seed)
    truth = truth_matrix(holdout, users, model)
    n_items = len(model.item_ids)
    log.info("evaluating on %d warm holdout users (%d cold holdout users are served by popularity)", len(users), cold)

    batch = generate_candidates(model, users, cands)
    lfm = batch.take(batch.from_source("lightfm"))
    known_matrix = seen_matrix(model)
    seen, excluded = known_matrix[rows], excluded_matrix(model)[rows]  # every model excludes the same titles
    recommendations = {
        "popular": popular_recommend(model.popular, excluded, k),
        "lightfm": top_k_per_user(lfm.owner, lfm.items, lfm.column("lfm_score"), len(users), k)[0],
    }
    if ease_lambda is not None and model.has_ease and n_items <= settings.ease_max_items:
        recommendations["ease"] = ease_recommend(seen, model.ease_weights, np.arange(n_items), k, excluded=excluded)
    elif ease_lambda is not None:
        subset = model.popular[: min(settings.ease_max_items, n_items)]
        recommendations["ease"] = ease_recommend(seen, ease_weights(known_matrix[:, subset], ease_lambda), subset, k,
                                                 excluded=excluded)
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
        "cold_users": cold,
        "k": k,
        "candidates_per_user": len(batch) / max(len(users), 1),
        "metrics": metrics,
        "candidate_recall": recall,
    }
