"""What the web page shows about a model pair, packed into the ranker's directory at training time.

A built Bento carries only code and model-store entries, not ``var/``, so everything the page needs besides the
models travels with them: the item catalogue (title, genres, year), each user's most recent interactions, the
demographic values seen in training, the headline of the training report and its plots. Serving loads it once,
at start-up, into numpy arrays; a lookup is a ``searchsorted`` and a slice, never a file read or a pandas join.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.columns import Columns
from recsys.data.schema import Dataset, split_genres
from recsys.lookup import find_sorted

ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
HISTORY_FILE = "history.parquet"
SUMMARY_FILE = "summary.json"
PLOT_FILES = ("metrics.png", "importance.png", "tuning.png")  # tuning.png only for a pair trained with `recsys tune`
DEMOGRAPHICS = (Columns.Age, Columns.Sex, Columns.Income, Columns.KidsFlg)
SAMPLE_USERS = 12
UNKNOWN = "unknown"

SCHEMAS = {
    ITEMS_FILE: pa.schema([(Columns.Item, pa.int64()), (Columns.Title, pa.string()), (Columns.Genres, pa.string()),
                           (Columns.ReleaseYear, pa.int16()), (Columns.ContentType, pa.string())]),
    USERS_FILE: pa.schema([(Columns.User, pa.int64()), ("watched", pa.int64()), (Columns.Age, pa.string()),
                           (Columns.Sex, pa.string()), (Columns.Income, pa.string()), (Columns.KidsFlg, pa.int8())]),
    HISTORY_FILE: pa.schema([(Columns.User, pa.int64()), (Columns.Item, pa.int64()), (Columns.Datetime, pa.date32()),
                             (Columns.WatchedPct, pa.float32())]),
}


class ShowcaseError(RuntimeError):
    """The model carries no (readable) showcase: it was trained before the web page existed, or is damaged."""


def _write(frame: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, schema=SCHEMAS[path.name], preserve_index=False), path)


def write_showcase(directory: Path, dataset: Dataset, history_items: int, summary: dict[str, Any]) -> Path:
    """Write the catalogue, the users' last ``history_items`` interactions and ``summary`` (the report's headline)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    inter = dataset.interactions
    _write(dataset.items.sort_values(Columns.Item)[list(SCHEMAS[ITEMS_FILE].names)], directory / ITEMS_FILE)
    recent = (inter.sort_values([Columns.User, Columns.Datetime], ascending=[True, False], kind="stable")
              .groupby(Columns.User).head(history_items))
    _write(recent[list(SCHEMAS[HISTORY_FILE].names)], directory / HISTORY_FILE)
    watched = inter.groupby(Columns.User).size().rename("watched").reset_index()
    _write(watched.merge(dataset.users[[Columns.User, *DEMOGRAPHICS]], on=Columns.User, how="left"), directory / USERS_FILE)
    demographics = {c: sorted(v for v in dataset.users[c].unique().tolist() if v != UNKNOWN) for c in DEMOGRAPHICS}
    (directory / SUMMARY_FILE).write_text(json.dumps(
        {**summary, "history_items": history_items, "demographics": demographics}, indent=2, default=str))
    return directory


def _column(table: pa.Table, name: str) -> np.ndarray:
    """A column as numpy: strings and nullable integers become object arrays with None for missing values."""
    column = table.column(name)
    if pa.types.is_integer(column.type) and column.null_count:
        return np.array(column.to_pylist(), dtype=object)
    return column.to_numpy(zero_copy_only=False)


def _read(directory: Path, name: str) -> dict[str, np.ndarray]:
    path = directory / name
    try:
        table = pq.read_table(path, schema=SCHEMAS[name])
    except (pa.ArrowException, OSError) as exc:
        raise ShowcaseError(f"{path} is missing or unreadable ({exc}); retrain with `recsys train`") from exc
    return {field: _column(table, field) for field in table.column_names}


@dataclass
class Showcase:
    """The showcase of one model pair in memory, with the lookups the web page's JSON endpoints answer."""

    items: dict[str, np.ndarray]    # columns of ITEMS_FILE, sorted by item_id
    users: dict[str, np.ndarray]    # columns of USERS_FILE, sorted by user_id
    history: dict[str, np.ndarray]  # columns of HISTORY_FILE, grouped by user (in users' order), newest first
    indptr: np.ndarray              # history rows of users row u: indptr[u]:indptr[u + 1]
    summary: dict[str, Any]
    plots: dict[str, bytes]

    def item_details(self, item_ids: np.ndarray) -> tuple[list[dict[str, Any]], list[int]]:
        """Details of the known items in the order asked, and the ids the catalogue does not hold."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        rows, known = find_sorted(self.items[Columns.Item], item_ids)
        return [self._item(r) for r in rows[known]], item_ids[~known].tolist()

    def _item(self, row: int) -> dict[str, Any]:
        return {"item_id": int(self.items[Columns.Item][row]), "title": self.items[Columns.Title][row],
                "genres": split_genres(pd.Series([self.items[Columns.Genres][row] or ""]))[0],
                "year": _plain(self.items[Columns.ReleaseYear][row]), "content_type": self.items[Columns.ContentType][row]}

    def user(self, user_id: int) -> dict[str, Any] | None:
        """A user's demographics, how much they watched, and their latest interactions with item details."""
        (row,), (known,) = find_sorted(self.users[Columns.User], np.array([user_id], dtype=np.int64))
        if not known:
            return None
        part = slice(self.indptr[row], self.indptr[row + 1])
        details, _ = self.item_details(self.history[Columns.Item][part])
        by_id = {d["item_id"]: d for d in details}
        history = [{**by_id.get(int(i), {"item_id": int(i), "title": None, "genres": [], "year": None,
                                         "content_type": None}),
                    "watched_at": str(day), "watched_pct": round(float(pct), 1)}
                   for i, day, pct in zip(self.history[Columns.Item][part], self.history[Columns.Datetime][part],
                                          self.history[Columns.WatchedPct][part], strict=True)]
        profile = {c: _plain(self.users[c][row]) for c in DEMOGRAPHICS}
        return {"user_id": int(user_id), "watched": int(self.users["watched"][row]), "profile": profile,
                "history": history}

    def sample_users(self) -> list[int]:
        """Users from the most to the least active, evenly spread, for the page's picker."""
        order = np.argsort(-self.users["watched"], kind="stable")
        picks = np.unique(np.linspace(0, len(order) - 1, min(SAMPLE_USERS, len(order))).astype(np.int64))
        return self.users[Columns.User][order[picks]].tolist()

    def new_user_id(self) -> int:
        """An id no model of the pair knows: the page's example of a cold start."""
        return int(self.users[Columns.User].max(initial=-1)) + 1


def _plain(value: object) -> object:
    """numpy scalars as plain Python values for JSON."""
    return value.item() if isinstance(value, np.generic) else value


def load_showcase(directory: Path) -> Showcase:
    """Read all showcase files once; a missing or damaged file raises :class:`ShowcaseError`."""
    directory = Path(directory)
    if not (directory / SUMMARY_FILE).is_file():
        raise ShowcaseError(f"no showcase at {directory}: the model pair was trained before the web page existed; "
                            "retrain with `recsys train` to see titles, histories and the report on /ui")
    items, users, history = (_read(directory, name) for name in (ITEMS_FILE, USERS_FILE, HISTORY_FILE))
    owners, starts = np.unique(history[Columns.User], return_index=True)
    indptr = np.concatenate([starts, [len(history[Columns.User])]]).astype(np.int64)
    if not np.array_equal(owners, users[Columns.User]):
        raise ShowcaseError(f"{directory}: {HISTORY_FILE} and {USERS_FILE} disagree on the users; retrain")
    plots = {name: (directory / name).read_bytes() for name in PLOT_FILES if (directory / name).is_file()}
    return Showcase(items, users, history, indptr, json.loads((directory / SUMMARY_FILE).read_text()), plots)
