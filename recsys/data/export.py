"""Write any dataset in a published file format, so it reloads through the real loaders (`--dataset ...`).

Each file is written to a temporary name in the target folder and renamed over the real one only once all files
of the dataset are complete: a full disk or a stop midway leaves the previous files (or none), never a truncated
``interactions.csv`` that would load as a smaller dataset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.columns import Columns
from recsys.data.movielens import ENCODING, GENRES_100K
from recsys.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, Dataset, split_genres

# Kion-style age bands -> a representative age in years, for MovieLens' u.user.
_BAND_AGE = {"age_0_17": 15, "age_18_24": 21, "age_25_34": 30, "age_35_44": 40, "age_45_54": 50, "age_55_64": 60,
             "age_65_inf": 70}
# Synthetic genres -> the nearest of MovieLens' fixed 19 genres.
_ML_GENRE = {"drama": "Drama", "comedy": "Comedy", "thriller": "Thriller", "action": "Action", "melodrama": "Romance",
             "crime": "Crime", "adventure": "Adventure", "horror": "Horror", "sci-fi": "Sci-Fi", "fantasy": "Fantasy",
             "detective": "Mystery", "documentary": "Documentary", "cartoons": "Animation", "kids": "Children's",
             "family": "Children's", "anime": "Animation", "war": "War", "history": "War", "biography": "Drama",
             "sport": "Drama"}


@contextmanager
def _all_or_nothing(directory: Path, *names: str) -> Iterator[list[Path]]:
    """Temporary paths in ``directory`` for the files ``names``; they replace those files once all are written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    temporary = [directory / f".{name}.{os.getpid()}.tmp" for name in names]
    try:
        yield temporary
        for name, path in zip(names, temporary, strict=True):
            os.replace(path, directory / name)
    except OSError as exc:  # pandas writes through a handle: name the folder the disk-full error is about
        raise OSError(exc.errno, exc.strerror or str(exc), exc.filename or str(directory)) from None
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)


def write_kion(dataset: Dataset, directory: Path) -> None:
    interactions = dataset.interactions[INTERACTION_COLUMNS].copy()
    interactions[Columns.Datetime] = interactions[Columns.Datetime].dt.strftime("%Y-%m-%d")
    with _all_or_nothing(directory, "interactions.csv", "users.csv", "items.csv") as (inter_csv, users_csv, items_csv):
        interactions.to_csv(inter_csv, index=False)
        dataset.users[USER_COLUMNS].to_csv(users_csv, index=False)
        dataset.items[ITEM_COLUMNS].to_csv(items_csv, index=False)


def write_movielens_100k(dataset: Dataset, directory: Path) -> None:
    """u.data / u.user / u.item; watched_pct becomes 1-5 stars (so ratings >= 4 mean 'watched most of it')."""
    with _all_or_nothing(directory, "u.data", "u.user", "u.item") as files:
        _write_movielens_100k(dataset, *files)


def _write_movielens_100k(dataset: Dataset, u_data: Path, u_user: Path, u_item: Path) -> None:
    inter = dataset.interactions
    stars = np.clip(np.ceil(inter[Columns.WatchedPct].to_numpy() / 20.0), 1, 5).astype(int)
    # Same-day events get distinct seconds so the per-user order of the log survives the round trip.
    seconds = (inter[Columns.Datetime].astype("int64") // 10**9).to_numpy() + inter.groupby(
        [inter[Columns.User], inter[Columns.Datetime]]).cumcount().to_numpy()
    pd.DataFrame({"u": inter[Columns.User], "i": inter[Columns.Item], "r": stars, "t": seconds}).to_csv(
        u_data, sep="\t", header=False, index=False)
    users = dataset.users
    pd.DataFrame({"u": users[Columns.User], "age": users[Columns.Age].map(_BAND_AGE).fillna(30).astype(int),
                  "sex": users[Columns.Sex].where(users[Columns.Sex].isin(["M", "F"]), "M"), "occupation": "other",
                  "zip": "00000"}).to_csv(u_user, sep="|", header=False, index=False)
    items = dataset.items
    flags = np.zeros((len(items), len(GENRES_100K)), dtype=int)
    for row, genres in enumerate(split_genres(items[Columns.Genres])):
        for genre in genres:
            flags[row, GENRES_100K.index(_ML_GENRE.get(genre, "unknown"))] = 1
    year = items[Columns.ReleaseYear].fillna(1995).astype(int)
    table = pd.DataFrame({"i": items[Columns.Item], "title": items[Columns.Title] + " (" + year.astype(str) + ")",
                          "date": "01-Jan-" + year.astype(str), "video": "", "url": ""})
    table = pd.concat([table, pd.DataFrame(flags, columns=GENRES_100K)], axis=1)
    table.to_csv(u_item, sep="|", header=False, index=False, encoding=ENCODING)


WRITERS = {"kion": write_kion, "movielens-100k": write_movielens_100k}
