"""Second level: label first-level candidates with the label window and fit CatBoost on them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from catboost import CatBoost, FeaturesData, Pool

from recsys.columns import Columns
from recsys.core.candidates import CandidateBatch, CandidateModel, Mix
from recsys.core.reranker import FeatureAssembler
from recsys.settings import CandidateSettings, RankerSettings

log = logging.getLogger(__name__)
BATCH_USERS = 1024


class RankerTrainingError(ValueError):
    """Too little signal to train the reranker; the message says which setting to change."""


def truth_matrix(frame: pd.DataFrame, user_ids: np.ndarray, model: CandidateModel) -> sp.csr_matrix:
    """Users (in ``user_ids`` order) x the model's items; 1 where the user watched the item in ``frame``."""
    rows = pd.Index(user_ids).get_indexer(frame[Columns.User].to_numpy())
    cols = model.item_index(frame[Columns.Item].to_numpy())
    keep = (rows >= 0) & (cols >= 0)
    shape = (len(user_ids), len(model.item_ids))
    return sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=shape)


def generate_candidates(model: CandidateModel, user_ids: np.ndarray, cands: CandidateSettings) -> CandidateBatch:
    """Candidates for many known users, batched to bound memory; ``owner`` indexes ``user_ids``."""
    rows, known = model.user_rows(user_ids)
    if not known.all():
        raise ValueError("generate_candidates takes users known to the candidate model only")
    chunks = [rows[lo:lo + BATCH_USERS] for lo in range(0, len(rows), BATCH_USERS)]
    parts = [model.generate(chunk, Mix(*cands.mix)) for chunk in chunks]
    return CandidateBatch.concat(parts, [len(chunk) for chunk in chunks])


@dataclass
class RankerFit:
    model: CatBoost
    train_rows: int
    train_users: int
    valid_users: int
    best_iteration: int
    best_score: dict[str, Any]
    importance: dict[str, float]


def _subsample(batch: CandidateBatch, labels: np.ndarray, settings: RankerSettings,
               rng: np.random.Generator) -> np.ndarray:
    """Row indices to train on: users with a positive, all their positives, a random sample of negatives."""
    positives_per_user = np.bincount(batch.owner, weights=labels, minlength=batch.owner.max() + 1)
    useful = positives_per_user[batch.owner] > 0
    noise = rng.random(len(labels))
    # Negatives ranked by random noise within their user; keep the first `negatives_per_user`.
    order = np.lexsort((noise, batch.owner))
    neg_rank = np.zeros(len(labels), dtype=np.int64)
    neg_sorted = order[labels[order] == 0]
    starts = np.searchsorted(batch.owner[neg_sorted], np.arange(batch.owner.max() + 1))
    neg_rank[neg_sorted] = np.arange(len(neg_sorted)) - starts[batch.owner[neg_sorted]]
    keep = useful & ((labels > 0) | (neg_rank < settings.negatives_per_user))
    return np.nonzero(keep)[0]


def _debiased_gain(model: CandidateModel, items: np.ndarray, strength: float) -> np.ndarray:
    """How much a hit on each of ``items`` is worth to the reranker: 1 / (views + 1) ** ``strength`` (views in the
    history), scaled to average 1 over the catalogue's views. With 0 every hit counts 1; above 0 a hit on a long-tail
    title counts more than one on a title everybody watches, so the ranking learnt does not reduce to popularity
    (inverse propensity: a popular title is more often watched because it is shown and known, not only liked)."""
    if strength == 0:
        return np.ones(len(items), np.float32)
    views = np.bincount(model.seen_indices, minlength=len(model.item_ids)).astype(np.float64) + 1.0
    gain = views ** -strength
    return (gain[items] / np.average(gain, weights=views)).astype(np.float32)


def _take(data: FeaturesData, rows: np.ndarray) -> FeaturesData:
    return FeaturesData(num_feature_data=data.num_feature_data[rows], cat_feature_data=data.cat_feature_data[rows],
                        num_feature_names=data.num_feature_names, cat_feature_names=data.cat_feature_names)


@dataclass
class LabelRows:
    """One label window's reranker training rows: features, graded gains, 0/1 labels and the row's user (``group``,
    an index into ``users``)."""

    data: FeaturesData
    labels: np.ndarray
    gain: np.ndarray
    group: np.ndarray
    users: np.ndarray


def label_rows(model: CandidateModel, assembler: FeatureAssembler, labels_frame: pd.DataFrame,
               cands: CandidateSettings, settings: RankerSettings, seed: int = 42) -> LabelRows:
    """The candidates of ``labels_frame``'s users (those ``model`` knows), labelled with the window: every positive
    and a sample of negatives per user with a positive."""
    rng = np.random.default_rng(seed)
    label_users = np.unique(labels_frame[Columns.User].to_numpy(np.int64))
    _, known = model.user_rows(label_users)
    users = label_users[known]
    if len(users) > settings.max_train_users:
        users = np.sort(rng.choice(users, settings.max_train_users, replace=False))
    if len(users) < 10:
        raise RankerTrainingError(
            f"only {len(users)} users of the label window have history before it; the reranker needs more. "
            "Lengthen the label window (RECSYS_SPLIT__LABEL_DAYS) or use the per-user split"
        )
    batch = generate_candidates(model, users, cands)
    truth = truth_matrix(labels_frame, users, model)
    labels = np.asarray(truth[batch.owner, batch.items]).ravel()
    rows = _subsample(batch, labels, settings, rng)
    if len(rows) == 0 or labels[rows].sum() < 10:
        raise RankerTrainingError(
            f"the candidates contain {int(labels.sum())} label-window items; too few to train a reranker. "
            "Raise the number of candidates (RECSYS_CANDIDATES__N_LIGHTFM) or lengthen the label window"
        )
    batch = batch.take(rows)
    return LabelRows(assembler.assemble(users, batch), labels[rows],
                     _debiased_gain(model, batch.items, settings.popularity_debias), batch.owner, users)


def _concat(windows: list[LabelRows]) -> LabelRows:
    """Several windows' rows as one: each window's users are groups of their own (a user's lists of two windows
    are two queries)."""
    if len(windows) == 1:
        return windows[0]
    offsets = np.cumsum([0] + [len(w.users) for w in windows[:-1]])
    first = windows[0].data
    data = FeaturesData(num_feature_data=np.vstack([w.data.num_feature_data for w in windows]),
                        cat_feature_data=np.vstack([w.data.cat_feature_data for w in windows]),
                        num_feature_names=first.num_feature_names, cat_feature_names=first.cat_feature_names)
    return LabelRows(data, np.concatenate([w.labels for w in windows]), np.concatenate([w.gain for w in windows]),
                     np.concatenate([w.group + o for w, o in zip(windows, offsets, strict=True)]),
                     np.concatenate([w.users for w in windows]))


def fit_ranker(model: CandidateModel, assembler: FeatureAssembler, labels_frame: pd.DataFrame,
               cands: CandidateSettings, settings: RankerSettings, seed: int = 42) -> RankerFit:
    """The reranker of one label window's candidates."""
    return fit_ranker_on([label_rows(model, assembler, labels_frame, cands, settings, seed)], settings, seed)


def fit_ranker_on(windows: list[LabelRows], settings: RankerSettings, seed: int = 42) -> RankerFit:
    """The reranker of one or more label windows' rows. A share of the users validates (early stopping), with all
    their windows' rows: a user's earlier window in training would tell the validation about its later one."""
    rows = _concat(windows)
    data, labels, gain, group = rows.data, rows.labels, rows.gain, rows.group
    ids = np.unique(rows.users)
    valid_ids = ids[np.random.default_rng([seed, 1]).random(len(ids)) < settings.validation_share]
    is_valid = np.isin(rows.users, valid_ids)[group]
    train, valid = np.nonzero(~is_valid)[0], np.nonzero(is_valid)[0]
    log.info("reranker data: %d rows (%d positive) for %d users in %d window(s); %d train / %d validation users",
             len(labels), int((labels > 0).sum()), len(np.unique(group)), len(windows),
             len(np.unique(group[train])), len(np.unique(group[valid])))

    def pool(part: np.ndarray) -> Pool:
        # ranking losses take the gain as a graded label; Logloss wants 0/1 labels, so there it is a weight
        if settings.loss == "Logloss":
            return Pool(_take(data, part), label=labels[part], group_id=group[part], weight=gain[part])
        return Pool(_take(data, part), label=labels[part] * gain[part], group_id=group[part])

    params = {
        "loss_function": settings.loss,
        "eval_metric": "NDCG:top=10" if settings.loss != "Logloss" else "AUC",
        "iterations": settings.iterations,
        "learning_rate": settings.learning_rate,
        "depth": settings.depth,
        "early_stopping_rounds": settings.early_stopping_rounds,
        "thread_count": settings.threads,
        "random_seed": seed,
        # CatBoost prints to stdout: silent when this module's logs are off (the tuner's trials)
        **({"verbose": max(settings.iterations // 10, 1)} if log.isEnabledFor(logging.INFO)
           else {"logging_level": "Silent"}),
        "allow_writing_files": False,
    }
    ranker = CatBoost(params)
    ranker.fit(pool(train), eval_set=pool(valid), use_best_model=True)
    importance = dict(zip(ranker.feature_names_, map(float, ranker.get_feature_importance(type="PredictionValuesChange")),
                          strict=True))
    return RankerFit(ranker, len(labels), len(np.unique(group[train])), len(np.unique(group[valid])),
                     int(ranker.get_best_iteration() or 0), ranker.get_best_score(),
                     dict(sorted(importance.items(), key=lambda kv: -kv[1])))
