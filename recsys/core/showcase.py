"""What the web page shows about a model pair, packed into the ranker's directory at training time.

A built Bento carries only code and model-store entries, not ``var/``, so everything the page needs besides the
models travels with them: the item catalogue (title, genres, year), each user's most recent interactions, the
demographic values seen in training, the headline of the training report and its plots. The tables are
uncompressed Arrow IPC files that serving memory-maps at start-up: a million users' histories are one copy in the
page cache for every entry worker on the host, not one each. A lookup is a ``searchsorted`` and a slice of the
mapped columns, never a pandas join.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.columns import Columns
from recsys.data.schema import Dataset, split_genres
from recsys.lookup import find_sorted

ITEMS_FILE = "items.arrow"
USERS_FILE = "users.arrow"
HISTORY_FILE = "history.arrow"
HISTORY_END = "history_end"  # users: the end of each user's rows in HISTORY_FILE (the start is the previous end)
SUMMARY_FILE = "summary.json"
PLOT_FILES = ("metrics.png", "importance.png", "tuning.png")  # tuning.png only for a pair trained with `recsys tune`
DEMOGRAPHICS = (Columns.Age, Columns.Sex, Columns.Income, Columns.KidsFlg)
SAMPLE_USERS = 12
UNKNOWN = "unknown"

SCHEMAS = {
    ITEMS_FILE: pa.schema([(Columns.Item, pa.int64()), (Columns.Title, pa.string()), (Columns.Genres, pa.string()),
                           (Columns.ReleaseYear, pa.int16()), (Columns.ContentType, pa.string())]),
    USERS_FILE: pa.schema([(Columns.User, pa.int64()), ("watched", pa.int64()), (HISTORY_END, pa.int64()),
                           (Columns.Age, pa.string()), (Columns.Sex, pa.string()), (Columns.Income, pa.string()),
                           (Columns.KidsFlg, pa.int8())]),
    HISTORY_FILE: pa.schema([(Columns.User, pa.int64()), (Columns.Item, pa.int64()), (Columns.Datetime, pa.date32()),
                             (Columns.WatchedPct, pa.float32())]),
}


class ShowcaseError(RuntimeError):
    """The model carries no (readable) showcase: it was trained before the web page existed, or is damaged."""


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """One of the showcase's tables (named by ``path``) as an uncompressed Arrow IPC file of one record batch, so
    serving maps each column as one array."""
    table = pa.Table.from_pandas(frame, schema=SCHEMAS[path.name], preserve_index=False).combine_chunks()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def write_showcase(directory: Path, dataset: Dataset, history_items: int, summary: dict[str, Any]) -> Path:
    """Write the catalogue, the users' last ``history_items`` interactions and ``summary`` (the report's headline)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    inter = dataset.interactions
    write_table(dataset.items.sort_values(Columns.Item)[list(SCHEMAS[ITEMS_FILE].names)], directory / ITEMS_FILE)
    recent = (inter.sort_values([Columns.User, Columns.Datetime], ascending=[True, False], kind="stable")
              .groupby(Columns.User).head(history_items))
    write_table(recent[list(SCHEMAS[HISTORY_FILE].names)], directory / HISTORY_FILE)
    watched = inter.groupby(Columns.User).size().rename("watched").reset_index()
    watched[HISTORY_END] = np.cumsum(recent.groupby(Columns.User).size().to_numpy())  # both sorted by user
    write_table(watched.merge(dataset.users[[Columns.User, *DEMOGRAPHICS]], on=Columns.User, how="left"), directory / USERS_FILE)
    demographics = {c: sorted(v for v in dataset.users[c].unique().tolist() if v != UNKNOWN) for c in DEMOGRAPHICS}
    (directory / SUMMARY_FILE).write_text(json.dumps(
        {**summary, "history_items": history_items, "demographics": demographics}, indent=2, default=str))
    return directory


def _read(directory: Path, name: str) -> pa.Table:
    """The table of one file, memory-mapped (no column is copied), its schema checked."""
    path = directory / name
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise ShowcaseError(f"{path} is missing or unreadable ({exc}); retrain with `recsys train`") from exc
    if not table.schema.equals(SCHEMAS[name]):
        raise ShowcaseError(f"{path} does not have the showcase's columns; retrain with `recsys train`")
    return table


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column without nulls as a numpy view of the mapped file."""
    return table.column(name).to_numpy()


@dataclass
class Showcase:
    """The showcase of one model pair, memory-mapped, with the lookups the web page's JSON endpoints answer."""

    items: pa.Table    # ITEMS_FILE, sorted by item_id
    users: pa.Table    # USERS_FILE, sorted by user_id
    history: pa.Table  # HISTORY_FILE, grouped by user (in users' order), newest first
    summary: dict[str, Any]
    plots: dict[str, bytes]

    def __post_init__(self) -> None:
        self._item_ids = _numbers(self.items, Columns.Item)
        self._user_ids = _numbers(self.users, Columns.User)
        self._history_end = _numbers(self.users, HISTORY_END)

    def item_details(self, item_ids: np.ndarray) -> tuple[list[dict[str, Any]], list[int]]:
        """Details of the known items in the order asked, and the ids the catalogue does not hold."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        rows, known = find_sorted(self._item_ids, item_ids)
        return [self._item(int(r)) for r in rows[known]], item_ids[~known].tolist()

    def _item(self, row: int) -> dict[str, Any]:
        item = self.items.slice(row, 1).to_pylist()[0]
        return {"item_id": item[Columns.Item], "title": item[Columns.Title],
                "genres": split_genres(pd.Series([item[Columns.Genres] or ""]))[0],
                "year": item[Columns.ReleaseYear], "content_type": item[Columns.ContentType]}

    def user(self, user_id: int) -> dict[str, Any] | None:
        """A user's demographics, how much they watched, and their latest interactions with item details."""
        (row,), (known,) = find_sorted(self._user_ids, np.array([user_id], dtype=np.int64))
        if not known:
            return None
        start = int(self._history_end[row - 1]) if row else 0
        rows = self.history.slice(start, int(self._history_end[row]) - start).to_pylist()
        details, _ = self.item_details(np.array([r[Columns.Item] for r in rows], dtype=np.int64))
        by_id = {d["item_id"]: d for d in details}
        history = [{**by_id.get(r[Columns.Item], {"item_id": r[Columns.Item], "title": None, "genres": [],
                                                  "year": None, "content_type": None}),
                    "watched_at": str(r[Columns.Datetime]), "watched_pct": round(float(r[Columns.WatchedPct]), 1)}
                   for r in rows]
        user = self.users.slice(int(row), 1).to_pylist()[0]
        return {"user_id": int(user_id), "watched": user["watched"], "profile": {c: user[c] for c in DEMOGRAPHICS},
                "history": history}

    def sample_users(self) -> list[int]:
        """Users from the most to the least active, evenly spread, for the page's picker."""
        order = np.argsort(-_numbers(self.users, "watched"), kind="stable")
        picks = np.unique(np.linspace(0, len(order) - 1, min(SAMPLE_USERS, len(order))).astype(np.int64))
        return self._user_ids[order[picks]].tolist()

    def new_user_id(self) -> int:
        """An id no model of the pair knows: the page's example of a cold start."""
        return int(self._user_ids.max(initial=-1)) + 1


def _check_history(directory: Path, users: pa.Table, history: pa.Table) -> None:
    """Each user's run of history rows is non-empty, starts and ends with that user's rows, and the runs cover
    the history in order (read from the mapped columns: a few gathers, no sort)."""
    ends, user_ids = _numbers(users, HISTORY_END), _numbers(users, Columns.User)
    owners = _numbers(history, Columns.User)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    covered = int(ends[-1]) if len(ends) else 0
    if covered != len(owners) or (ends <= starts).any() or not np.array_equal(owners[starts], user_ids) \
            or not np.array_equal(owners[ends - 1], user_ids):
        raise ShowcaseError(f"{directory}: {HISTORY_FILE} and {USERS_FILE} disagree on the users; retrain")


def load_showcase(directory: Path) -> Showcase:
    """Map all showcase files once; a missing, damaged or older-format file raises :class:`ShowcaseError`."""
    directory = Path(directory)
    if not (directory / SUMMARY_FILE).is_file():
        raise ShowcaseError(f"no showcase at {directory}: the model pair was trained before the web page existed; "
                            "retrain with `recsys train` to see titles, histories and the report on /ui")
    if (directory / "items.parquet").is_file():
        raise ShowcaseError(f"the showcase at {directory} is in the Parquet format of pairs trained before it was "
                            "memory-mapped; retrain with `recsys train` to see titles and histories on /ui")
    items, users, history = (_read(directory, name) for name in (ITEMS_FILE, USERS_FILE, HISTORY_FILE))
    _check_history(directory, users, history)
    plots = {name: (directory / name).read_bytes() for name in PLOT_FILES if (directory / name).is_file()}
    return Showcase(items, users, history, json.loads((directory / SUMMARY_FILE).read_text()), plots)
