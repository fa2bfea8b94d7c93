"""First level at run time: candidate generation from plain numpy arrays.

The same :class:`CandidateModel` produces the reranker's training candidates, the offline evaluation's
candidates and the served candidates, so what is evaluated is exactly what is served. It holds LightFM's
user and item representations (biases folded into the vectors), each user's watch history (time-ordered),
recent popularity (global and per demographic segment), an item-to-item co-occurrence table, for catalogues up to
``candidates.ease_max_items`` EASE's item-item weights, the candidate mix the reranker was trained on, and the
demographics of the users table's users who have no history yet (so they get their own segment's list without
sending their profile), and, found at training time, each known user's LightFM and EASE lists (a request with the
seen filter reads them instead of scoring every item; :meth:`CandidateModel.with_stored_lists`). Everything is
stored as ``.npy`` files, plus, for a large catalogue, the LightFM stage's nearest-neighbour index
(:mod:`recsys.core.ann`); loading never unpickles anything.

Candidates are built from each user's few hundred (user, item) pairs, never from users x catalogue matrices, so a
request costs the same for a catalogue of a million items as for one of a thousand once the LightFM top-n comes
from the index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Literal, NamedTuple, TypedDict

import numpy as np

from recsys.core.ann import INDEX_FILE, ItemIndex
from recsys.lookup import find_sorted

log = logging.getLogger("recsys")

SOURCES = ("lightfm", "popular", "cooc", "ease")  # the first-level candidate sources, each flagged in from_<source>
CANDIDATE_FEATURES = ["lfm_score", "lfm_rank", "cooc_score", "ease_score", "ease_rank",
                      *(f"from_{source}" for source in SOURCES)]
# Computed after those, and read by a reranker only if it was trained on them (see reranker.CROSS_FEATURES): EASE's
# score of the candidate from the titles the user dismissed (rated low: picked, so still a sign of taste).
LATER_FEATURES = ["ease_dismissed"]
BATCH_FEATURES = CANDIDATE_FEATURES + LATER_FEATURES


class Mix(NamedTuple):
    """How many candidates each source proposes per user (co-occurrence and popularity fill up to their count)."""

    n_lightfm: int
    n_popular: int
    n_cooc: int
    n_ease: int = 0


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
# Optional on load as well: a pair trained before EASE and the stored mix has neither (its reranker is refused anyway,
# see model_store.check_files, but the candidate model itself still loads).
EASE_FIELDS = ("ease_weights", "mix")
# Optional on load too: a pair trained before they were kept checks `user_features` against its segments' labels.
LABEL_FIELDS = {"age": "label_age", "sex": "label_sex"}
# And these: a pair trained before dismissed titles were kept excludes only the positives it learnt from.
DISMISSED_FIELDS = ("dismissed_indptr", "dismissed_indices")
# And these: a pair trained without the known users' stored lists (or before them) computes every list per request.
STORED_FIELDS = ("stored_lightfm", "stored_ease", "stored_for")
NOT_ARRAYS = ("index", "score_dismissed")  # the fields that are not saved as .npy files
STORED_BLOCK_BYTES = 64 * 2**20  # the scores of one block of users while the stored lists are built
EASE_TERMS_PER_CHUNK = 1 << 16  # (pair, title) terms summed at once for EASE pair scores: ~2 MB of temporaries


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
    features: np.ndarray  # float32 (m, len(BATCH_FEATURES))

    def __len__(self) -> int:
        return len(self.items)

    def column(self, name: str) -> np.ndarray:
        """One candidate feature by its name in :data:`BATCH_FEATURES`, so no caller depends on its position."""
        return self.features[:, BATCH_FEATURES.index(name)]

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
    """A pickle-free ``.npy``; ``mmap`` maps it read-only instead of reading it (the header and file size are still
    checked), as a plain ndarray over the mapping: every process that maps the file shares its pages."""
    try:
        return np.asarray(np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False))
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
    # EASE's item-item weights B (scores = history @ B); (0, 0) for a catalogue above candidates.ease_max_items.
    ease_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # float32 (I, I)
    # The candidate mix the reranker was trained on, as a Mix: what serving generates. Empty: the settings'.
    mix: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))               # int64 (4,)
    # Titles each user rated below the positive threshold (MovieLens): seen, so never proposed, and no positive.
    # CSR like seen_*; empty (no indptr) for logs of watches and for pairs trained before they were kept.
    dismissed_indptr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 (U+1,) or (0,)
    dismissed_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # int32
    # Each known user's LightFM and EASE top-n without the seen and dismissed titles, as `first_lists` finds them
    # (item indices, best first, -1 padded; int16 below 32,768 items), and the (n_lightfm, n_ease) they were found
    # for: built at training time (`with_stored_lists`), so a request with those counts and the seen filter reads
    # two short rows instead of scoring every item. Empty: every request computes them.
    stored_lightfm: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int16))  # (U, n_lightfm)
    stored_ease: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int16))     # (U, n_ease)
    stored_for: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))           # int64 (2,) or (0,)
    # The LightFM top-n's nearest-neighbour index; None: exact search over every item (small catalogues).
    index: ItemIndex | None = field(default=None, compare=False)
    # Whether `generate` sums the ``ease_dismissed`` column (else 0s): serving skips it for a reranker that was not
    # trained on it, which never reads the column (a sum over every candidate and dismissed title per batch).
    score_dismissed: bool = field(default=True, init=False, compare=False)

    def __post_init__(self) -> None:
        self._item_order = np.argsort(self.item_ids)
        self._segments = {str(k): i for i, k in enumerate(self.segment_keys)}

    # ---- persistence -------------------------------------------------------------------------------------
    @classmethod
    def array_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in NOT_ARRAYS]

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in self.array_fields():
            np.save(directory / f"{name}.npy", getattr(self, name), allow_pickle=False)
        if self.index is not None:
            self.index.save(directory / INDEX_FILE)

    @classmethod
    def load(cls, directory: Path, mmap: bool = False, threads: int = 1, map_index: bool = False,
             stored_lists: bool = True, score_dismissed: bool = True) -> CandidateModel:
        """The model in ``directory``. ``mmap`` maps the arrays instead of reading them: serving does, so the
        per-user arrays (vectors, histories, profiles, stored lists) are one copy in the page cache for every
        process on the host. ``map_index`` maps the item index too, for the start-up check only (a mapped index
        searches 4x slower). ``threads``: faiss' threads per search (one batch at a time in serving).
        ``stored_lists=False`` leaves the known users' stored lists out: every request computes its lists.
        ``score_dismissed=False``: the ``ease_dismissed`` column is left 0 (see :attr:`score_dismissed`)."""
        paths = {name: Path(directory) / f"{name}.npy" for name in cls.array_fields()}
        index_file = Path(directory) / INDEX_FILE
        optional = (*PROFILE_FIELDS, *LABEL_FIELDS.values(), *EASE_FIELDS, *DISMISSED_FIELDS, *STORED_FIELDS)
        arrays = {name: load_array(path, mmap) for name, path in paths.items()
                  if (name not in optional or path.exists()) and (stored_lists or name not in STORED_FIELDS)}
        if len(arrays.get("stored_for", ())) and len(arrays["stored_lightfm"]) != len(arrays["user_ids"]):
            raise ValueError(f"stored_lightfm.npy has {len(arrays['stored_lightfm'])} users' lists for "
                             f"{len(arrays['user_ids'])} users")
        if "ease_weights" in arrays and not arrays["ease_weights"].flags.c_contiguous:
            # saved column-major by an older training: its rows, which every request gathers, were 12x slower to
            # read; a row-major copy in this process (at most ease_max_items² float32), not shared
            arrays["ease_weights"] = np.ascontiguousarray(arrays["ease_weights"])
        model = cls(**arrays, index=ItemIndex.load(index_file, map_index, threads) if index_file.exists() else None)
        model.score_dismissed = score_dismissed
        return model

    @staticmethod
    def demographic_labels(directory: Path) -> dict[str, frozenset[str]]:
        """The ``age`` and ``sex`` labels ``user_features`` may name, read without loading the model (the entry
        service needs only these). They are whatever the training data's users table used."""
        paths = {name: Path(directory) / f"{stem}.npy" for name, stem in LABEL_FIELDS.items()}
        if all(path.exists() for path in paths.values()):
            return {name: frozenset(load_array(path).tolist()) for name, path in paths.items()}
        return segment_labels(load_array(Path(directory) / "segment_keys.npy"))

    @property
    def has_ease(self) -> bool:
        return self.ease_weights.size > 0

    def served_mix(self, fallback: Mix) -> Mix:
        """The mix the reranker was trained on; ``fallback`` (the settings') for a model saved without one."""
        return Mix(*map(int, self.mix)) if len(self.mix) else fallback

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

    # ---- generation ---------------------------------------------------------------------------------------
    def _history_pairs(self, rows: np.ndarray, last: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(batch position, item index) of each watched item of the users ``rows``; only the ``last`` few if given."""
        return _csr_pairs(self.seen_indptr, self.seen_indices, rows, last)

    def _excluded_keys(self, rows: np.ndarray, owner: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Sorted ``position * n + item`` keys of what the users ``rows`` must not be proposed: their history
        (``owner``, ``items``) and the titles they dismissed."""
        n = len(self.item_ids)
        if len(self.dismissed_indptr):
            d_owner, d_items = _csr_pairs(self.dismissed_indptr, self.dismissed_indices, rows)
            owner, items = np.concatenate([owner, d_owner]), np.concatenate([items, d_items])
        return np.unique(owner * n + items)

    def lightfm_scores(self, rows: np.ndarray) -> np.ndarray:
        return self.user_vectors[rows] @ self.item_vectors.T

    @cached_property
    def _item_norm(self) -> float:
        """The largest item vector's length (float64): bounds the rounding of every LightFM score."""
        norms = np.einsum("ij,ij->i", self.item_vectors, self.item_vectors, dtype=np.float64)
        return float(np.sqrt(norms.max(initial=0.0)))

    def pair_scores(self, rows: np.ndarray, owner: np.ndarray, items: np.ndarray) -> np.ndarray:
        """LightFM's score of each (user ``rows[owner]``, item) pair: one dot product per pair in numpy's own loop,
        so a pair's score does not depend on the other pairs of the call (a BLAS product's rounding depends on the
        batch's shape, tests/test_stored_lists.py)."""
        return np.einsum("ij,ij->i", self.user_vectors[rows[owner]], self.item_vectors[items])

    def _exact_top(self, rows: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Each user's ``k`` best items by :meth:`pair_scores`, ties by item index, -1 padded, given the BLAS
        ``scores`` of every item (-inf: excluded). The BLAS product is only a filter: each of its scores is within
        ``err`` of the pair's own (both round at most gamma_d * |u| * |v| away from the exact dot product), so
        every item of the true top k has a BLAS score of at least the k-th best BLAS score less twice ``err``; only
        those few are rescored. A user's list is then the same whatever batch it was computed in."""
        b, n = scores.shape
        out = np.full((b, k), -1, np.int64)
        if k == 0:
            return out
        kth = np.partition(scores, n - k, axis=1)[:, n - k]
        # BLAS and the pair's own sum each round within gamma_d = d*u/(1-d*u) x |u| |v| of the exact dot product
        # (u = 2^-24, float32), so they differ by at most 2 gamma_d |u| |v|: taken as 4 d u, for the norms' rounding
        d = self.user_vectors.shape[1]
        err = 4 * d * 2.0**-24 * np.linalg.norm(self.user_vectors[rows].astype(np.float64), axis=1) * self._item_norm
        floor = np.maximum(kth - 2 * err, np.finfo(np.float32).min)  # fewer than k finite scores: all of them
        owner, items = np.nonzero(scores >= floor[:, None])
        exact = self.pair_scores(rows, owner, items)
        order = np.lexsort((items, -exact, owner))
        owner, items = owner[order], items[order]
        rank = np.arange(len(owner)) - np.searchsorted(owner, owner)
        keep = rank < k
        out[owner[keep], rank[keep]] = items[keep]
        return out

    def lightfm_top(self, rows: np.ndarray, k: int, seen_keys: np.ndarray) -> np.ndarray:
        """Each user's ``k`` best items by LightFM score that are not in ``seen_keys`` (sorted ``position * n +
        item`` keys), best first, padded with -1: from every item's score below the index threshold (exactly, see
        :meth:`_exact_top`), from the index above it, which is asked for ``k`` plus the longest history of the
        batch so that ``k`` unseen items remain after the seen ones are dropped."""
        b, n = len(rows), len(self.item_ids)
        if self.index is None:
            scores = self.lightfm_scores(rows)
            scores[seen_keys // n, seen_keys % n] = -np.inf
            return self._exact_top(rows, scores, min(k, n))
        longest = int(np.bincount(seen_keys // n, minlength=b).max(initial=0))
        found = self.index.search(self.user_vectors[rows], k + longest)
        keys = np.arange(b)[:, None] * n + found
        usable = (found >= 0) & ~np.isin(keys, seen_keys)
        scores = np.where(usable, np.einsum("bd,bkd->bk", self.user_vectors[rows],
                                            self.item_vectors[np.where(found >= 0, found, 0)]), -np.inf)
        top = top_k(scores, min(k, found.shape[1]))
        return np.where(np.isfinite(np.take_along_axis(scores, top, axis=1)), np.take_along_axis(found, top, axis=1), -1)

    def _cooc_pairs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted ``position * n + item`` keys of the items co-watched with each user's last few titles, and their
        summed co-occurrence scores (only positive ones)."""
        n = len(self.item_ids)
        owner, recent = self._history_pairs(rows, RECENT_ITEMS)
        keys = (owner[:, None] * n + self.cooc_indices[recent]).ravel()
        weights = self.cooc_scores[recent].ravel()
        keys, where = np.unique(keys, return_inverse=True)
        scores = np.bincount(where, weights=weights, minlength=len(keys)).astype(np.float32)
        return keys[scores > 0], scores[scores > 0]

    def ease_scores(self, owner: np.ndarray, items: np.ndarray, b: int) -> np.ndarray:
        """float32 (b, I): EASE's score of every item for each of ``b`` users with history pairs (owner, items).

        The sum of the weights' rows of each user's titles, added in place one row at a time, in history order: the
        rows are read once and never copied (a gathered copy times a sparse history cost 3x as much; a sparse
        history times the whole (I, I) matrix ~10 ms even for one user, in scipy's handling of the dense operand)."""
        scores = np.zeros((b, len(self.item_ids)), np.float32)
        for user, item in zip(owner.tolist(), items.tolist(), strict=True):
            np.add(scores[user], self.ease_weights[item], out=scores[user])
        return scores

    def ease_pair_scores(self, rows: np.ndarray, owner: np.ndarray, items: np.ndarray,
                         indptr: np.ndarray | None = None, indices: np.ndarray | None = None) -> np.ndarray:
        """EASE's score of each (user ``rows[owner]``, item) pair, bit for bit :meth:`ease_scores`' entry: the
        weights of the user's titles in that item's column, added one title at a time in history order
        (``np.add.at`` adds in index order), for the pairs only, so a request with stored lists never sums whole
        rows. The (pair, title) terms go in chunks of :data:`EASE_TERMS_PER_CHUNK` (or a quarter of a catalogue
        row's count if more), cut between pairs, so memory does not grow with the histories and a pair's sum is the
        same whatever the chunks (at 1,024 terms a chunk, a batch of 32 users took ~50 chunks of ten numpy calls
        each: 1.1 -> 0.5 CPU ms on the default pair). The titles are each user's row of the CSR
        ``indptr``/``indices``: by default the history (``seen_*``); the dismissed titles (``dismissed_*``) give the
        ``ease_dismissed`` feature."""
        if indptr is None or indices is None:
            indptr, indices = self.seen_indptr, self.seen_indices
        starts = indptr[rows][owner]
        lengths = indptr[rows + 1][owner] - starts
        ends = np.cumsum(lengths)
        chunk = max(EASE_TERMS_PER_CHUNK, len(self.item_ids) // 4)
        cuts = np.searchsorted(ends, np.arange(chunk, int(ends[-1]) if len(ends) else 0, chunk))
        scores = np.zeros(len(items), np.float32)
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(items)], strict=True):
            pair = np.repeat(np.arange(lo, hi), lengths[lo:hi])
            titles = indices[np.repeat(starts[lo:hi], lengths[lo:hi]) + _ranges(lengths[lo:hi])]
            np.add.at(scores, pair, self.ease_weights[titles, items[pair]])
        return scores

    def first_lists(self, rows: np.ndarray, mix: Mix, history_owner: np.ndarray, history_items: np.ndarray,
                    seen_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The users' LightFM top ``n_lightfm`` and EASE top ``n_ease`` without ``seen_keys`` (item indices, best
        first, -1 padded): the part of :meth:`generate` that scores every item, and what :meth:`with_stored_lists`
        keeps. A user's lists do not depend on the other users of the batch. Third, EASE's scores of every item
        when they were summed for the list (excluded titles -inf), else None."""
        n = len(self.item_ids)
        lfm_top = self.lightfm_top(rows, mix.n_lightfm, seen_keys)
        if not (self.has_ease and mix.n_ease):
            return lfm_top, np.zeros((len(rows), 0), np.int64), None
        scores = self.ease_scores(history_owner, history_items, len(rows))
        scores[seen_keys // n, seen_keys % n] = -np.inf  # an excluded title is no candidate
        top = top_k(scores, min(mix.n_ease, n))
        return lfm_top, np.where(np.isfinite(np.take_along_axis(scores, top, axis=1)), top, -1), scores

    def _exclusions(self, rows: np.ndarray, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The users' history pairs (when needed) and the sorted keys of what they must not be proposed."""
        empty = np.zeros(0, np.int64)
        history_owner, history_items = self._history_pairs(rows) if exclude_seen or self.has_ease else (empty, empty)
        seen_keys = self._excluded_keys(rows, history_owner, history_items) if exclude_seen else empty
        return history_owner, history_items, seen_keys

    def with_stored_lists(self, mix: Mix, block_bytes: int = STORED_BLOCK_BYTES) -> CandidateModel:
        """This model with every known user's LightFM and EASE lists for ``mix`` and the seen filter stored, found
        by :meth:`first_lists` (what a request would run) for blocks of users whose scores take ``block_bytes``,
        with a progress line every 30 s. A model with an item index is returned as it is: the index's search
        depends on the batch, so its lists are found per request."""
        if self.index is not None:
            return self
        users, n = len(self.user_ids), len(self.item_ids)
        dtype = np.int16 if n <= np.iinfo(np.int16).max else np.int32
        lightfm = np.empty((users, min(mix.n_lightfm, n)), dtype)
        ease = np.empty((users, min(mix.n_ease, n) if self.has_ease and mix.n_ease else 0), dtype)
        block = max(1, block_bytes // (8 * n))  # two float32 rows of scores per user
        started = last = time.monotonic()
        for start in range(0, users, block):
            rows = np.arange(start, min(start + block, users))
            lightfm[rows], ease[rows], _ = self.first_lists(rows, mix, *self._exclusions(rows, exclude_seen=True))
            if time.monotonic() - last > 30:
                last, done = time.monotonic(), rows[-1] + 1
                log.info("stored lists: %d of %d users, about %.0f s left", done, users,
                         (last - started) * (users - done) / done)
        return replace(self, stored_lightfm=lightfm, stored_ease=ease,
                       stored_for=np.array([mix.n_lightfm, mix.n_ease], np.int64))

    def stored_lists_fit(self, mix: Mix) -> bool:
        """Whether the stored lists are the ones ``mix`` asks for (with the seen filter)."""
        return len(self.stored_for) == 2 and (mix.n_lightfm, mix.n_ease) == tuple(self.stored_for.tolist())

    def generate(self, rows: np.ndarray, mix: Mix, exclude_seen: bool = True) -> CandidateBatch:
        """Union of the sources for known users ``rows``, as flat (user, item) pairs, vectorised over the batch.
        Rows come out ordered by user, then item index. EASE proposes and scores only if the model has it. The
        LightFM and EASE lists are the stored ones when they fit ``mix`` and the seen filter (the same lists)."""
        n_lightfm, n_popular, n_cooc, n_ease = mix
        rows = np.asarray(rows, dtype=np.int64)
        b, n = len(rows), len(self.item_ids)
        history_owner, history_items, seen_keys = self._exclusions(rows, exclude_seen)
        position = np.arange(b)[:, None]

        ease_all = None
        if exclude_seen and self.stored_lists_fit(mix):
            lfm_top, ease_top = self.stored_lightfm[rows].astype(np.int64), self.stored_ease[rows].astype(np.int64)
        else:
            lfm_top, ease_top, ease_all = self.first_lists(rows, mix, history_owner, history_items, seen_keys)
        lfm_keys, lfm_ranks = _ranked_keys(lfm_top, n)
        ease_keys, ease_ranks = _ranked_keys(ease_top, n)

        pop_keys = np.zeros(0, np.int64)
        if n_popular:
            longest = int(np.bincount(seen_keys // n, minlength=b).max(initial=0))
            pool = position * n + self.popular[: n_popular + longest].astype(np.int64)
            free = ~find_sorted(seen_keys, pool.ravel())[1].reshape(pool.shape)  # seen_keys is sorted: no np.isin sort
            pop_keys = pool[free & (np.cumsum(free, axis=1) <= n_popular)]

        cooc_keys, cooc_scores = self._cooc_pairs(rows)
        usable = ~find_sorted(seen_keys, cooc_keys)[1]
        cooc_keys, cooc_scores = cooc_keys[usable], cooc_scores[usable]
        order = np.lexsort((cooc_keys, -cooc_scores, cooc_keys // n))  # per user: best score first
        owner = cooc_keys[order] // n
        rank = np.arange(len(order)) - np.searchsorted(owner, owner)
        picked_cooc = cooc_keys[order[rank < n_cooc]]

        keys, where = np.unique(np.concatenate([lfm_keys, pop_keys, picked_cooc, ease_keys]), return_inverse=True)
        ends = np.cumsum([len(lfm_keys), len(pop_keys), len(picked_cooc), len(ease_keys)])
        lfm_at, pop_at, cooc_at, ease_at = np.split(where, ends[:-1])
        owner, items = keys // n, keys % n
        lfm_rank = np.full(len(keys), n_lightfm, dtype=np.float32)
        lfm_rank[lfm_at] = lfm_ranks
        cooc = np.zeros(len(keys), dtype=np.float32)
        found = np.searchsorted(cooc_keys, keys).clip(max=max(len(cooc_keys) - 1, 0))
        if len(cooc_keys):
            cooc = np.where(cooc_keys[found] == keys, cooc_scores[found], 0.0).astype(np.float32)
        ease_rank = np.full(len(keys), n_ease, dtype=np.float32)
        ease_rank[ease_at] = ease_ranks
        ease = np.zeros(len(keys), np.float32)
        if ease_all is not None:  # summed for the list already: the same numbers (tests/test_stored_lists.py)
            ease = ease_all[owner, items]
        elif self.has_ease:
            ease = self.ease_pair_scores(rows, owner, items)
        ease_dismissed = np.zeros(len(keys), np.float32)
        if self.has_ease and len(self.dismissed_indptr) and self.score_dismissed:
            ease_dismissed = self.ease_pair_scores(rows, owner, items, self.dismissed_indptr, self.dismissed_indices)
        flags = np.zeros((len(keys), len(SOURCES)), dtype=np.float32)
        for column, at in enumerate((lfm_at, pop_at, cooc_at, ease_at)):
            flags[at, column] = 1.0
        scores = self.pair_scores(rows, owner, items)
        features = np.column_stack([scores, lfm_rank, cooc, ease, ease_rank, flags, ease_dismissed]).astype(np.float32)
        return CandidateBatch(owner=owner, items=items, features=features)


def _ranked_keys(top: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted-by-user ``position * n + item`` keys of a (b, k) list of item indices (-1: none) and their ranks."""
    usable = top >= 0
    keys = (np.arange(len(top))[:, None] * n + top)[usable]
    return keys, np.broadcast_to(np.arange(top.shape[1], dtype=np.float32), top.shape)[usable]


def _csr_pairs(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray,
               last: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(batch position, column) of each entry of the CSR rows ``rows``; only each row's ``last`` few if given."""
    ends = indptr[rows + 1]
    starts = indptr[rows] if last is None else np.maximum(indptr[rows], ends - last)
    lengths = ends - starts
    owner = np.repeat(np.arange(len(rows)), lengths)
    return owner, indices[np.repeat(starts, lengths) + _ranges(lengths)].astype(np.int64)


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
