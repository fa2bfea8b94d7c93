"""Second level at run time: assemble the reranker's features for candidates and score them with CatBoost.

Training, offline evaluation and serving all build their features in :meth:`FeatureAssembler.columns`, so the model
never sees a feature computed one way in training and another way in serving. Per call the work is array indexing
into the online feature tables plus two row-wise dot products; no file reads.

Training fits on :meth:`FeatureAssembler.assemble`'s ``FeaturesData`` (categories as strings). A large batch is
scored from the same values as :meth:`FeatureAssembler.frame`, a DataFrame whose categorical columns are pandas
categoricals over each table's vocabulary: CatBoost then hashes each of the few dozen labels once per call, where
from strings it hashes every row's (32 users' ~4,400 candidates: 5.0 -> 3.1 CPU ms per call). The scores are the
same. CatBoost reads a DataFrame a column at a time in Python, ~0.6 ms more per call whatever its length, so
batches of fewer than :data:`FRAME_FROM_ROWS` candidates (about 10 users) stay strings (measured in process on
the default pair: the same at 16 users, DataFrame dearer below).

The score a list is ranked by is CatBoost's minus a popularity penalty, ``penalty * percentile`` of the title's
views in the catalogue (:func:`view_percentile`, from the feature store's ``i_pop``): training
chooses the penalty for the model pair it is served with (see :mod:`recsys.training.penalty`) and stores it in the
CatBoost model's own metadata, so the file that is evaluated and served carries it; a model saved without it ranks
by CatBoost's score alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import CatBoost, CatBoostError, FeaturesData
from scipy.stats import rankdata

from recsys.core.candidates import CANDIDATE_FEATURES, LATER_FEATURES, CandidateBatch
from recsys.features.store import OnlineFeatureTable

# user x item features; "item_age_at_last_visit": days the title had been in the log when the user was last active
# (negative: it arrived after), as the per-user split holds out each user's latest titles at their own time, not
# at the log's end. A reranker trained before a feature joined the list is served without it.
CROSS_FEATURES = ["genre_affinity", "year_gap", "item_age_at_last_visit", *LATER_FEATURES]
FRAME_FROM_ROWS = 1_500  # from this many candidates on, CatBoost scores a DataFrame of categoricals faster
PENALTY_KEY = "popularity_penalty"  # in the CatBoost model's metadata (saved in its .cbm file)


@dataclass
class FeatureAssembler:
    users: OnlineFeatureTable
    items: OnlineFeatureTable
    item_ids: np.ndarray  # the candidate model's item order
    cross: tuple[str, ...] = tuple(CROSS_FEATURES)  # those the reranker was trained on, in this order

    def __post_init__(self) -> None:
        rows, _ = self.items.rows(self.item_ids)
        self._user_num = [i for i, n in enumerate(self.users.numeric_names) if not n.startswith("u_genre_")]
        self._item_num = [i for i, n in enumerate(self.items.numeric_names) if not n.startswith("i_genre_")]
        genres = [n.removeprefix("u_genre_") for n in self.users.numeric_names if n.startswith("u_genre_")]
        # Item features re-indexed once into the candidate model's item order: a request only gathers rows.
        self._item_numeric = self.items.numeric[rows][:, self._item_num]
        self._item_codes = self.items.codes[rows]
        # object dtype: CatBoost reads each label with a Python call, and pandas' Arrow strings make each ~10x dearer
        self._user_categories = pd.CategoricalDtype(pd.Index(self.users.vocabulary, dtype=object))
        self._item_categories = pd.CategoricalDtype(pd.Index(self.items.vocabulary, dtype=object))
        self._frame_columns = pd.Index(self.feature_names, dtype=object)
        self._item_genres = self.items.numeric[rows][:, [self.items.numeric_names.index(f"i_genre_{g}") for g in genres]]
        self._item_year = self.items.numeric[rows][:, self.items.numeric_names.index("release_year")]
        self._user_genre_cols = [self.users.numeric_names.index(f"u_genre_{g}") for g in genres]
        self._user_year_col = self.users.numeric_names.index("u_mean_release_year")
        self._item_first = self.items.numeric[rows][:, self.items.numeric_names.index("i_days_since_first")]
        self._user_last_col = self.users.numeric_names.index("u_days_since_last")
        # what the popularity penalty multiplies, in the candidate model's order
        self.item_popularity = view_percentile(self.items.numeric[rows][:, self.items.numeric_names.index("i_pop")])

    @property
    def numeric_names(self) -> list[str]:
        return (CANDIDATE_FEATURES + [self.users.numeric_names[i] for i in self._user_num]
                + [self.items.numeric_names[i] for i in self._item_num] + list(self.cross))

    @property
    def categorical_names(self) -> list[str]:
        return self.users.categorical_names + self.items.categorical_names

    @property
    def feature_names(self) -> list[str]:
        return self.numeric_names + self.categorical_names

    def columns(self, user_ids: np.ndarray, batch: CandidateBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each candidate's features: numbers float32 (m, len(numeric_names)), and the user's and the item's
        categories as codes into their table's vocabulary, int32 (m, user categories) and (m, item categories)."""
        user_rows, _ = self.users.rows(user_ids)
        owner, items = batch.owner, batch.items
        user_numeric = self.users.numeric[user_rows][owner]
        cross: dict[str, Callable[[], np.ndarray]] = {
            "genre_affinity": lambda: np.einsum("ij,ij->i", user_numeric[:, self._user_genre_cols],
                                                self._item_genres[items]),
            "year_gap": lambda: self._item_year[items] - user_numeric[:, self._user_year_col],
            "item_age_at_last_visit": lambda: self._item_first[items] - user_numeric[:, self._user_last_col],
            **{name: functools.partial(batch.column, name) for name in LATER_FEATURES},
        }
        numeric = np.hstack([
            batch.features[:, :len(CANDIDATE_FEATURES)], user_numeric[:, self._user_num], self._item_numeric[items],
            *(cross[name]()[:, None] for name in self.cross),
        ]).astype(np.float32, copy=False)
        return numeric, self.users.codes[user_rows][owner], self._item_codes[items]

    def assemble(self, user_ids: np.ndarray, batch: CandidateBatch) -> FeaturesData:
        """The features as CatBoost's ``FeaturesData``, categories as strings (what training fits on)."""
        numeric, user_codes, item_codes = self.columns(user_ids, batch)
        categorical = np.hstack([self.users.vocabulary[user_codes], self.items.vocabulary[item_codes]])
        return FeaturesData(num_feature_data=numeric, cat_feature_data=categorical,
                            num_feature_names=self.numeric_names, cat_feature_names=self.categorical_names)

    def frame(self, user_ids: np.ndarray, batch: CandidateBatch) -> pd.DataFrame:
        """The same features as a DataFrame in :attr:`feature_names` order, categories as pandas categoricals
        over each table's vocabulary (what scoring takes: see the module's docstring)."""
        numeric, user_codes, item_codes = self.columns(user_ids, batch)
        data: dict[str, object] = dict(zip(self.numeric_names, numeric.T, strict=True))
        for codes, names, dtype in ((user_codes, self.users.categorical_names, self._user_categories),
                                    (item_codes, self.items.categorical_names, self._item_categories)):
            data |= {name: pd.Categorical.from_codes(codes[:, j], dtype=dtype) for j, name in enumerate(names)}
        return pd.DataFrame(data, columns=self._frame_columns)


def load_catboost(model_file: Path) -> CatBoost:
    model = CatBoost()
    try:
        model.load_model(str(model_file), format="cbm")
    except CatBoostError as exc:  # CatBoost's message does not name the file
        raise ValueError(f"cannot read {Path(model_file).name} ({exc})") from exc
    return model


def view_percentile(log_views: np.ndarray) -> np.ndarray:
    """float32: each title's share of the catalogue watched less than or as much as it (ties share their average
    rank): 1 for the most watched title, near 0 for the least. Unlike log(1 + views) it spreads the long tail,
    which a penalty then orders too (at Kion's size: more titles shown for the same NDCG)."""
    return (rankdata(log_views, method="average") / max(len(log_views), 1)).astype(np.float32)


def popularity_penalty(model: CatBoost) -> float:
    """The popularity penalty stored in ``model`` (0 for a model saved without one)."""
    return float(model.get_metadata().get(PENALTY_KEY, 0.0))


def set_popularity_penalty(model: CatBoost, penalty: float) -> None:
    model.get_metadata()[PENALTY_KEY] = repr(float(penalty))


@dataclass
class Reranker:
    model: CatBoost
    assembler: FeatureAssembler

    def __post_init__(self) -> None:
        self.penalty = popularity_penalty(self.model)  # read once: a request only subtracts

    @classmethod
    def load(cls, model_file: Path, assembler: FeatureAssembler) -> Reranker:
        model = load_catboost(model_file)
        assembler = replace(assembler, cross=tuple(n for n in CROSS_FEATURES if n in model.feature_names_))
        if list(model.feature_names_) != assembler.feature_names:
            raise ValueError(f"{model_file} expects features {model.feature_names_}, the feature store gives "
                             f"{assembler.feature_names}")
        return cls(model, assembler)

    def score(self, user_ids: np.ndarray, batch: CandidateBatch, threads: int = 1) -> np.ndarray:
        """What each candidate is ranked by: CatBoost's score less the model's popularity penalty."""
        return self.penalised(self.raw_score(user_ids, batch, threads), batch.items, self.penalty)

    def raw_score(self, user_ids: np.ndarray, batch: CandidateBatch, threads: int = 1) -> np.ndarray:
        """CatBoost's score of each candidate."""
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32)
        features = self.assembler.frame if len(batch) >= FRAME_FROM_ROWS else self.assembler.assemble
        data = features(user_ids, batch)
        return self.model.predict(data, prediction_type="RawFormulaVal", thread_count=threads).astype(np.float32)

    def penalised(self, raw: np.ndarray, items: np.ndarray, penalty: float) -> np.ndarray:
        """``raw`` scores of candidate ``items`` less ``penalty`` x the percentile of each one's views."""
        if penalty == 0:
            return raw
        return (raw - np.float32(penalty) * self.assembler.item_popularity[items]).astype(np.float32, copy=False)


def top_k_per_user(owner: np.ndarray, items: np.ndarray, scores: np.ndarray, n_users: int,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` items of each batch user from flat (owner, item, score) rows; padded with -1 / NaN."""
    order = np.lexsort((-scores, owner))
    owner, items, scores = owner[order], items[order], scores[order]
    starts = np.searchsorted(owner, np.arange(n_users))
    position = np.arange(len(owner)) - starts[owner]
    keep = position < k
    top_items = np.full((n_users, k), -1, dtype=np.int64)
    top_scores = np.full((n_users, k), np.nan, dtype=np.float32)
    top_items[owner[keep], position[keep]] = items[keep]
    top_scores[owner[keep], position[keep]] = scores[keep]
    return top_items, top_scores
