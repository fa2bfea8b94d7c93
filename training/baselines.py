"""Single-stage baselines the two-stage pipeline has to beat: recent popularity and EASE."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from recsys.core.candidates import CandidateModel, top_k

# EASE's L2 weights tried on a validation window: every half decade from 10 to 10^4, then a quarter decade either
# side of the best (its best value moves with the data's size and density).
EASE_GRID = tuple(10.0 ** np.arange(1.0, 4.01, 0.5))
EASE_REFINE = 10.0 ** 0.25


def seen_matrix(model: CandidateModel) -> sp.csr_matrix:
    """All users x items the model knows were watched: the seen filter and EASE's training data."""
    return sp.csr_matrix((np.ones(len(model.seen_indices), np.float32), model.seen_indices, model.seen_indptr),
                         shape=(len(model.user_ids), len(model.item_ids)))


def excluded_matrix(model: CandidateModel) -> sp.csr_matrix:
    """All users x items the model never recommends to a user: what they watched and what they dismissed."""
    seen = seen_matrix(model)
    if not len(model.dismissed_indptr):
        return seen
    return seen + sp.csr_matrix((np.ones(len(model.dismissed_indices), np.float32), model.dismissed_indices,
                                 model.dismissed_indptr), shape=seen.shape)


def ease_weights(matrix: sp.csr_matrix, l2: float, gram: np.ndarray | None = None) -> np.ndarray:
    """EASE (Steck, 2019): closed-form item-item weights B = I - P / diag(P), P = (X^T X + l2 I)^-1.

    ``gram`` (X^T X, as :func:`ease_gram` computes it) saves recomputing it when several weights are tried. In
    float32 and in place: a 15k-item catalogue's matrix is 0.9 GB, and float64 copies of it took 7 GB at once."""
    gram = ease_gram(matrix) if gram is None else gram.copy()
    gram[np.diag_indices_from(gram)] += l2
    weights = _symmetric_inverse(gram)
    diagonal = np.diag(weights).copy()
    weights /= -diagonal[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return _row_major(weights)


def _row_major(weights: np.ndarray, block: int = 2048) -> np.ndarray:
    """``weights`` in row-major order, in their own memory: a user's scores sum the rows of their titles (serving,
    ``CandidateModel.ease_scores``; ``history @ weights`` here), and gathering rows of the column-major matrix LAPACK
    leaves was 12x slower. A square matrix in column-major order is its transpose in row-major order: that is
    transposed in place, block by block."""
    if weights.flags.c_contiguous:
        return weights
    rows = weights.T  # row-major: the transpose of weights
    for lo in range(0, len(rows), block):
        hi = min(lo + block, len(rows))
        rows[lo:hi, lo:hi] = rows[lo:hi, lo:hi].T.copy()
        for far in range(hi, len(rows), block):
            end = min(far + block, len(rows))
            upper = rows[lo:hi, far:end].copy()
            rows[lo:hi, far:end] = rows[far:end, lo:hi].T
            rows[far:end, lo:hi] = upper.T
    return rows


def _symmetric_inverse(matrix: np.ndarray, block: int = 2048) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix, in its own memory: Cholesky (LAPACK potrf/potri, half
    the work of a general inverse), then the upper triangle mirrored block by block (no second full matrix)."""
    # symmetric: the transpose is the same matrix, and in Fortran order (so LAPACK works in place) if it is not
    factor, info = lapack.spotrf(matrix if matrix.flags.f_contiguous else matrix.T, lower=0, overwrite_a=1, clean=0)
    if info == 0:
        inverse, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE's regularised gram matrix is not positive definite (LAPACK info {info})")
    for lo in range(0, len(inverse), block):
        hi = min(lo + block, len(inverse))
        inverse[lo:hi, :lo] = inverse[:lo, lo:hi].T
        part = inverse[lo:hi, lo:hi]
        part[np.tril_indices(hi - lo, -1)] = part.T[np.tril_indices(hi - lo, -1)]
    return inverse


def ease_gram(matrix: sp.csr_matrix) -> np.ndarray:
    return np.asarray((matrix.T @ matrix).todense(), dtype=np.float32)


def choose_ease_l2(score: Callable[[float], float], grid: tuple[float, ...] = EASE_GRID) -> tuple[float, dict[float, float]]:
    """The L2 weight with the best ``score`` (higher is better) over ``grid``, refined a quarter decade either side
    of the best; returns it and every weight's score, so the comparison is with a well-tuned EASE."""
    scores = {l2: score(l2) for l2 in grid}
    best = max(scores, key=scores.__getitem__)
    for l2 in (best / EASE_REFINE, best * EASE_REFINE):
        scores[l2] = score(l2)
    return max(scores, key=scores.__getitem__), dict(sorted(scores.items()))


def ease_recommend(history: sp.csr_matrix, weights: np.ndarray, item_subset: np.ndarray, k: int,
                   batch: int = 2048, excluded: sp.csr_matrix | None = None) -> np.ndarray:
    """Top-k item indices per user of ``history`` (users x all items); EASE ranks only ``item_subset``, without
    the user's history or ``excluded`` (the same users x all items: what else they must not be shown)."""
    out = np.full((history.shape[0], k), -1, dtype=np.int64)
    sub = history[:, item_subset]
    hidden = sub if excluded is None else excluded[:, item_subset]
    for lo in range(0, history.shape[0], batch):
        rows = sub[lo:lo + batch]
        scores = np.asarray(rows @ weights)
        scores[hidden[lo:lo + batch].toarray() > 0] = -np.inf
        top = top_k(scores, min(k, len(item_subset)))
        # A heavy user may have seen nearly all of the subset: pad with -1 rather than recommend seen items.
        found = np.isfinite(np.take_along_axis(scores, top, axis=1))
        out[lo:lo + batch, : top.shape[1]] = np.where(found, item_subset[top], -1)
    return out


def popular_recommend(popular: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    """The most popular items each user has not seen yet."""
    pool = popular[: k + int(np.diff(seen.indptr).max(initial=0))]
    free = np.asarray(seen[:, pool].todense()) == 0
    rank = np.cumsum(free, axis=1)
    out = np.full((seen.shape[0], k), -1, dtype=np.int64)
    r, c = np.nonzero(free & (rank <= k))
    out[r, rank[r, c] - 1] = pool[c]
    return out
