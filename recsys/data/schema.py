"""The three tables every dataset is turned into, in the schema of the public Kion dataset.

Loaders (synthetic, Kion, MovieLens) all return a :class:`Dataset`; everything downstream (features, training,
serving) only ever sees this shape, so a new source needs a loader and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import Columns

INTERACTION_COLUMNS = list(Columns.Interactions)
USER_COLUMNS = list(Columns.Users)
ITEM_COLUMNS = list(Columns.Items)
GENRE_SEPARATOR = ", "
TABLES = ("interactions", "users", "items")

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data; the message names the file (or table) and what to fix."""


@dataclass
class Dataset:
    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    # Titles a user rated below the positive threshold (MovieLens): seen, so never recommended to them, but not
    # positives, so no model learns from them. Empty for logs of watches.
    dismissed: pd.DataFrame = field(default_factory=lambda: no_dismissed())

    def fingerprint(self) -> str:
        """Content hash of the tables: ties trained models and feature stores to the data they came from."""
        h = hashlib.sha256()
        # without dismissed titles, the three tables' hash as before they existed (the training cache's keys)
        for frame in (self.interactions, self.users, self.items, *([self.dismissed] if len(self.dismissed) else [])):
            h.update(",".join(frame.columns).encode())
            h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, directory: Path) -> None:
        """The tables as Parquet files and the rest as JSON (the training cache's copy of a dataset)."""
        for name in (*TABLES, "dismissed"):
            getattr(self, name).to_parquet(directory / f"{name}.parquet", index=False)
        (directory / "dataset.json").write_text(json.dumps({"name": self.name, "meta": self.meta}))

    @classmethod
    def load(cls, directory: Path) -> Dataset:
        info = json.loads((directory / "dataset.json").read_text())
        tables = {name: pd.read_parquet(directory / f"{name}.parquet") for name in TABLES}
        dismissed = directory / "dismissed.parquet"  # absent from copies saved before it existed
        return cls(name=info["name"], meta=info["meta"], **tables,
                   dismissed=pd.read_parquet(dismissed) if dismissed.exists() else no_dismissed())

    def summary(self) -> dict[str, Any]:
        inter = self.interactions
        return {
            "dataset": self.name,
            "interactions": len(inter),
            "users": int(inter[Columns.User].nunique()),
            "items": int(inter[Columns.Item].nunique()),
            "users_table": len(self.users),
            "items_table": len(self.items),
            "start": str(inter[Columns.Datetime].min().date()) if len(inter) else None,
            "end": str(inter[Columns.Datetime].max().date()) if len(inter) else None,
            **({"dismissed": len(self.dismissed)} if len(self.dismissed) else {}),
        }


def _require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; found {list(frame.columns)}. "
            "Check the file's header and separator."
        )


def _integer_ids(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    values = frame[column]
    if values.isna().any():
        raise DataError(f"{source}: column '{column}' has {int(values.isna().sum())} empty value(s)")
    if pd.api.types.is_integer_dtype(values):
        return values.astype(np.int64)
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric != np.floor(numeric))
    if bad.any():
        examples = values[bad].astype(str).head(3).tolist()
        raise DataError(f"{source}: column '{column}' must hold integer ids; found {examples}")
    return numeric.astype(np.int64)


def _dates(values: pd.Series) -> pd.Series:
    """One vectorised pass for the format pandas infers from the first value, then a value-by-value pass for the
    rest: a log that mixes '2021-05-11' and '2021-08-09 13:20:00' is dates throughout, not a data error."""
    dates = pd.to_datetime(values, errors="coerce")
    retry = dates.isna() & values.notna()
    if retry.any():
        dates[retry] = pd.to_datetime(values[retry], errors="coerce", format="mixed")
    return dates


def _drop_exact_duplicates(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Rows repeated in every column (an export that appended the same file twice) carry no information: they are
    dropped and counted. Rows that share an id but differ elsewhere are a real conflict, left to the caller."""
    repeated = frame.duplicated()
    if repeated.any():
        log.warning("%s: dropped %d exact duplicate row(s)", source, int(repeated.sum()))
    return frame[~repeated]


def _numeric(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    numeric = pd.to_numeric(frame[column], errors="coerce")
    bad = numeric.isna() & frame[column].notna()
    if bad.any():
        examples = frame.loc[bad, column].astype(str).head(3).tolist()
        raise DataError(f"{source}: column '{column}' must be numeric; found {examples}")
    return numeric


def normalize_interactions(frame: pd.DataFrame, source: str = "interactions") -> pd.DataFrame:
    """Check and coerce an interactions table to the canonical dtypes, sorted by time."""
    _require_columns(frame, INTERACTION_COLUMNS, source)
    if frame.empty:
        raise DataError(f"{source}: the table is empty")
    out = frame.copy()
    out[Columns.User] = _integer_ids(out, Columns.User, source)
    out[Columns.Item] = _integer_ids(out, Columns.Item, source)
    dates = _dates(out[Columns.Datetime])
    if dates.isna().any():
        examples = out.loc[dates.isna(), Columns.Datetime].astype(str).head(3).tolist()
        raise DataError(f"{source}: column '{Columns.Datetime}' must hold dates; found {examples}")
    out[Columns.Datetime] = dates.astype("datetime64[ns]")
    out[Columns.Duration] = _numeric(out, Columns.Duration, source).fillna(0).astype(np.float64)
    out[Columns.WatchedPct] = _numeric(out, Columns.WatchedPct, source).fillna(0).clip(0, 100).astype(np.float32)
    out = _drop_exact_duplicates(out, source)
    duplicated = out.duplicated([Columns.User, Columns.Item])
    if duplicated.any():
        first = out.loc[duplicated, [Columns.User, Columns.Item]].iloc[0].tolist()
        raise DataError(
            f"{source}: {int(duplicated.sum())} duplicated (user_id, item_id) pair(s), e.g. {first}; "
            "keep one row per pair (the latest watch), as the Kion format does"
        )
    return out.sort_values([Columns.Datetime, Columns.User, Columns.Item], kind="stable").reset_index(drop=True)


def _one_row_per_id(frame: pd.DataFrame, required: list[str], id_column: str, source: str) -> pd.DataFrame:
    """A copy of a users or items table with its ``required`` columns checked, integer ids and exact repeats
    dropped; an id that repeats with other values is refused (which row is right cannot be guessed)."""
    _require_columns(frame, required, source)
    out = frame.copy()
    out[id_column] = _integer_ids(out, id_column, source)
    out = _drop_exact_duplicates(out, source)
    repeated = out[id_column].duplicated()
    if repeated.any():
        raise DataError(f"{source}: {id_column} {int(out.loc[repeated, id_column].iloc[0])} repeats with different "
                        f"values; keep one row per {id_column.removesuffix('_id')}")
    return out


def normalize_users(frame: pd.DataFrame, source: str = "users") -> pd.DataFrame:
    out = _one_row_per_id(frame, USER_COLUMNS, Columns.User, source)
    for column in (Columns.Age, Columns.Income, Columns.Sex):
        out[column] = out[column].fillna("unknown").astype(str)
    out[Columns.KidsFlg] = _numeric(out, Columns.KidsFlg, source).fillna(0).astype(np.int8)
    return out.reset_index(drop=True)


def normalize_items(frame: pd.DataFrame, source: str = "items") -> pd.DataFrame:
    out = _one_row_per_id(frame, ITEM_COLUMNS, Columns.Item, source)
    for column in (Columns.ContentType, Columns.Title, Columns.Genres, Columns.Countries, Columns.Studios,
                   Columns.Directors, Columns.AgeRating):
        out[column] = out[column].fillna("").astype(str)
    out[Columns.ReleaseYear] = _numeric(out, Columns.ReleaseYear, source).astype(np.float32)
    out[Columns.ForKids] = _numeric(out, Columns.ForKids, source).fillna(0).astype(np.int8)
    return out.reset_index(drop=True)


def no_dismissed() -> pd.DataFrame:
    return pd.DataFrame({Columns.User: np.zeros(0, np.int64), Columns.Item: np.zeros(0, np.int64),
                         Columns.Datetime: pd.to_datetime(np.zeros(0, np.int64))})


def make_dataset(name: str, interactions: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame,
                 sources: tuple[str, str, str] = ("interactions", "users", "items"),
                 dismissed: pd.DataFrame | None = None, **meta: Any) -> Dataset:
    """Validate the three tables and return them as a :class:`Dataset`; errors name ``sources``. ``dismissed``:
    (user, item, time) of titles seen and not liked, as the loader already checked them."""
    return Dataset(
        name=name,
        interactions=normalize_interactions(interactions, sources[0]),
        users=normalize_users(users, sources[1]),
        items=normalize_items(items, sources[2]),
        meta=meta,
        dismissed=no_dismissed() if dismissed is None else dismissed.reset_index(drop=True),
    )


def before_window(frame: pd.DataFrame, window: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` earlier than their user's first event in ``window`` (all rows of users without one):
    what was known of each user when the window began, for the per-user split as for a global one."""
    first = window.groupby(Columns.User)[Columns.Datetime].min()
    cut = frame[Columns.User].map(first)
    return frame[~(frame[Columns.Datetime] >= cut).to_numpy()]


def split_genres(genres: pd.Series) -> list[list[str]]:
    """Kion stores genres as one comma-separated string per item."""
    return [[g.strip() for g in str(s).split(",") if g.strip()] for s in genres]
