"""Loaders for MovieLens 100K (``u.data``/``u.user``/``u.item``) and 1M (``ratings.dat``/``users.dat``/``movies.dat``).

MovieLens has explicit 1-5 star ratings while the pipeline models implicit "watched" feedback, so the mapping is:

* only ratings ``>= rating_threshold`` become interactions (explicit -> implicit positives); the star value is kept
  in an extra ``rating`` column (float32);
* ``last_watch_dt`` is the rating's unix timestamp (seconds, UTC, tz-naive);
* ``total_dur`` is 0 (MovieLens has no watch time);
* ``watched_pct`` is ``rating * 20``: the stand-in for "how much they liked it" that Kion encodes as the share of
  the title watched, so 5 stars = 100 and 4 stars = 80.

Users get Kion-style age bands, ``income='unknown'``, ``kids_flg=0`` and an extra ``occupation`` column (text in
100K, the numeric code as a string in 1M). Items are films with genres joined by ``schema.GENRE_SEPARATOR`` and
``for_kids=1`` when "Children's" is among them. Both releases are latin-1 encoded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.columns import Columns
from recsys.data.files import read_table, to_number
from recsys.data.schema import GENRE_SEPARATOR, DataError, Dataset, make_dataset

ENCODING = "latin-1"
GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
KIDS_GENRE = "Children's"
# Lower bounds of the Kion age bands. ML-1M stores band codes (1=under 18, 18, 25, 35, 45, 50="50-55", 56="56+"),
# which fall into these bands by their lower bound, so one function serves both releases.
_AGE_EDGES = [-np.inf, 18, 25, 35, 45, 55, 65, np.inf]
_AGE_LABELS = ["age_0_17", "age_18_24", "age_25_34", "age_35_44", "age_45_54", "age_55_64", "age_65_inf"]
_YEAR_AT_END = re.compile(r"\((\d{4})\)\s*$")


def age_band(age: pd.Series) -> pd.Series:
    """Years (100K) or ML-1M age codes -> Kion band strings such as 'age_25_34'; missing -> 'unknown'."""
    bands = pd.cut(age, bins=_AGE_EDGES, labels=_AGE_LABELS, right=False)
    return bands.astype(object).where(bands.notna(), "unknown").astype(str)


def _interactions(ratings: pd.DataFrame, path: Path, rating_threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate every rating row, then return the positives in Kion shape and the titles rated below the threshold
    (seen and not liked: never recommended to that user, see ``Dataset.dismissed``)."""
    user_id = to_number(ratings, Columns.User, path, integer=True)
    item_id = to_number(ratings, Columns.Item, path, integer=True)
    rating = to_number(ratings, "rating", path)
    timestamp = to_number(ratings, "timestamp", path, integer=True)
    keep = (rating >= rating_threshold).to_numpy()
    if not keep.any():
        raise DataError(
            f"{path}: none of the {len(ratings)} ratings is >= the rating threshold {rating_threshold:g} "
            f"(highest is {rating.max():g}); lower it with --rating-threshold or RECSYS_DATA__RATING_THRESHOLD"
        )
    kept = rating[keep].astype(np.float32)
    dismissed = pd.DataFrame({Columns.User: user_id[~keep].astype(np.int64), Columns.Item: item_id[~keep].astype(np.int64),
                              Columns.Datetime: pd.to_datetime(timestamp[~keep].astype(np.int64), unit="s")})
    return pd.DataFrame({
        Columns.User: user_id[keep].astype(np.int64),
        Columns.Item: item_id[keep].astype(np.int64),
        Columns.Datetime: pd.to_datetime(timestamp[keep].astype(np.int64), unit="s"),
        Columns.Duration: 0.0,
        Columns.WatchedPct: kept * 20,
        "rating": kept,
    }).reset_index(drop=True), dismissed


def _users(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    return pd.DataFrame({
        Columns.User: raw[Columns.User],
        Columns.Age: age_band(to_number(raw, "age", path, allow_missing=True)),
        Columns.Income: "unknown",
        Columns.Sex: raw["gender"].fillna("unknown").astype(str).str.strip().str.upper(),
        Columns.KidsFlg: 0,
        "occupation": raw["occupation"].fillna("").astype(str).str.strip(),
    })


def _items(raw: pd.DataFrame, genres: list[str], release_year: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({
        Columns.Item: raw[Columns.Item],
        Columns.ContentType: "film",
        Columns.Title: raw[Columns.Title].fillna("").astype(str),
        Columns.ReleaseYear: release_year.astype(np.float32),
        Columns.Genres: genres,
        Columns.Countries: "",
        Columns.ForKids: [int(KIDS_GENRE in g.split(GENRE_SEPARATOR)) for g in genres],
        Columns.AgeRating: "",
        Columns.Studios: "",
        Columns.Directors: "",
    })


def _year_from(text: pd.Series, pattern: re.Pattern[str]) -> pd.Series:
    return pd.to_numeric(text.fillna("").astype(str).str.extract(pattern, expand=False), errors="coerce")


def load_movielens_100k(data_dir: Path, rating_threshold: float = 4.0) -> Dataset:
    """Read MovieLens 100K from ``data_dir`` (the unpacked ``ml-100k`` folder)."""
    data_dir = Path(data_dir)
    paths = (data_dir / "u.data", data_dir / "u.user", data_dir / "u.item")
    ratings = read_table(paths[0], sep="\t", header=False, encoding=ENCODING,
                         names=[Columns.User, Columns.Item, "rating", "timestamp"])
    users = read_table(paths[1], sep="|", header=False, encoding=ENCODING,
                       names=[Columns.User, "age", "gender", "occupation", "zip_code"])
    items = read_table(paths[2], sep="|", header=False, encoding=ENCODING,
                       names=[Columns.Item, "title", "release_date", "video_release_date", "imdb_url", *GENRES_100K])

    flags = np.column_stack([to_number(items, g, paths[2], integer=True).to_numpy() for g in GENRES_100K])
    # 'unknown' is a placeholder flag, not a genre: such items get no genres, as in ML-1M.
    genres = [GENRE_SEPARATOR.join(g for g, f in zip(GENRES_100K, row, strict=True) if f == 1 and g != "unknown")
              for row in flags]
    # release_date looks like '01-Jan-1995'; a few are blank, then the "(1995)" in the title is the fallback.
    year = _year_from(items["release_date"], re.compile(r"(\d{4})\s*$"))
    year = year.fillna(_year_from(items[Columns.Title], _YEAR_AT_END))
    positives, dismissed = _interactions(ratings, paths[0], rating_threshold)
    return make_dataset(
        "movielens-100k", positives, _users(users, paths[1]),
        _items(items, genres, year), sources=(str(paths[0]), str(paths[1]), str(paths[2])), dismissed=dismissed,
        data_dir=str(data_dir), rating_threshold=rating_threshold,
    )


def load_movielens_1m(data_dir: Path, rating_threshold: float = 4.0) -> Dataset:
    """Read MovieLens 1M from ``data_dir`` (the unpacked ``ml-1m`` folder)."""
    data_dir = Path(data_dir)
    paths = (data_dir / "ratings.dat", data_dir / "users.dat", data_dir / "movies.dat")
    ratings = read_table(paths[0], sep="::", header=False, encoding=ENCODING,
                         names=[Columns.User, Columns.Item, "rating", "timestamp"])
    users = read_table(paths[1], sep="::", header=False, encoding=ENCODING,
                       names=[Columns.User, "gender", "age", "occupation", "zip_code"])
    items = read_table(paths[2], sep="::", header=False, encoding=ENCODING, names=[Columns.Item, "title", "genres"])

    genres = [GENRE_SEPARATOR.join(g.strip() for g in s.split("|") if g.strip())
              for s in items[Columns.Genres].fillna("").astype(str)]
    positives, dismissed = _interactions(ratings, paths[0], rating_threshold)
    return make_dataset(
        "movielens-1m", positives, _users(users, paths[1]),
        _items(items, genres, _year_from(items[Columns.Title], _YEAR_AT_END)),
        sources=(str(paths[0]), str(paths[1]), str(paths[2])), dismissed=dismissed,
        data_dir=str(data_dir), rating_threshold=rating_threshold,
    )
