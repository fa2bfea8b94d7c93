"""How many LightFM epochs: fit in steps, score a validation window after each, keep the best state, stop after
``patience`` steps without improvement.

With a fixed count, too few epochs underfit and too many overfit (on MovieLens-100k, 60 epochs gave back half of
what 40 had gained over 20). Here the count is whatever scored best on a window the fit never saw; training runs it
on the label window (`training/pipeline.py`) and then refits the later models for that many epochs, and the tuner
reports every score to its pruner. The score is LightFM alone: ``recall@n`` over its ``n`` candidates (what the first
stage is for, the one stopping decides on) and ``ndcg@k`` of its top ``k`` (comparable across candidate counts, the
one the tuner's pruner reads).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from lightfm import LightFM
from tqdm.auto import tqdm

from recsys.columns import Columns
from recsys.core.candidates import top_k
from recsys.lookup import find_sorted
from recsys.settings import LightFMSettings
from recsys.training.metrics import ranking_metrics

log = logging.getLogger(__name__)
SCORE_BLOCK_BYTES = 64 << 20  # a dense users x items block of scores; ranking it takes about 4x this at its peak
STOP_METRIC = "recall"

Scores = dict[str, float]


@dataclass
class EpochSearch:
    """The validation scores after every step and the epoch count that scored best."""

    metric: str               # e.g. "recall@100", the score that picked the epoch
    best_epoch: int
    scores: dict[int, Scores] = field(default_factory=dict)  # epochs trained -> scores

    @property
    def stopped_at(self) -> int:
        return max(self.scores, default=0)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "best_epoch": self.best_epoch, "stopped_at": self.stopped_at,
                "scores": {str(e): s for e, s in self.scores.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochSearch:
        return cls(data["metric"], data["best_epoch"], {int(e): s for e, s in data["scores"].items()})


class ValidationScorer:
    """LightFM's own quality on a validation window, for the users the fit knows; items they already watched in
    the fit's data are left out, as in serving. At most ``max_users`` users (a seeded sample) keep it cheap."""

    def __init__(self, seen: sp.csr_matrix, truth: sp.csr_matrix, user_features: sp.csr_matrix | None,
                 item_features: sp.csr_matrix | None, n: int, k: int, max_users: int, seed: int,
                 block_bytes: int = SCORE_BLOCK_BYTES) -> None:
        rows = np.nonzero(np.diff(truth.indptr) > 0)[0]
        if len(rows) > max_users:
            rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
        self.rows, self.seen, self.truth = rows, seen[rows], truth[rows]
        self.user_features, self.item_features = user_features, item_features
        self.n, self.k = min(n, seen.shape[1]), min(k, n, seen.shape[1])
        self.block_bytes = block_bytes

    @classmethod
    def for_window(cls, window: pd.DataFrame, user_ids: np.ndarray, item_index: pd.Index, seen: sp.csr_matrix,
                   user_features: sp.csr_matrix | None, item_features: sp.csr_matrix | None, n: int, k: int,
                   max_users: int, seed: int) -> ValidationScorer:
        """The window's interactions of known users with known items, not already in ``seen``, as the truth."""
        rows, known = find_sorted(user_ids, window[Columns.User].to_numpy(np.int64))
        cols = item_index.get_indexer(pd.Index(window[Columns.Item].to_numpy()))
        keep = known & (cols >= 0)
        truth = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=seen.shape)
        truth.sum_duplicates()
        truth.data[:] = 1.0
        truth = (truth - truth.multiply(seen > 0)).tocsr()
        truth.eliminate_zeros()
        return cls(seen, truth, user_features, item_features, n, k, max_users, seed)

    @property
    def users(self) -> int:
        return len(self.rows)

    def __call__(self, model: LightFM) -> Scores:
        top = self.top_items(model)
        n_items = self.seen.shape[1]
        recall = ranking_metrics(top, self.truth, n_items)[f"recall@{self.n}"]
        ndcg = ranking_metrics(top[:, :self.k], self.truth, n_items)[f"ndcg@{self.k}"]
        return {f"{STOP_METRIC}@{self.n}": recall, f"ndcg@{self.k}": ndcg}

    def top_items(self, model: LightFM) -> np.ndarray:
        """LightFM's top ``n`` item indices per validation user, watched items left out."""
        _, user_emb = model.get_user_representations(self.user_features)
        item_bias, item_emb = model.get_item_representations(self.item_features)
        top = np.zeros((len(self.rows), self.n), dtype=np.int64)
        # as many users at once as fit the block: 2,048 users of a million titles took 18 GB and the OOM killer
        step = max(1, self.block_bytes // (item_emb.dtype.itemsize * item_emb.shape[0]))
        for lo in range(0, len(self.rows), step):
            part = slice(lo, lo + step)
            scores = user_emb[self.rows[part]] @ item_emb.T + item_bias[None, :]
            seen = self.seen[part]
            watched = seen.data > 0
            scores[np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))[watched], seen.indices[watched]] = -np.inf
            top[part] = top_k(scores, self.n)
        return top


def fit_with_early_stopping(model: LightFM, fit: Callable[[int], None], score: Callable[[LightFM], Scores],
                            metric: str, max_epochs: int, every: int, patience: int) -> tuple[LightFM, EpochSearch]:
    """Call ``fit(n)`` (train ``n`` more epochs) in steps of ``every`` up to ``max_epochs``, scoring after each step;
    stop after ``patience`` steps without a better ``metric`` and return a copy of the model as it was at the best
    step."""
    search = EpochSearch(metric=metric, best_epoch=0)
    best_model, best, stale, epochs = model, -np.inf, 0, 0
    while epochs < max_epochs and stale < patience:
        step = min(every, max_epochs - epochs)
        fit(step)
        epochs += step
        scores = score(model)
        search.scores[epochs] = scores
        if scores[metric] > best:
            best_model, best, stale, search.best_epoch = copy.deepcopy(model), scores[metric], 0, epochs
        else:
            stale += 1
        log.info("LightFM epoch %d/%d: %s (best %s %.4f at epoch %d)", epochs, max_epochs,
                 ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), metric, best, search.best_epoch)
    return best_model, search


@dataclass
class LightFMState:
    """A fitted LightFM and the names of its feature rows (``id:<id>`` and ``<column>:<value>``), so that a later
    fit on more data (more users) can start from it: see :func:`warm_started`."""

    model: LightFM
    user_features: np.ndarray
    item_features: np.ndarray
    key: str = ""  # what the training cache knows this fit by ("": not cached)

    def save(self, path: Path) -> None:
        arrays = {f"{side}_{name}": getattr(self.model, f"{side}_{name}") for side in ("user", "item") for name in _STATE}
        np.savez(path, user_features=self.user_features, item_features=self.item_features, **arrays)

    @classmethod
    def load(cls, path: Path, lfm: LightFMSettings, seed: int, key: str) -> LightFMState:
        with np.load(path, allow_pickle=False) as data:
            model = _new_model(lfm, seed)
            for side in ("user", "item"):
                for name in _STATE:
                    setattr(model, f"{side}_{name}", data[f"{side}_{name}"])
            return cls(model, data["user_features"], data["item_features"], key)


# What LightFM learns per feature row: the embeddings and biases and their adagrad accumulators.
_STATE = ("embeddings", "embedding_gradients", "embedding_momentum", "biases", "bias_gradients", "bias_momentum")


def _new_model(lfm: LightFMSettings, seed: int) -> LightFM:
    return LightFM(no_components=lfm.no_components, loss=lfm.loss, learning_rate=lfm.learning_rate,
                   item_alpha=lfm.item_alpha, user_alpha=lfm.user_alpha, max_sampled=lfm.max_sampled,
                   random_state=seed)


def warm_started(previous: LightFMState, user_features: np.ndarray, item_features: np.ndarray,
                 lfm: LightFMSettings, seed: int) -> LightFM:
    """A model whose feature rows (by name) start where ``previous`` left them, learning rates included; rows
    ``previous`` did not have (users new in the later data) start fresh, as in a first fit."""
    model = _new_model(lfm, seed)
    model._initialize(lfm.no_components, len(item_features), len(user_features))
    for side, old, new in (("user", previous.user_features, user_features),
                           ("item", previous.item_features, item_features)):
        pos = pd.Index(old).get_indexer(new)
        hit = pos >= 0
        for name in _STATE:
            getattr(model, f"{side}_{name}")[hit] = getattr(previous.model, f"{side}_{name}")[pos[hit]]
    return model


def epoch_cap(lfm: LightFMSettings, interactions: int) -> int:
    """The most epochs a fit of ``interactions`` may train: ``lfm.epochs``, bounded by ``lfm.max_interaction_epochs``
    on large data (at least one early-stopping step)."""
    return max(min(lfm.epochs, lfm.max_interaction_epochs // max(interactions, 1)), lfm.eval_every, 1)


def fit_lightfm(interactions: sp.coo_matrix, user_features: sp.csr_matrix | None,
                item_features: sp.csr_matrix | None, lfm: LightFMSettings, seed: int,
                scorer: ValidationScorer | None = None, start: LightFM | None = None) -> tuple[LightFM, EpochSearch | None]:
    """LightFM fitted for ``lfm.epochs`` epochs (from ``start``'s state if given), or, with a ``scorer`` and
    ``lfm.early_stopping``, for the epoch count (at most :func:`epoch_cap`) that scored best on the scorer's
    window."""
    model = _new_model(lfm, seed) if start is None else start
    threads = lfm.threads_for(interactions.nnz)

    def fit(epochs: int) -> None:
        model.fit_partial(interactions, user_features=user_features, item_features=item_features, epochs=epochs,
                          num_threads=threads)

    if scorer is None or not lfm.early_stopping:
        for _ in tqdm(range(lfm.epochs), desc=f"LightFM {lfm.loss} ({interactions.shape[0]} users x "
                      f"{interactions.shape[1]} items)", unit="epoch", leave=False,
                      disable=not log.isEnabledFor(logging.INFO)):
            fit(1)
        return model, None
    cap = epoch_cap(lfm, interactions.nnz)
    log.info("LightFM %s: up to %d epochs (%d users x %d items, %d interactions), stopping on %d validation users",
             lfm.loss, cap, *interactions.shape, interactions.nnz, scorer.users)
    metric = f"{STOP_METRIC}@{scorer.n}"
    return fit_with_early_stopping(model, fit, scorer, metric, cap, lfm.eval_every, lfm.patience)
