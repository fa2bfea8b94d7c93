"""One entry point for every dataset: the built-in generator and the real loaders share the same path."""

from __future__ import annotations

import logging
from pathlib import Path

from recsys.data.schema import DataError, Dataset
from recsys.settings import DataSettings

log = logging.getLogger(__name__)


def load_dataset(settings: DataSettings) -> Dataset:
    """Load the dataset ``settings.dataset``; real ones from ``settings.data_dir`` (nothing is downloaded)."""
    name = settings.dataset
    if name == "synthetic":
        from recsys.data.synthetic import generate

        return generate(settings.size, settings.seed)
    if settings.data_dir is None:
        raise DataError(f"dataset '{name}' needs --data-dir pointing at its files (nothing is downloaded)")
    data_dir = Path(settings.data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a folder")
    if name == "kion":
        from recsys.data.kion import load_kion

        return load_kion(data_dir)
    from recsys.data.movielens import load_movielens_1m, load_movielens_100k

    loader = load_movielens_100k if name == "movielens-100k" else load_movielens_1m
    return loader(data_dir, rating_threshold=settings.rating_threshold)
