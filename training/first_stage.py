"""First level: fit LightFM on the known interactions and export a pickle-free :class:`CandidateModel`."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys.columns import Columns
from recsys.core.ann import build_index
from recsys.core.candidates import CandidateModel, kids_segment_key, segment_key
from recsys.data.schema import no_dismissed, split_genres
from recsys.features.store import UNKNOWN_CATEGORY
from recsys.lookup import find_sorted
from recsys.settings import CandidateSettings, LightFMSettings
from recsys.training.baselines import ease_weights, seen_matrix
from recsys.training.epochs import EpochSearch, LightFMState, ValidationScorer, fit_lightfm, warm_started

log = logging.getLogger(__name__)

COOC_NEIGHBOURS = 30
SEGMENT_ITEMS = 200
MIN_SEGMENT_USERS = 20
DENSE_COOC_ITEMS = 50_000


def _one_hot_features(ids: np.ndarray, columns: dict[str, list[list[str]]]) -> tuple[sp.csr_matrix, np.ndarray]:
    """Identity plus one-hot attribute features, rows normalised to sum 1 (LightFM's convention), and the
    features' names (``id:<id>``, ``<column>:<value>``)."""
    n = len(ids)
    vocab: dict[str, int] = {}
    rows, cols = list(range(n)), list(range(n))
    for name, values in columns.items():
        for r, tokens in enumerate(values):
            for token in tokens:
                cols.append(n + vocab.setdefault(f"{name}:{token}", len(vocab)))
                rows.append(r)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n + len(vocab)))
    norms = np.asarray(matrix.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / norms).astype(np.float32) @ matrix), np.concatenate([_id_names(ids),
                                                                                            np.array(list(vocab), str)])


def _id_names(ids: np.ndarray) -> np.ndarray:
    return np.char.add("id:", ids.astype(str))


def _user_features(user_ids: np.ndarray, users: pd.DataFrame) -> tuple[sp.csr_matrix, np.ndarray]:
    static = users.set_index(Columns.User).reindex(user_ids)
    demographics = (Columns.Age, Columns.Sex, Columns.Income, Columns.KidsFlg)
    columns = {c: [[str(v)] if pd.notna(v) else [] for v in static[c]] for c in demographics}
    return _one_hot_features(user_ids, columns)


def _item_features(items: pd.DataFrame) -> tuple[sp.csr_matrix, np.ndarray]:
    columns = {
        "genre": split_genres(items[Columns.Genres]),
        "type": [[v] for v in items[Columns.ContentType]],
        "rating": [[v] if v else [] for v in items[Columns.AgeRating]],
    }
    return _one_hot_features(items[Columns.Item].to_numpy(), columns)


def _cooccurrence(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbours of each item by cosine similarity of their audiences, in blocks to bound memory. Rows with
    fewer than k neighbours are padded with item 0 at similarity 0 (a zero adds nothing to a co-occurrence score).

    Up to DENSE_COOC_ITEMS items a block is a dense items x catalogue matrix; past that only the pairs that share a
    user are kept (a million-item catalogue's dense block would be 4 GB, and almost all zeros)."""
    n_items = matrix.shape[1]
    k = min(k, max(n_items - 1, 1))
    dense = n_items <= DENSE_COOC_ITEMS
    by_item = matrix.T.tocsr()
    norms = np.sqrt(np.asarray(by_item.sum(axis=1)).ravel()).astype(np.float32)
    norms[norms == 0] = 1.0
    indices = np.zeros((n_items, k), dtype=np.int32)
    scores = np.zeros((n_items, k), dtype=np.float32)
    block = 1024 if dense else 16_384
    for lo in tqdm(range(0, n_items, block), desc="co-occurrence", unit="block", leave=False,
                   disable=n_items < 100_000):
        hi = min(lo + block, n_items)
        sims = (by_item[lo:hi] @ matrix).tocoo()
        keep = sims.col != sims.row + lo
        rows, cols = sims.row[keep], sims.col[keep]
        values = (sims.data[keep] / (norms[lo + rows] * norms[cols])).astype(np.float32)
        if dense:
            full = np.zeros((hi - lo, n_items), dtype=np.float32)
            full[rows, cols] = values
            top = np.argpartition(-full, k - 1, axis=1)[:, :k]
            indices[lo:hi] = top
            scores[lo:hi] = np.take_along_axis(full, top, axis=1)
        else:
            order = np.lexsort((-values, rows))
            rows, cols, values = rows[order], cols[order], values[order]
            rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
            first = rank < k
            indices[lo + rows[first], rank[first]] = cols[first]
            scores[lo + rows[first], rank[first]] = values[first]
    return indices, scores


def _popular(item_pos: np.ndarray, recent: np.ndarray, n_items: int) -> np.ndarray:
    """Items by recent count, ties broken by all-time count."""
    recent_counts = np.bincount(item_pos[recent], minlength=n_items)
    total_counts = np.bincount(item_pos, minlength=n_items)
    return np.lexsort((-total_counts, -recent_counts)).astype(np.int32)


def _segments(known: pd.DataFrame, users: pd.DataFrame, item_pos: np.ndarray, recent: np.ndarray,
              n_items: int) -> tuple[np.ndarray, np.ndarray]:
    static = users.set_index(Columns.User).reindex(known[Columns.User].to_numpy())
    age, sex = static[Columns.Age].fillna(UNKNOWN_CATEGORY), static[Columns.Sex].fillna(UNKNOWN_CATEGORY)
    full = [segment_key(a, s, k) for a, s, k in zip(age, sex, static[Columns.KidsFlg].fillna(0), strict=True)]
    kids = [kids_segment_key(k) for k in static[Columns.KidsFlg].fillna(0)]
    user_of = known[Columns.User].to_numpy()
    keys, lists = [], []
    for labels in (np.array(full), np.array(kids)):
        for key in np.unique(labels):
            in_segment = labels == key
            if len(np.unique(user_of[in_segment])) < MIN_SEGMENT_USERS:
                continue
            keys.append(key)
            lists.append(_popular(item_pos[in_segment], recent[in_segment], n_items)[:SEGMENT_ITEMS])
    width = min(SEGMENT_ITEMS, n_items)
    return np.array(keys, dtype=str), np.array(lists, dtype=np.int32).reshape(len(keys), width)


def _profiles(users: pd.DataFrame, with_history: np.ndarray) -> dict[str, np.ndarray]:
    """Demographics of the users table's users without history: serving looks them up to give such a user their
    segment's list (the users table is normalised, so every field is filled). And the table's labels, which
    serving accepts in ``user_features``."""
    idle = users[~users[Columns.User].isin(with_history)].sort_values(Columns.User)
    return {"profile_user_ids": idle[Columns.User].to_numpy(np.int64),
            "profile_age": idle[Columns.Age].to_numpy(str),
            "profile_sex": idle[Columns.Sex].to_numpy(str),
            "profile_kids_flg": idle[Columns.KidsFlg].to_numpy(np.int8),
            # "unknown" is also what users missing from the table are keyed on
            "label_age": np.union1d(users[Columns.Age].to_numpy(str), [UNKNOWN_CATEGORY]),
            "label_sex": np.union1d(users[Columns.Sex].to_numpy(str), [UNKNOWN_CATEGORY])}


def fit_candidate_model(known: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, as_of: pd.Timestamp,
                        lfm: LightFMSettings, cands: CandidateSettings, seed: int = 42,
                        validation: pd.DataFrame | None = None, k: int = 10, warm: LightFMState | None = None,
                        dismissed: pd.DataFrame | None = None) -> tuple[CandidateModel, EpochSearch | None, LightFMState]:
    """Fit LightFM on ``known`` (interactions before ``as_of``) and package every candidate source; also returns
    the fitted LightFM, for a later fit to start from. ``dismissed`` (titles rated below the positive threshold,
    already cut to what was known then) are kept to be excluded, as the history is, and learnt from by nothing.

    With a ``validation`` window (and ``lfm.early_stopping``), the epoch count is the one that scored best on it
    (see :mod:`training.epochs`), returned with the scores; without, LightFM trains ``lfm.epochs`` epochs, from
    ``warm``'s state if given (:func:`training.epochs.warm_started`).
    """
    known = known[known[Columns.Datetime] < as_of]
    extra_items = np.setdiff1d(known[Columns.Item].unique(), items[Columns.Item].to_numpy())
    if len(extra_items):
        log.warning("%d item ids in the interactions are missing from the items table; using them without features",
                    len(extra_items))
        items = pd.concat([items, pd.DataFrame({Columns.Item: extra_items, Columns.Genres: "", Columns.ContentType: "",
                                                Columns.AgeRating: ""})])
    item_ids = items[Columns.Item].to_numpy(np.int64)
    user_ids = np.unique(known[Columns.User].to_numpy(np.int64))
    order = np.lexsort((known[Columns.Datetime].to_numpy(), np.searchsorted(user_ids, known[Columns.User].to_numpy())))
    known = known.iloc[order]
    user_pos = np.searchsorted(user_ids, known[Columns.User].to_numpy())
    item_pos = pd.Index(item_ids).get_indexer(known[Columns.Item].to_numpy())
    matrix = sp.csr_matrix((np.ones(len(known), np.float32), (user_pos, item_pos)), shape=(len(user_ids), len(item_ids)))

    if lfm.use_features:
        user_features, user_names = _user_features(user_ids, users)
        item_features, item_names = _item_features(items)
    else:  # LightFM's own identity features
        user_features, user_names, item_features, item_names = None, _id_names(user_ids), None, _id_names(item_ids)
    excluded = _dismissed_matrix(dismissed, as_of, user_ids, pd.Index(item_ids))
    scorer = None if validation is None else ValidationScorer.for_window(
        validation, user_ids, pd.Index(item_ids), matrix + excluded if excluded.nnz else matrix, user_features,
        item_features, cands.n_lightfm, k, lfm.early_stopping_users, seed)
    start = None if warm is None else warm_started(warm, user_names, item_names, lfm, seed)
    model, epochs = fit_lightfm(matrix.tocoo(), user_features, item_features, lfm, seed, scorer, start)
    user_bias, user_emb = model.get_user_representations(user_features)
    item_bias, item_emb = model.get_item_representations(item_features)
    del user_bias  # a per-user constant does not change that user's ranking

    item_vectors = np.hstack([item_emb, item_bias[:, None]]).astype(np.float32)
    user_vectors = np.hstack([user_emb, np.ones((len(user_ids), 1))]).astype(np.float32)
    index = None
    if len(item_ids) >= cands.ann_min_items:  # too many items to score them all per request (recsys/core/ann.py)
        sample = np.random.default_rng(seed).choice(len(user_ids), min(cands.ann_recall_users, len(user_ids)),
                                                    replace=False)
        index = build_index(item_vectors, user_vectors[sample], cands.ann_nprobe, cands.ann_target_recall, seed,
                            lfm.threads)

    recent = (as_of - known[Columns.Datetime]).dt.days.to_numpy() <= cands.popularity_days
    segment_keys, segment_popular = _segments(known, users, item_pos, recent, len(item_ids))
    cooc_indices, cooc_scores = _cooccurrence(matrix, COOC_NEIGHBOURS)
    candidates = CandidateModel(
        user_ids=user_ids,
        item_ids=item_ids,
        user_vectors=user_vectors,
        item_vectors=item_vectors,
        seen_indptr=np.concatenate([[0], np.cumsum(np.bincount(user_pos, minlength=len(user_ids)))]).astype(np.int64),
        seen_indices=item_pos.astype(np.int32),
        popular=_popular(item_pos, recent, len(item_ids)),
        segment_keys=segment_keys,
        segment_popular=segment_popular,
        cooc_indices=cooc_indices,
        cooc_scores=cooc_scores,
        **_profiles(users, user_ids),
        mix=np.array(cands.mix, np.int64),
        dismissed_indptr=excluded.indptr.astype(np.int64) if excluded.nnz else np.zeros(0, np.int64),
        dismissed_indices=excluded.indices.astype(np.int32),
        index=index,
    )
    return candidates, epochs, LightFMState(model, user_names, item_names)


def _dismissed_matrix(dismissed: pd.DataFrame | None, as_of: pd.Timestamp, user_ids: np.ndarray,
                      items: pd.Index) -> sp.csr_matrix:
    """users x items, 1 where the user dismissed the title before ``as_of`` (users and titles the fit knows)."""
    dismissed = no_dismissed() if dismissed is None else dismissed[dismissed[Columns.Datetime] < as_of]
    rows, known = find_sorted(user_ids, dismissed[Columns.User].to_numpy(np.int64))
    cols = items.get_indexer(pd.Index(dismissed[Columns.Item].to_numpy()))
    keep = known & (cols >= 0)
    matrix = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])),
                           shape=(len(user_ids), len(items)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def ease_fits(model: CandidateModel, cands: CandidateSettings) -> bool:
    """Whether the catalogue is small enough for EASE's items x items weights in the candidate model."""
    return len(model.item_ids) <= cands.ease_max_items


def with_ease(model: CandidateModel, l2: float | None, cands: CandidateSettings) -> CandidateModel:
    """``model`` with EASE's item-item weights (L2 weight ``l2``, learnt from the model's own history) as a candidate
    source and reranker feature; unchanged without a weight or for a catalogue above ``cands.ease_max_items``."""
    if l2 is None or not ease_fits(model, cands):
        return model
    log.info("EASE weights for %d items (L2 %.4g) in the candidate model", len(model.item_ids), l2)
    return replace(model, ease_weights=ease_weights(seen_matrix(model), l2))
