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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data.schema import Dataset, split_genres
from recsys.lookup import find_sorted

ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
HISTORY_FILE = "history.parquet"
SUMMARY_FILE = "summary.json"
PLOT_FILES = ("metrics.png", "importance.png")
DEMOGRAPHICS = ("age", "sex", "income", "kids_flg")
SAMPLE_USERS = 12
UNKNOWN = "unknown"

SCHEMAS = {
    ITEMS_FILE: pa.schema([("item_id", pa.int64()), ("title", pa.string()), ("genres", pa.string()),
                           ("release_year", pa.int16()), ("content_type", pa.string())]),
    USERS_FILE: pa.schema([("user_id", pa.int64()), ("watched", pa.int64()), ("age", pa.string()),
                           ("sex", pa.string()), ("income", pa.string()), ("kids_flg", pa.int8())]),
    HISTORY_FILE: pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("last_watch_dt", pa.date32()),
                             ("watched_pct", pa.float32())]),
}


class ShowcaseError(RuntimeError):
    """The model carries no (readable) showcase: it was trained before the web page existed, or is damaged."""


def _write(frame: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, schema=SCHEMAS[path.name], preserve_index=False), path)


def write_showcase(directory: Path, dataset: Dataset, history_items: int, summary: dict) -> Path:
    """Write the catalogue, the users' last ``history_items`` interactions and ``summary`` (the report's headline)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    inter = dataset.interactions
    _write(dataset.items.sort_values("item_id")[list(SCHEMAS[ITEMS_FILE].names)], directory / ITEMS_FILE)
    recent = (inter.sort_values(["user_id", "last_watch_dt"], ascending=[True, False], kind="stable")
              .groupby("user_id").head(history_items))
    _write(recent[list(SCHEMAS[HISTORY_FILE].names)], directory / HISTORY_FILE)
    watched = inter.groupby("user_id").size().rename("watched").reset_index()
    _write(watched.merge(dataset.users[["user_id", *DEMOGRAPHICS]], on="user_id", how="left"), directory / USERS_FILE)
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
    summary: dict
    plots: dict[str, bytes]

    def item_details(self, item_ids: np.ndarray) -> tuple[list[dict], list[int]]:
        """Details of the known items in the order asked, and the ids the catalogue does not hold."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        rows, known = find_sorted(self.items["item_id"], item_ids)
        return [self._item(r) for r in rows[known]], item_ids[~known].tolist()

    def _item(self, row: int) -> dict:
        return {"item_id": int(self.items["item_id"][row]), "title": self.items["title"][row],
                "genres": split_genres([self.items["genres"][row] or ""])[0],
                "year": _plain(self.items["release_year"][row]), "content_type": self.items["content_type"][row]}

    def user(self, user_id: int) -> dict | None:
        """A user's demographics, how much they watched, and their latest interactions with item details."""
        (row,), (known,) = find_sorted(self.users["user_id"], np.array([user_id], dtype=np.int64))
        if not known:
            return None
        part = slice(self.indptr[row], self.indptr[row + 1])
        details, _ = self.item_details(self.history["item_id"][part])
        by_id = {d["item_id"]: d for d in details}
        history = [{**by_id.get(int(i), {"item_id": int(i), "title": None, "genres": [], "year": None,
                                         "content_type": None}),
                    "watched_at": str(day), "watched_pct": round(float(pct), 1)}
                   for i, day, pct in zip(self.history["item_id"][part], self.history["last_watch_dt"][part],
                                          self.history["watched_pct"][part], strict=True)]
        profile = {c: _plain(self.users[c][row]) for c in DEMOGRAPHICS}
        return {"user_id": int(user_id), "watched": int(self.users["watched"][row]), "profile": profile,
                "history": history}

    def sample_users(self) -> list[int]:
        """Users from the most to the least active, evenly spread, for the page's picker."""
        order = np.argsort(-self.users["watched"], kind="stable")
        picks = np.unique(np.linspace(0, len(order) - 1, min(SAMPLE_USERS, len(order))).astype(np.int64))
        return self.users["user_id"][order[picks]].tolist()

    def new_user_id(self) -> int:
        """An id no model of the pair knows: the page's example of a cold start."""
        return int(self.users["user_id"].max(initial=-1)) + 1


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
    owners, starts = np.unique(history["user_id"], return_index=True)
    indptr = np.concatenate([starts, [len(history["user_id"])]]).astype(np.int64)
    if not np.array_equal(owners, users["user_id"]):
        raise ShowcaseError(f"{directory}: {HISTORY_FILE} and {USERS_FILE} disagree on the users; retrain")
    plots = {name: (directory / name).read_bytes() for name in PLOT_FILES if (directory / name).is_file()}
    return Showcase(items, users, history, indptr, json.loads((directory / SUMMARY_FILE).read_text()), plots)
