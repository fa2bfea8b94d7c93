"""Copy a BentoML store's model pair with its users repeated up to a target count, to measure serving at a size.

Training at the seed's size takes most of an hour on two cores; serving's start-up and memory depend on how many
users the per-user files hold, not on what the models learnt. This copies the store of a trained pair and repeats
its users (ids shifted past the largest one for each copy) in every per-user file: LightFM's user vectors, the
seen lists, the profiles, the user features and the web page's users and histories. Items, the CatBoost model and
the metadata stay, so the copy passes serving's pair checks. Whatever the pair's format, the copy keeps it (the
memory-mapped files of today's training, or the Parquet features and showcase of earlier pairs, for before/after
runs of older code):

    .venv/bin/recsys train                                    # a default pair (40,000 users) in ~/bentoml
    .venv/bin/python scripts/repeat_users.py ~/bentoml var/seed-size/bentoml --users 1000000
    BENTOML_HOME=var/seed-size/bentoml .venv/bin/recsys footprint
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.columns import Columns  # noqa: E402
from recsys.core import model_store, showcase  # noqa: E402
from recsys.features.store import MANIFEST, ONLINE, TABLES, OnlineFeatureTable, read_manifest  # noqa: E402


class Repeat:
    """``copies`` copies of a set of users, the ids of copy c shifted by ``c * span``."""

    def __init__(self, copies: int, span: int):
        self.copies, self.span = copies, span

    def ids(self, ids: np.ndarray) -> np.ndarray:
        return self.offsets(np.asarray(ids), self.span)

    def offsets(self, values: np.ndarray, step: int) -> np.ndarray:
        return np.concatenate([values + c * step for c in range(self.copies)])

    def frame(self, frame: pd.DataFrame, shifted: dict[str, int] | None = None) -> pd.DataFrame:
        """The rows repeated, user ids shifted, and each column of ``shifted`` moved on by its step per copy."""
        big = frame.iloc[np.tile(np.arange(len(frame)), self.copies)].reset_index(drop=True)
        big[Columns.User] = self.ids(frame[Columns.User].to_numpy())
        for column, step in (shifted or {}).items():
            big[column] = self.offsets(frame[column].to_numpy(), step)
        return big


def _latest(models: Path, name: str) -> Path:
    return models / name / (models / name / "latest").read_text().strip()


def repeat_candidates(directory: Path, users: int) -> Repeat:
    user_ids, profile_ids = np.load(directory / "user_ids.npy"), np.load(directory / "profile_user_ids.npy")
    repeat = Repeat(-(-users // len(user_ids)), int(max(user_ids.max(), profile_ids.max(initial=0))) + 1)
    indptr, indices = np.load(directory / "seen_indptr.npy"), np.load(directory / "seen_indices.npy")
    arrays = {"user_ids": repeat.ids(user_ids), "profile_user_ids": repeat.ids(profile_ids),
              "user_vectors": np.tile(np.load(directory / "user_vectors.npy"), (repeat.copies, 1)),
              "seen_indices": np.tile(indices, repeat.copies),
              "seen_indptr": np.concatenate([[0], repeat.offsets(indptr[1:], int(indptr[-1]))])}
    for name in ("profile_age", "profile_sex", "profile_kids_flg"):
        arrays[name] = np.tile(np.load(directory / f"{name}.npy"), repeat.copies)
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array, allow_pickle=False)
    return repeat


def repeat_features(directory: Path, repeat: Repeat) -> None:
    """users.parquet repeated (its fingerprint metadata kept) and, for a store that has them, the online arrays
    rebuilt from the Parquet tables."""
    manifest = read_manifest(directory)
    table = pq.read_table(directory / "users.parquet")
    big = repeat.frame(table.to_pandas())
    pq.write_table(pa.Table.from_pandas(big, schema=table.schema, preserve_index=False), directory / "users.parquet")
    manifest["tables"]["users"]["rows"] = len(big)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if (directory / ONLINE).exists():
        online = {name: OnlineFeatureTable.from_frame(pq.read_table(directory / f"{name}.parquet").to_pandas(), column)
                  .save(directory, name) for name, column in TABLES.items()}
        (directory / ONLINE).write_text(json.dumps({"version": manifest["version"], "tables": online}, indent=2))


def repeat_showcase(directory: Path, repeat: Repeat) -> None:
    if (directory / showcase.USERS_FILE).exists():
        def read(name: str) -> pd.DataFrame:
            return pa.ipc.open_file(pa.memory_map(str(directory / name))).read_all().to_pandas()
        history = read(showcase.HISTORY_FILE)
        showcase.write_table(repeat.frame(read(showcase.USERS_FILE), {showcase.HISTORY_END: len(history)}),
                        directory / showcase.USERS_FILE)
        showcase.write_table(repeat.frame(history), directory / showcase.HISTORY_FILE)
        return
    for name in ("users.parquet", "history.parquet"):  # a pair of the earlier format
        table = pq.read_table(directory / name)
        pq.write_table(pa.Table.from_pandas(repeat.frame(table.to_pandas()), schema=table.schema,
                                            preserve_index=False), directory / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a BENTOML_HOME whose latest pair is copied")
    parser.add_argument("target", type=Path, help="the BENTOML_HOME to write (replaced if it exists)")
    parser.add_argument("--users", type=int, default=1_000_000, help="at least this many users (default: the seed's)")
    args = parser.parse_args()
    shutil.rmtree(args.target, ignore_errors=True)
    shutil.copytree(args.source / "models", args.target / "models")
    models = args.target / "models"
    repeat = repeat_candidates(_latest(models, model_store.CANDIDATES) / model_store.CANDIDATES_DIR, args.users)
    ranker = _latest(models, model_store.RANKER)
    repeat_features(ranker / model_store.FEATURES_DIR, repeat)
    repeat_showcase(ranker / model_store.SHOWCASE_DIR, repeat)
    print(f"{args.target}: {repeat.copies} copies of each user")


if __name__ == "__main__":
    main()
