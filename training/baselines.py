"""Single-stage baselines the two-stage pipeline has to beat: recent popularity and EASE."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.core.candidates import top_k


def ease_weights(matrix: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE (Steck, 2019): closed-form item-item weights B = I - P / diag(P), P = (X^T X + l2 I)^-1."""
    gram = np.asarray((matrix.T @ matrix).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32)


def ease_recommend(history: sp.csr_matrix, weights: np.ndarray, item_subset: np.ndarray, k: int,
                   batch: int = 2048) -> np.ndarray:
    """Top-k item indices per user of ``history`` (users x all items); EASE ranks only ``item_subset``."""
    out = np.full((history.shape[0], k), -1, dtype=np.int64)
    sub = history[:, item_subset]
    for lo in range(0, history.shape[0], batch):
        rows = sub[lo:lo + batch]
        scores = np.asarray(rows @ weights)
        scores[rows.toarray() > 0] = -np.inf
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
