"""Ranking metrics over a users x k matrix of recommended item indices (-1 pads short lists).

MAP@k divides each user's average precision by min(k, number of relevant items), so a perfect list scores 1;
users with no relevant items are not evaluated (the caller passes only holdout users).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def relevance(recommended: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """Boolean users x k matrix: is the recommended item in the user's holdout?"""
    n_users, k = recommended.shape
    rows = np.repeat(np.arange(n_users), k)
    cols = recommended.ravel()
    valid = cols >= 0
    hits = np.zeros(n_users * k, dtype=bool)
    hits[valid] = np.asarray(truth[rows[valid], cols[valid]]).ravel() > 0
    return hits.reshape(n_users, k)


def ranking_metrics(recommended: np.ndarray, truth: sp.csr_matrix, n_catalogue: int) -> dict[str, float]:
    k = recommended.shape[1]
    hits = relevance(recommended, truth)
    n_relevant = np.asarray(truth.sum(axis=1)).ravel().astype(np.int64)
    if (n_relevant == 0).any():
        raise ValueError("every evaluated user needs at least one holdout item")
    positions = np.arange(1, k + 1)
    precision_at = np.cumsum(hits, axis=1) / positions
    ideal = np.minimum(n_relevant, k)
    discounts = 1.0 / np.log2(positions + 1)
    idcg = np.cumsum(discounts)[ideal - 1]
    return {
        f"map@{k}": float(np.mean((precision_at * hits).sum(axis=1) / ideal)),
        f"ndcg@{k}": float(np.mean((hits * discounts).sum(axis=1) / idcg)),
        f"recall@{k}": float(np.mean(hits.sum(axis=1) / n_relevant)),
        f"hitrate@{k}": float(np.mean(hits.any(axis=1))),
        f"coverage@{k}": catalogue_coverage(recommended, n_catalogue),
    }


def catalogue_coverage(recommended: np.ndarray, n_catalogue: int) -> float:
    """The share of the catalogue shown in any of the lists (item indices, -1 pads short lists)."""
    return float(len(np.unique(recommended[recommended >= 0])) / n_catalogue)


def candidate_recall(owner: np.ndarray, items: np.ndarray, truth: sp.csr_matrix) -> float:
    """Mean over users of the share of their holdout items found anywhere in their candidate set."""
    if len(owner) == 0:  # a source with no candidates (scipy answers an empty look-up with a matrix, not an array)
        return 0.0
    found = np.asarray(truth[owner, items]).ravel() > 0
    n_relevant = np.asarray(truth.sum(axis=1)).ravel()
    per_user = np.bincount(owner[found], minlength=truth.shape[0]) / n_relevant
    return float(per_user.mean())
