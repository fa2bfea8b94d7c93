"""First level at run time: candidate generation from plain numpy arrays.

The same :class:`CandidateModel` produces the reranker's training candidates, the offline evaluation's
candidates and the served candidates, so what is evaluated is exactly what is served. It holds LightFM's
user and item representations (biases folded into the vectors), each user's watch history (time-ordered),
recent popularity (global and per demographic segment), an item-to-item co-occurrence table and the
demographics of the users table's users who have no history yet (so they get their own segment's list without
sending their profile). Everything is stored as ``.npy`` files; loading never unpickles anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np
import scipy.sparse as sp

from recsys.lookup import find_sorted

SOURCES = ("lightfm", "popular", "cooc")  # the first-level candidate sources, each flagged in a feature from_<source>
CANDIDATE_FEATURES = ["lfm_score", "lfm_rank", "cooc_score", *(f"from_{source}" for source in SOURCES)]
class Profile(TypedDict, total=False):
    """Demographics of a user without history, as ``user_features`` sends them (or the users table had them)."""

    age: str | None
    sex: str | None
    income: str | None
    kids_flg: int | None


PopularList = Literal["segment", "kids_segment", "global"]  # the popularity lists, finest first
RECENT_ITEMS = 5  # co-occurrence candidates start from the user's last few titles
# Optional on load: a pair trained before profiles were kept still serves (its idle users get global popularity).
PROFILE_FIELDS = ("profile_user_ids", "profile_age", "profile_sex", "profile_kids_flg")
# Optional on load too: a pair trained before they were kept checks `user_features` against its segments' labels.
LABEL_FIELDS = {"age": "label_age", "sex": "label_sex"}


def segment_key(age: str, sex: str, kids_flg: int) -> str:
    return f"{age}|{sex}|{int(kids_flg)}"


def kids_segment_key(kids_flg: int) -> str:
    return segment_key("*", "*", kids_flg)


def segment_labels(segment_keys: np.ndarray) -> dict[str, frozenset[str]]:
    """The ``age`` and ``sex`` labels a model has segments for (a segment needs enough users, so a rare label may
    have none): the best a model saved without ``label_age``/``label_sex`` can say about valid ``user_features``.

    Examples
    --------
    >>> sorted(segment_labels(np.array(["age_18_24|F|0", "age_25_34|M|1", "*|*|1"]))["age"])
    ['age_18_24', 'age_25_34']
    """
    parts = [str(key).split("|") for key in segment_keys]
    return {field: frozenset(p[i] for p in parts) - {"*"} for i, field in enumerate(("age", "sex"))}


@dataclass
class CandidateBatch:
    """Candidates of a batch of users, flattened: row ``j`` is item ``items[j]`` for batch user ``owner[j]``."""

    owner: np.ndarray     # int64 (m,): position of the user in the batch
    items: np.ndarray     # int64 (m,): item index into CandidateModel.item_ids
    features: np.ndarray  # float32 (m, len(CANDIDATE_FEATURES))

    def __len__(self) -> int:
        return len(self.items)

    def column(self, name: str) -> np.ndarray:
        """One candidate feature by its name in :data:`CANDIDATE_FEATURES`, so no caller depends on its position."""
        return self.features[:, CANDIDATE_FEATURES.index(name)]

    def from_source(self, source: str) -> np.ndarray:
        """Whether each row was proposed by ``source`` (one of :data:`SOURCES`)."""
        return self.column(f"from_{source}") > 0

    def source_flags(self) -> np.ndarray:
        """bool (m, len(SOURCES)): which sources proposed each row, in the order of :data:`SOURCES`."""
        return np.column_stack([self.from_source(source) for source in SOURCES])

    def take(self, rows: np.ndarray) -> CandidateBatch:
        """The rows ``rows`` (indices or a boolean mask), owners unchanged."""
        return CandidateBatch(owner=self.owner[rows], items=self.items[rows], features=self.features[rows])

    @classmethod
    def concat(cls, parts: Sequence[CandidateBatch], users: Sequence[int]) -> CandidateBatch:
        """One batch of ``parts`` that hold ``users[k]`` consecutive batch users each: the owners of a part follow
        those of the parts before it."""
        offsets = np.cumsum([0, *users[:-1]], dtype=np.int64)
        return cls(owner=np.concatenate([p.owner + o for p, o in zip(parts, offsets, strict=True)]),
                   items=np.concatenate([p.items for p in parts]).astype(np.int64, copy=False),
                   features=np.vstack([p.features for p in parts]))

    @classmethod
    def of_users(cls, items: Sequence[np.ndarray], features: Sequence[np.ndarray]) -> CandidateBatch:
        """One batch of each user's candidate items and features (row ``j`` of the lists is batch user ``j``)."""
        parts = [cls(np.zeros(len(i), np.int64), i, f) for i, f in zip(items, features, strict=True)]
        return cls.concat(parts, [1] * len(parts))


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """A pickle-free ``.npy``; ``mmap`` maps it instead of reading it (the header and file size are still checked)."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # numpy's messages do not name the file
        raise ValueError(f"cannot read {Path(path).name} ({exc})") from exc


@dataclass
class CandidateModel:
    user_ids: np.ndarray         # int64 (U,), sorted
    item_ids: np.ndarray         # int64 (I,)
    user_vectors: np.ndarray     # float32 (U, d+1): LightFM embedding, then 1
    item_vectors: np.ndarray     # float32 (I, d+1): LightFM embedding, then item bias
    seen_indptr: np.ndarray      # int64 (U+1,): CSR of watched item indices, oldest first
    seen_indices: np.ndarray     # int32
    popular: np.ndarray          # int32: item indices by recent popularity, most popular first
    segment_keys: np.ndarray     # str (S,)
    segment_popular: np.ndarray  # int32 (S, P): most popular items per demographic segment
    cooc_indices: np.ndarray     # int32 (I, K): nearest items by co-occurrence
    cooc_scores: np.ndarray      # float32 (I, K)
    # Users of the users table without history, sorted, with the demographics their segment is keyed on.
    profile_user_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 (P,)
    profile_age: np.ndarray = field(default_factory=lambda: np.zeros(0, str))            # str (P,)
    profile_sex: np.ndarray = field(default_factory=lambda: np.zeros(0, str))            # str (P,)
    profile_kids_flg: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))   # int8 (P,)
    # Every age and sex label of the users table, sorted: what `user_features` may name.
    label_age: np.ndarray = field(default_factory=lambda: np.zeros(0, str))              # str
    label_sex: np.ndarray = field(default_factory=lambda: np.zeros(0, str))              # str

    def __post_init__(self) -> None:
        self._item_order = np.argsort(self.item_ids)
        self._segments = {str(k): i for i, k in enumerate(self.segment_keys)}
        n = len(self.item_ids)
        rows = np.repeat(np.arange(n), self.cooc_indices.shape[1])
        self._cooc = sp.csr_matrix((self.cooc_scores.ravel(), (rows, self.cooc_indices.ravel())), shape=(n, n))

    # ---- persistence -------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for f in fields(self):
            np.save(directory / f"{f.name}.npy", getattr(self, f.name), allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> CandidateModel:
        paths = {f.name: Path(directory) / f"{f.name}.npy" for f in fields(cls)}
        return cls(**{name: load_array(path, mmap) for name, path in paths.items()
                      if name not in (*PROFILE_FIELDS, *LABEL_FIELDS.values()) or path.exists()})

    @staticmethod
    def demographic_labels(directory: Path) -> dict[str, frozenset[str]]:
        """The ``age`` and ``sex`` labels ``user_features`` may name, read without loading the model (the entry
        service needs only these). They are whatever the training data's users table used."""
        paths = {name: Path(directory) / f"{stem}.npy" for name, stem in LABEL_FIELDS.items()}
        if all(path.exists() for path in paths.values()):
            return {name: frozenset(load_array(path).tolist()) for name, path in paths.items()}
        return segment_labels(load_array(Path(directory) / "segment_keys.npy"))

    # ---- lookups -----------------------------------------------------------------------------------------
    def user_rows(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each user id and whether the model knows the user (has history for them)."""
        return find_sorted(self.user_ids, user_ids)

    def item_index(self, item_ids: np.ndarray) -> np.ndarray:
        """Index of each item id, -1 if unknown."""
        pos, found = find_sorted(self.item_ids[self._item_order], item_ids)
        return np.where(found, self._item_order[pos], -1)

    def history(self, row: int) -> np.ndarray:
        """Watched item indices of one user, oldest first."""
        return self.seen_indices[self.seen_indptr[row]:self.seen_indptr[row + 1]]

    def profiles(self, user_ids: np.ndarray) -> list[Profile | None]:
        """Stored demographics of each user id (as ``user_features`` would send them); None for ids the users
        table did not list or that have history."""
        pos, found = find_sorted(self.profile_user_ids, user_ids)
        return [{"age": str(self.profile_age[p]), "sex": str(self.profile_sex[p]),
                 "kids_flg": int(self.profile_kids_flg[p])} if ok else None for p, ok in zip(pos, found, strict=True)]

    def segment_items(self, age: str | None, sex: str | None, kids_flg: int | None) -> tuple[np.ndarray, PopularList]:
        """Most popular items for a demographic segment, falling back to coarser segments, then global."""
        if age is not None and sex is not None and kids_flg is not None:
            i = self._segments.get(segment_key(age, sex, kids_flg))
            if i is not None:
                return self.segment_popular[i], "segment"
        if kids_flg is not None:
            i = self._segments.get(kids_segment_key(kids_flg))
            if i is not None:
                return self.segment_popular[i], "kids_segment"
        return self.popular, "global"

    # ---- generation --------------------------------------------------------------------------------------
    def _seen_mask(self, rows: np.ndarray) -> np.ndarray:
        starts, ends = self.seen_indptr[rows], self.seen_indptr[rows + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(len(rows)), lengths)
        flat = self.seen_indices[np.repeat(starts, lengths) + _ranges(lengths)]
        mask = np.zeros((len(rows), len(self.item_ids)), dtype=bool)
        mask[owner, flat] = True
        return mask

    def _recent_matrix(self, rows: np.ndarray) -> sp.csr_matrix:
        ends = self.seen_indptr[rows + 1]
        starts = np.maximum(self.seen_indptr[rows], ends - RECENT_ITEMS)
        lengths = ends - starts
        flat = self.seen_indices[np.repeat(starts, lengths) + _ranges(lengths)]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return sp.csr_matrix((np.ones(len(flat), np.float32), flat, indptr), shape=(len(rows), len(self.item_ids)))

    def lightfm_scores(self, rows: np.ndarray) -> np.ndarray:
        return self.user_vectors[rows] @ self.item_vectors.T

    def generate(self, rows: np.ndarray, n_lightfm: int, n_popular: int, n_cooc: int,
                 exclude_seen: bool = True) -> CandidateBatch:
        """Union of three sources for known users ``rows``, with one vectorised pass per source."""
        rows = np.asarray(rows, dtype=np.int64)
        b, n = len(rows), len(self.item_ids)
        scores = self.lightfm_scores(rows)
        blocked = self._seen_mask(rows) if exclude_seen else np.zeros((b, n), dtype=bool)
        ranked = np.where(blocked, -np.inf, scores)

        lfm_rank = np.full((b, n), n_lightfm, dtype=np.float32)
        top = top_k(ranked, min(n_lightfm, n))
        batch_rows = np.arange(b)[:, None]
        lfm_rank[batch_rows, top] = np.arange(top.shape[1], dtype=np.float32)
        from_lightfm = np.zeros((b, n), dtype=bool)
        from_lightfm[batch_rows, top] = True
        from_lightfm &= ~blocked

        from_popular = np.zeros((b, n), dtype=bool)
        if n_popular:
            pool = self.popular[: n_popular + int(blocked.sum(axis=1).max(initial=0))]
            free = ~blocked[:, pool]
            take = free & (np.cumsum(free, axis=1) <= n_popular)
            r, c = np.nonzero(take)
            from_popular[r, pool[c]] = True

        cooc = np.asarray((self._recent_matrix(rows) @ self._cooc).todense(), dtype=np.float32)
        from_cooc = np.zeros((b, n), dtype=bool)
        if n_cooc:
            cooc_ranked = np.where(blocked | (cooc <= 0), -np.inf, cooc)
            top = top_k(cooc_ranked, min(n_cooc, n))
            from_cooc[batch_rows, top] = np.isfinite(np.take_along_axis(cooc_ranked, top, axis=1))

        owner, items = np.nonzero(from_lightfm | from_popular | from_cooc)
        features = np.column_stack([
            scores[owner, items], lfm_rank[owner, items], cooc[owner, items],
            from_lightfm[owner, items], from_popular[owner, items], from_cooc[owner, items],
        ]).astype(np.float32)
        return CandidateBatch(owner=owner, items=items, features=features)


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(l)`` for each length, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total) - offsets


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest entries of each row, largest first."""
    if k <= 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
