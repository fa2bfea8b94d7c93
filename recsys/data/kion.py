"""Loader for the public MTS Kion dataset (``interactions.csv``, ``users.csv``, ``items.csv``).

The canonical schema *is* the Kion schema, so this loader only reads the files and normalizes the few values that
are awkward downstream: Cyrillic sex codes and the float ``age_rating``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from recsys.columns import Columns
from recsys.data.files import read_table
from recsys.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, Dataset, make_dataset

# Kion writes sex in Cyrillic; Latin letters keep feature values readable and equal across datasets.
_SEX = {"М": "M", "Ж": "F"}
_TEXT_EXTRAS = ["title_orig", "actors", "description", "keywords"]


def _age_rating(value: Any) -> str:
    """16.0 -> '16+' (the dataset stores the minimum age as a float), missing -> ''; other text is kept."""
    if pd.isna(value):
        return ""
    try:
        return f"{int(float(value))}+"
    except ValueError:
        return str(value).strip()


def _sex(value: Any) -> str:
    return "unknown" if pd.isna(value) else _SEX.get(str(value).strip(), str(value).strip())


def load_kion(data_dir: Path) -> Dataset:
    """Read the three Kion CSVs from ``data_dir``; errors name the offending file."""
    data_dir = Path(data_dir)
    paths = (data_dir / "interactions.csv", data_dir / "users.csv", data_dir / "items.csv")
    interactions = read_table(paths[0], sep=",", required=INTERACTION_COLUMNS)
    users = read_table(paths[1], sep=",", required=USER_COLUMNS)
    items = read_table(paths[2], sep=",", required=ITEM_COLUMNS)

    users[Columns.Sex] = users[Columns.Sex].map(_sex).astype(str)
    items[Columns.AgeRating] = items[Columns.AgeRating].map(_age_rating).astype(str)
    for column in _TEXT_EXTRAS:
        if column in items.columns:
            items[column] = items[column].fillna("").astype(str)
    return make_dataset("kion", interactions, users, items, sources=(str(paths[0]), str(paths[1]), str(paths[2])),
                        data_dir=str(data_dir))
