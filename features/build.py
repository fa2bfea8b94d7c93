"""Offline feature computation: user and item tables as of a point in time.

Everything here is computed from interactions strictly before ``as_of`` (rows at or after it are dropped
here, not trusted to the caller), so the reranker's training features can never see its labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import Columns
from recsys.data.schema import split_genres

MAX_GENRES = 20
DAY = np.timedelta64(1, "D")


@dataclass
class FeatureTables:
    users: pd.DataFrame
    items: pd.DataFrame
    genres: list[str]
    as_of: pd.Timestamp


def genre_vocabulary(items: pd.DataFrame, limit: int = MAX_GENRES) -> list[str]:
    """The most common genres of the catalogue, most common first (ties by name, so it is deterministic)."""
    counts = pd.Series([g for gs in split_genres(items[Columns.Genres]) for g in gs]).value_counts()
    table = counts.rename_axis("genre").reset_index().sort_values(["count", "genre"], ascending=[False, True])
    return [str(g) for g in table["genre"].head(limit)]


def item_genre_matrix(items: pd.DataFrame, genres: list[str]) -> np.ndarray:
    """Items x genres, rows summing to 1 over the vocabulary (0 for items with none of them)."""
    index = {g: j for j, g in enumerate(genres)}
    matrix = np.zeros((len(items), len(genres)), dtype=np.float32)
    for i, gs in enumerate(split_genres(items[Columns.Genres])):
        cols = [index[g] for g in gs if g in index]
        if cols:
            matrix[i, cols] = 1.0 / len(cols)
    return matrix


def _safe_name(genre: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in genre.lower()).strip("_") or "other"


def build_feature_tables(interactions: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame,
                         as_of: pd.Timestamp, dismissed: pd.DataFrame | None = None) -> FeatureTables:
    """User and item features from interactions before ``as_of``; static attributes for every known id. With
    titles ``dismissed`` (rated below the positive threshold), each item's and user's share of dismissed ratings
    too: how often a title disappoints those who pick it, how hard a user is to please."""
    as_of = pd.Timestamp(as_of)
    history = interactions[interactions[Columns.Datetime] < as_of]
    genres = genre_vocabulary(items)
    names = [_safe_name(g) for g in genres]
    genre_matrix = item_genre_matrix(items, genres)

    item_ids = items[Columns.Item].to_numpy()
    item_pos = pd.Index(item_ids).get_indexer(history[Columns.Item].to_numpy())
    known_item = item_pos >= 0
    hist = history[known_item]
    item_pos = item_pos[known_item]

    item_feats = _item_features(hist, items, item_pos, genre_matrix, names, as_of)
    user_feats = _user_features(hist, users, items, item_pos, genre_matrix, names, as_of, item_feats)
    if dismissed is not None and len(dismissed):
        _add_dismissed_shares(item_feats, user_feats, hist, dismissed[dismissed[Columns.Datetime] < as_of])
    return FeatureTables(users=user_feats, items=item_feats, genres=names, as_of=as_of)


def _add_dismissed_shares(item_feats: pd.DataFrame, user_feats: pd.DataFrame, liked: pd.DataFrame,
                          dismissed: pd.DataFrame) -> None:
    """``i_dismissed_share`` and ``u_dismissed_share``: dismissed / (liked + dismissed) ratings (NaN: none)."""
    for frame, column, name in ((item_feats, Columns.Item, "i_dismissed_share"),
                                (user_feats, Columns.User, "u_dismissed_share")):
        ids = pd.Index(frame[column].to_numpy())
        likes = np.bincount(ids.get_indexer(liked[column].to_numpy()) + 1, minlength=len(ids) + 1)[1:]
        dislikes = np.bincount(ids.get_indexer(dismissed[column].to_numpy()) + 1, minlength=len(ids) + 1)[1:]
        total = likes + dislikes
        frame[name] = np.where(total > 0, dislikes / np.maximum(total, 1), np.nan).astype(np.float32)


def _days_before(as_of: pd.Timestamp, dates: pd.Series) -> np.ndarray:
    return ((as_of - dates).to_numpy() / DAY).astype(np.float32)


def _item_features(hist: pd.DataFrame, items: pd.DataFrame, item_pos: np.ndarray, genre_matrix: np.ndarray,
                   genres: list[str], as_of: pd.Timestamp) -> pd.DataFrame:
    n = len(items)
    age_days = _days_before(as_of, hist[Columns.Datetime])
    count = np.bincount(item_pos, minlength=n).astype(np.float32)
    count_7d = np.bincount(item_pos[age_days <= 7], minlength=n).astype(np.float32)
    count_30d = np.bincount(item_pos[age_days <= 30], minlength=n).astype(np.float32)
    pct_sum = np.bincount(item_pos, weights=hist[Columns.WatchedPct].to_numpy(), minlength=n)
    first_seen = np.full(n, np.nan, dtype=np.float32)
    last_seen = np.full(n, np.nan, dtype=np.float32)
    if len(item_pos):
        np.fmax.at(first_seen, item_pos, age_days)
        np.fmin.at(last_seen, item_pos, age_days)
    genre_lists = split_genres(items[Columns.Genres])
    out = pd.DataFrame({
        Columns.Item: items[Columns.Item].to_numpy(np.int64),
        Columns.ContentType: items[Columns.ContentType].to_numpy(str),
        Columns.AgeRating: items[Columns.AgeRating].to_numpy(str),
        "main_genre": [gs[0] if gs else "none" for gs in genre_lists],
        Columns.ReleaseYear: items[Columns.ReleaseYear].to_numpy(np.float32),
        Columns.ForKids: items[Columns.ForKids].to_numpy(np.float32),
        "n_genres": np.array([len(gs) for gs in genre_lists], dtype=np.float32),
        "i_pop": np.log1p(count),
        "i_pop_7d": np.log1p(count_7d),
        "i_pop_30d": np.log1p(count_30d),
        "i_trend": (count_7d + 1.0) / (count_30d / 30.0 * 7.0 + 1.0),
        "i_mean_pct": np.where(count > 0, pct_sum / np.maximum(count, 1), np.nan).astype(np.float32),
        "i_days_since_first": first_seen,
        "i_days_since_last": last_seen,
    })
    out["i_pop_rank"] = out["i_pop"].rank(pct=True, ascending=False).astype(np.float32)
    for j, g in enumerate(genres):
        out[f"i_genre_{g}"] = genre_matrix[:, j]
    return out


def _user_features(hist: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, item_pos: np.ndarray,
                   genre_matrix: np.ndarray, genres: list[str], as_of: pd.Timestamp,
                   item_feats: pd.DataFrame) -> pd.DataFrame:
    # Users seen in the log but absent from the users table still get behavioural features.
    user_ids = np.union1d(users[Columns.User].to_numpy(np.int64), hist[Columns.User].to_numpy(np.int64))
    n = len(user_ids)
    user_pos = np.searchsorted(user_ids, hist[Columns.User].to_numpy(np.int64))
    age_days = _days_before(as_of, hist[Columns.Datetime])
    count = np.bincount(user_pos, minlength=n).astype(np.float32)
    denom = np.maximum(count, 1.0)

    def mean_of(values: np.ndarray) -> np.ndarray:
        return np.where(count > 0, np.bincount(user_pos, weights=values, minlength=n) / denom, np.nan).astype(np.float32)

    first_seen = np.full(n, np.nan, dtype=np.float32)
    last_seen = np.full(n, np.nan, dtype=np.float32)
    if len(user_pos):
        np.fmax.at(first_seen, user_pos, age_days)
        np.fmin.at(last_seen, user_pos, age_days)
    active_days = hist.assign(_u=user_pos).drop_duplicates(["_u", Columns.Datetime])["_u"].to_numpy()
    user_items = sp.csr_matrix((np.ones(len(user_pos), dtype=np.float32), (user_pos, item_pos)),
                               shape=(n, len(items)))
    genre_share = np.asarray(user_items @ genre_matrix) / denom[:, None]

    static = users.set_index(Columns.User).reindex(user_ids)
    out = pd.DataFrame({
        Columns.User: user_ids,
        Columns.Age: static[Columns.Age].fillna("unknown").to_numpy(str),
        Columns.Income: static[Columns.Income].fillna("unknown").to_numpy(str),
        Columns.Sex: static[Columns.Sex].fillna("unknown").to_numpy(str),
        Columns.KidsFlg: static[Columns.KidsFlg].fillna(0).to_numpy(np.float32),
        "u_n_items": count,
        "u_n_14d": np.bincount(user_pos[age_days <= 14], minlength=n).astype(np.float32),
        "u_active_days": np.bincount(active_days, minlength=n).astype(np.float32),
        "u_total_dur": np.log1p(np.bincount(user_pos, weights=hist[Columns.Duration].to_numpy(), minlength=n)).astype(np.float32),
        "u_mean_pct": mean_of(hist[Columns.WatchedPct].to_numpy(np.float64)),
        "u_days_since_first": first_seen,
        "u_days_since_last": last_seen,
        "u_share_kids": mean_of(items[Columns.ForKids].to_numpy(np.float64)[item_pos]),
        "u_share_series": mean_of((items[Columns.ContentType].to_numpy(str) == "series")[item_pos].astype(np.float64)),
        "u_mean_item_pop": mean_of(item_feats["i_pop"].to_numpy(np.float64)[item_pos]),
        "u_mean_release_year": mean_of(np.nan_to_num(items[Columns.ReleaseYear].to_numpy(np.float64), nan=2000.0)[item_pos]),
    })
    for j, g in enumerate(genres):
        out[f"u_genre_{g}"] = genre_share[:, j].astype(np.float32)
    return out
