"""The LightFM stage's approximate nearest-neighbour index, for catalogues too large to score every item per user.

LightFM ranks items by an inner product (user embedding . item embedding + item bias; the bias is the item
vector's last coordinate and the user vector's last coordinate is 1, and the user bias is left out since it does
not change a user's ranking). Inner product is not a distance, so the index is built on the usual MIPS-to-L2
transform: every item vector ``v`` gets one more coordinate ``sqrt(M^2 - |v|^2)`` (``M`` the largest item norm) and
every query a 0 there. Then ``|q - v'|^2 = |q|^2 + M^2 - 2 q.v``: for one user, the nearest items in L2 are exactly
the best ones by LightFM score. The index only picks which items to look at; their scores are computed again from
the vectors, so a served score is the exact LightFM score whichever way the item was found.

The index is faiss' IVF-Flat (k-means lists, exact distances inside the ``nprobe`` lists nearest to the query),
picked over HNSW graphs (faiss HNSW, usearch, voyager) by measurement on this project's machine: for the same
recall it builds 6-25x faster, and it was the only one to reach a recall@100 of 0.95 against exact search (README,
"Large catalogues"). Serving reads the file into memory: searching faiss' memory-mapped lists took 4x as long
(2.75 against 0.63 ms per user for a million items); the start-up check only maps it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np

log = logging.getLogger(__name__)

INDEX_FILE = "item_index.faiss"
MIN_POINTS_PER_LIST = 39  # faiss' k-means wants at least this many training points per centroid
TRAIN_POINTS_PER_LIST = 64
# faiss' default of 25 k-means iterations took 366 s for a million items on the shared machine, 10 took 33 s, and
# the recall@100 at the same nprobe moved by 0.002 (the catalogue model's vectors)
KMEANS_ITERATIONS = 10
RECALL_K = 100


def mips_to_l2(item_vectors: np.ndarray) -> np.ndarray:
    """Item vectors with the extra coordinate that turns inner-product order into L2 order."""
    norms = np.einsum("ij,ij->i", item_vectors, item_vectors, dtype=np.float64)
    extra = np.sqrt(np.maximum(norms.max(initial=0.0) - norms, 0.0))
    return np.hstack([item_vectors, extra[:, None]]).astype(np.float32)


def queries(user_vectors: np.ndarray) -> np.ndarray:
    return np.hstack([user_vectors, np.zeros((len(user_vectors), 1), np.float32)]).astype(np.float32)


def default_lists(n_items: int) -> int:
    """About 4 sqrt(n) lists (4,000 for a million items), never more than the training points allow."""
    return int(np.clip(round(4 * np.sqrt(n_items)), 1, max(1, n_items // MIN_POINTS_PER_LIST)))


@dataclass
class ItemIndex:
    index: faiss.IndexIVFFlat
    recall: float | None = None  # recall@100 against exact search, measured when it was built (not saved with it)
    threads: int = 1  # faiss' OpenMP threads per search

    @classmethod
    def build(cls, item_vectors: np.ndarray, nprobe: int, seed: int = 42, threads: int = 1) -> ItemIndex:
        faiss.omp_set_num_threads(threads)
        data = mips_to_l2(np.asarray(item_vectors, dtype=np.float32))
        lists = default_lists(len(data))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], lists, faiss.METRIC_L2)
        index.cp.seed = seed
        index.cp.niter = KMEANS_ITERATIONS
        started = time.perf_counter()
        # k-means on a sample: 64 points per list place the lists as well as all of them, at a fraction of the time
        sample = np.random.default_rng(seed).choice(len(data), min(len(data), TRAIN_POINTS_PER_LIST * lists),
                                                    replace=False)
        index.train(data[np.sort(sample)])
        index.add(data)
        index.nprobe = min(nprobe, lists)
        log.info("item index: %d items in %d lists, nprobe %d, built in %.1f s", len(data), lists, index.nprobe,
                 time.perf_counter() - started)
        return cls(index, threads=threads)

    def search(self, user_vectors: np.ndarray, k: int) -> np.ndarray:
        """Item indices of about the ``k`` best items per user, best first; -1 where the probed lists held fewer."""
        k = min(k, self.index.ntotal)
        if k <= 0 or len(user_vectors) == 0:
            return np.zeros((len(user_vectors), max(k, 0)), dtype=np.int64)
        # OpenMP's thread count is per calling thread, and a service searches in its worker threads, not in the
        # thread that loaded the index: there faiss ran a team of one thread per core, whose spinning between
        # searches took the cores the other services needed (candidates 2.6 CPU ms per request at 1M items)
        if faiss.omp_get_max_threads() != self.threads:
            faiss.omp_set_num_threads(self.threads)
        return self.index.search(queries(np.asarray(user_vectors, dtype=np.float32)), k)[1]

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, mmap: bool = False, threads: int = 1) -> ItemIndex:
        """``mmap``: map the file instead of reading it, for checks (a mapped index searches 4x slower)."""
        faiss.omp_set_num_threads(threads)
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
        except RuntimeError as exc:  # faiss' message is a C++ assertion; say which file
            raise ValueError(f"cannot read {Path(path).name} ({str(exc).splitlines()[-1][:200]})") from exc
        return cls(cast("faiss.IndexIVFFlat", index), threads=threads)  # what build_index writes

    def describe(self) -> dict[str, Any]:
        measured = {} if self.recall is None else {f"recall_at_{RECALL_K}": round(self.recall, 4)}
        return {"library": f"faiss-cpu {package_version('faiss-cpu')}", "kind": "IVF-Flat on the MIPS->L2 transform",
                "items": int(self.index.ntotal), "lists": int(self.index.nlist), "nprobe": int(self.index.nprobe),
                **measured}


def exact_top_k(user_vectors: np.ndarray, item_vectors: np.ndarray, k: int = RECALL_K) -> np.ndarray:
    """Each user's k best items by LightFM score (unordered), scoring the whole catalogue 256 users at a time."""
    k = min(k, len(item_vectors))
    return np.vstack([np.argpartition(-(user_vectors[lo:lo + 256] @ item_vectors.T), k - 1, axis=1)[:, :k]
                      for lo in range(0, len(user_vectors), 256)] or [np.zeros((0, k), np.int64)])


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each user's exact top-k that ``found`` (the index's top-k) holds."""
    hits = sum(len(np.intersect1d(e, f)) for e, f in zip(exact, found, strict=True))
    return hits / max(exact.size, 1)


def recall_at_k(index: ItemIndex, user_vectors: np.ndarray, item_vectors: np.ndarray, k: int = RECALL_K) -> float:
    """Recall@k of the index against exact search for these users."""
    exact = exact_top_k(user_vectors, item_vectors, k)
    return recall(index.search(user_vectors, exact.shape[1]), exact)


def build_index(item_vectors: np.ndarray, user_vectors: np.ndarray, nprobe: int, target: float, seed: int = 42,
                threads: int = 1) -> ItemIndex:
    """The index, searching the fewest lists (from ``nprobe`` up, 1.5x per step) that reach a recall@100 of
    ``target`` against exact search on ``user_vectors`` (a sample of the users), or every list.

    How many lists that takes depends on the vectors: LightFM's are far less clustered than random benchmark
    data (README, "Large catalogues"), so a fixed nprobe would either miss the target or waste time."""
    index = ItemIndex.build(item_vectors, nprobe, seed, threads)
    exact = exact_top_k(user_vectors, item_vectors)
    while True:
        index.recall = recall(index.search(user_vectors, exact.shape[1]), exact)
        log.info("item index: nprobe %d of %d lists, recall@%d %.4f against exact search on %d users",
                 index.index.nprobe, index.index.nlist, RECALL_K, index.recall, len(user_vectors))
        if index.recall >= target or index.index.nprobe >= index.index.nlist:
            return index
        index.index.nprobe = min(index.index.nlist, max(index.index.nprobe + 1, round(index.index.nprobe * 1.5)))
