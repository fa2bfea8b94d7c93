"""The feature store: Parquet files with an explicit schema and a fingerprint, and the online lookup's arrays.

Offline, :func:`write_feature_store` writes ``users.parquet`` and ``items.parquet`` plus ``manifest.json``.
Each Parquet file carries the store's fingerprint in its schema metadata, so a file swapped in from another
build is caught at load time. Online, :class:`OnlineFeatureTable` holds one table as numpy arrays (sorted ids,
a float32 matrix, categories as int32 codes into a small vocabulary) and answers batch lookups with one
``searchsorted``. The store writes those arrays too, as uncompressed ``.npy`` files (``online.json`` names them),
so serving memory-maps them: every worker and process on a host shares one copy of a million users' features in
the page cache instead of each building its own from the Parquet files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.columns import Columns
from recsys.features.build import FeatureTables
from recsys.lookup import find_sorted

MANIFEST = "manifest.json"
ONLINE = "online.json"
TABLES = {"users": Columns.User, "items": Columns.Item}
UNKNOWN_CATEGORY = "unknown"
META_KEY = b"recsys.feature_store"

log = logging.getLogger("recsys")


class FeatureStoreError(RuntimeError):
    """The feature store is missing, incomplete or does not match what it should be."""


def arrow_schema(frame: pd.DataFrame, id_column: str) -> pa.Schema:
    """Explicit schema: int64 id, string categories, float32 numbers; nothing left to inference."""
    fields = []
    for name in frame.columns:
        if name == id_column:
            fields.append(pa.field(name, pa.int64(), nullable=False))
        elif frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name]):
            fields.append(pa.field(name, pa.string(), nullable=False))
        else:
            fields.append(pa.field(name, pa.float32()))
    return pa.schema(fields)


def _content_hash(frame: pd.DataFrame) -> bytes:
    return pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()


def fingerprint(tables: FeatureTables, source_fingerprint: str) -> str:
    """Hash of the schemas, the source data's fingerprint, the cut-off and the feature values themselves."""
    h = hashlib.sha256()
    h.update(source_fingerprint.encode())
    h.update(str(tables.as_of).encode())
    for name, id_column in TABLES.items():
        frame = getattr(tables, name)
        h.update(str(arrow_schema(frame, id_column)).encode())
        h.update(_content_hash(frame))
    return h.hexdigest()[:16]


def write_feature_store(tables: FeatureTables, directory: Path, source_fingerprint: str) -> dict[str, Any]:
    """Write both tables and the manifest; returns the manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    version = fingerprint(tables, source_fingerprint)
    manifest: dict[str, Any] = {
        "version": version,
        "source_fingerprint": source_fingerprint,
        "as_of": str(tables.as_of),
        "genres": tables.genres,
        "tables": {},
    }
    for name, id_column in TABLES.items():
        frame = getattr(tables, name)
        schema = arrow_schema(frame, id_column).with_metadata({META_KEY: version.encode()})
        pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), directory / f"{name}.parquet")
        manifest["tables"][name] = {"file": f"{name}.parquet", "rows": len(frame), "columns": list(frame.columns)}
    online = {name: OnlineFeatureTable.from_frame(getattr(tables, name), id_column).save(directory, name)
              for name, id_column in TABLES.items()}
    (directory / ONLINE).write_text(json.dumps({"version": version, "tables": online}, indent=2))
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FeatureStoreError(f"no feature store at {directory}: {MANIFEST} is missing; run `recsys features`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError:  # not JSON at all (e.g. truncated)
        manifest = None
    if not isinstance(manifest, dict) or not {"version", "tables"} <= manifest.keys():
        raise FeatureStoreError(f"{path} is damaged (not the JSON manifest `recsys train` writes); rebuild it with "
                                "`recsys train`")
    return manifest


@dataclass
class Lookup:
    numeric: np.ndarray      # float32 (n, F)
    categorical: np.ndarray  # object (n, C)
    known: np.ndarray        # bool (n,): False where the id is not in the store and defaults were used


@dataclass
class OnlineFeatureTable:
    """One feature table as arrays; lookups are vectorised and never raise for unknown ids. The last row of
    ``numeric`` and ``codes`` holds the defaults for unknown ids: missing numbers (CatBoost's NaN), 'unknown'."""

    ids: np.ndarray         # int64 (n,), sorted
    numeric: np.ndarray     # float32 (n + 1, F)
    numeric_names: list[str]
    codes: np.ndarray       # int32 (n + 1, C): each category's position in ``vocabulary``
    vocabulary: np.ndarray  # object (V,): every category of the table, sorted
    categorical_names: list[str]

    ARRAYS = ("ids", "numeric", "codes", "vocabulary")  # the files of :meth:`save`

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, id_column: str) -> OnlineFeatureTable:
        frame = frame.sort_values(id_column)
        schema = arrow_schema(frame, id_column)
        cat_names = [f.name for f in schema if f.type == pa.string()]
        num_names = [f.name for f in schema if f.type == pa.float32()]
        numeric = np.vstack([frame[num_names].to_numpy(np.float32), np.full((1, len(num_names)), np.nan, np.float32)])
        categorical = np.vstack([frame[cat_names].to_numpy(object), np.full((1, len(cat_names)), UNKNOWN_CATEGORY, object)])
        return cls.of_categories(frame[id_column].to_numpy(np.int64), numeric, num_names, categorical, cat_names)

    @classmethod
    def of_categories(cls, ids: np.ndarray, numeric: np.ndarray, numeric_names: list[str], categorical: np.ndarray,
                      categorical_names: list[str]) -> OnlineFeatureTable:
        """The table of an object matrix of categories (defaults row included), encoded as codes."""
        codes, vocabulary = pd.factorize(categorical.ravel(), sort=True)
        return cls(ids, numeric, numeric_names, codes.astype(np.int32).reshape(categorical.shape),
                   np.asarray(vocabulary, dtype=object), categorical_names)

    @property
    def categorical(self) -> np.ndarray:
        """object (n + 1, C): the categories themselves."""
        return self.vocabulary[self.codes]

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row index of each id (the defaults row for unknown ones) and whether it was known."""
        pos, known = find_sorted(self.ids, ids)
        return np.where(known, pos, len(self.ids)), known

    def lookup(self, ids: np.ndarray) -> Lookup:
        rows, known = self.rows(ids)
        return Lookup(self.numeric[rows], self.vocabulary[self.codes[rows]], known)

    def save(self, directory: Path, name: str) -> dict[str, Any]:
        """Write the arrays as ``<name>.<array>.npy`` (no pickles: the vocabulary as fixed-width text); returns
        what :meth:`open` needs to read them back."""
        for array in self.ARRAYS:
            value = self.vocabulary.astype(str) if array == "vocabulary" else getattr(self, array)
            np.save(Path(directory) / f"{name}.{array}.npy", value, allow_pickle=False)
        return {"rows": len(self.ids), "numeric": self.numeric_names, "categorical": self.categorical_names}

    @classmethod
    def open(cls, directory: Path, name: str, layout: dict[str, Any]) -> OnlineFeatureTable:
        """The arrays :meth:`save` wrote, memory-mapped (the vocabulary, a few hundred labels, is read); their
        shapes are checked against ``layout``, so a file from another build is caught here, not mid-request."""
        arrays = {}
        for array in cls.ARRAYS:
            path = Path(directory) / f"{name}.{array}.npy"
            try:
                arrays[array] = np.load(path, mmap_mode=None if array == "vocabulary" else "r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise FeatureStoreError(f"{path} is missing or unreadable ({exc}); rebuild it with `recsys train`") from exc
        rows, numeric, categorical = layout["rows"], layout["numeric"], layout["categorical"]
        expected = {"ids": (rows,), "numeric": (rows + 1, len(numeric)), "codes": (rows + 1, len(categorical))}
        if wrong := [a for a, shape in expected.items() if arrays[a].shape != shape]:
            raise FeatureStoreError(f"feature store at {directory}: {name}.{wrong[0]}.npy has shape "
                                    f"{arrays[wrong[0]].shape}, {ONLINE} says {expected[wrong[0]]}; rebuild it with "
                                    "`recsys train`")
        return cls(np.asarray(arrays["ids"]), np.asarray(arrays["numeric"]), numeric, np.asarray(arrays["codes"]),
                   arrays["vocabulary"].astype(object), categorical)


@dataclass
class OnlineFeatureStore:
    users: OnlineFeatureTable
    items: OnlineFeatureTable
    manifest: dict[str, Any]


def check_feature_store(directory: Path, expected_version: str | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """The manifest and each table's file, once the version, every file's footer and fingerprint, and the online
    arrays' shapes are checked.

    Only the Parquet footers and the arrays' headers are read, so serving can check a store at start-up for the
    cost of a few small reads.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if expected_version is not None and manifest["version"] != expected_version:
        raise FeatureStoreError(
            f"feature store at {directory} is version {manifest['version']} but the models were trained with "
            f"{expected_version}; retrain (`recsys train`) or point at the matching store"
        )
    paths = {}
    for name in TABLES:
        path = directory / manifest["tables"][name]["file"]
        if not path.exists():
            raise FeatureStoreError(f"feature store at {directory} is missing {path.name}; rebuild it with `recsys train`")
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _unreadable(path, exc) from exc
        stored = (schema.metadata or {}).get(META_KEY, b"").decode()
        if stored != manifest["version"]:
            raise FeatureStoreError(
                f"{path} belongs to feature store version {stored or 'none'}, the manifest says {manifest['version']}; "
                "rebuild it with `recsys train`"
            )
        paths[name] = path
    for name, layout in (_online_layout(directory, manifest) or {}).items():
        OnlineFeatureTable.open(directory, name, layout)  # mapped: only headers and sizes are read
    return manifest, paths


def _unreadable(path: Path, exc: Exception) -> FeatureStoreError:
    return FeatureStoreError(f"{path} is not a readable Parquet file ({exc}); rebuild it with `recsys train`")


def _online_layout(directory: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What ``online.json`` says about the online arrays; None for a store written before they were (read from its
    Parquet files instead)."""
    path = Path(directory) / ONLINE
    if not path.exists():
        return None
    try:
        online = json.loads(path.read_text())
    except ValueError:
        online = None
    if not isinstance(online, dict) or online.get("version") != manifest["version"]:
        raise FeatureStoreError(f"{path} is damaged or belongs to another feature store than {MANIFEST} "
                                f"({manifest['version']}); rebuild it with `recsys train`")
    return dict(online["tables"])


def load_feature_store(directory: Path, expected_version: str | None = None) -> OnlineFeatureStore:
    """Both tables, checked to belong to the manifest's version: memory-mapped from the online arrays (cheap, and
    shared by every process that maps them), or, for a store written before those existed, read from Parquet."""
    manifest, paths = check_feature_store(directory, expected_version)
    if (layout := _online_layout(directory, manifest)) is not None:
        tables = {name: OnlineFeatureTable.open(directory, name, layout[name]) for name in TABLES}
    else:
        log.warning("feature store at %s predates its memory-mapped arrays: each process reads its own copy from "
                    "Parquet; retrain (`recsys train`) to share one", directory)
        tables = {name: OnlineFeatureTable.from_frame(_read_parquet(paths[name]), id_column)
                  for name, id_column in TABLES.items()}
    return OnlineFeatureStore(users=tables["users"], items=tables["items"], manifest=manifest)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(path, exc) from exc
