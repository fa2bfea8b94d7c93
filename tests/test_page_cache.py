"""`bentoml serve` reads the pair's files into the page cache before traffic (recsys/serving/page_cache.py).

Residency is read from the kernel (mincore(2)) after the files' pages were dropped from the cache, so the test
fails if the read-ahead reads nothing, skips a file or a nested directory, or stops early.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.core import model_store
from recsys.serving import page_cache
from tests.helpers import post

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PAGE = mmap.PAGESIZE


def _cached_pages(path: Path) -> int:
    """How many of the file's pages are in the page cache (mapping a file does not read it)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        address = LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        flags = (ctypes.c_ubyte * ((size + PAGE - 1) // PAGE))()
        assert LIBC.mincore(address, size, flags) == 0, os.strerror(ctypes.get_errno())
        LIBC.munmap(address, size)
    finally:
        os.close(fd)
    return sum(flag & 1 for flag in flags)


def _drop_from_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def pair_dirs() -> Iterator[list[Path]]:
    """Two model directories, one with a nested folder, files of a few MB (more than one read chunk) and an
    empty one; under the project's var/, on the disk a model store is on (/tmp may be memory, never dropped)."""
    var = Path(__file__).parents[1] / "var"
    var.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=var) as tmp:
        yield _write_pair(Path(tmp))


def _write_pair(tmp_path: Path) -> list[Path]:
    sizes = {"candidates/arrays/user_vectors.npy": page_cache.CHUNK_BYTES + 3 * PAGE + 5,
             "candidates/meta.json": 100, "ranker/features/online/user_age.npy": 2 * PAGE, "ranker/empty": 0}
    for name, size in sizes.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        _drop_from_cache(path)
    return [tmp_path / "candidates", tmp_path / "ranker"]


def test_every_file_of_the_pair_is_in_the_page_cache_after_the_read_ahead(pair_dirs):
    files = sorted(p for d in pair_dirs for p in d.rglob("*") if p.is_file() and p.stat().st_size)
    big = files[0]
    if _cached_pages(big) == (big.stat().st_size + PAGE - 1) // PAGE:
        pytest.fail("this file system keeps dropped pages cached (tmpfs?): the check below would prove nothing")
    count, size = page_cache.read_ahead(pair_dirs)
    assert (count, size) == (4, sum(p.stat().st_size for p in files))
    for path in files:
        assert _cached_pages(path) == (path.stat().st_size + PAGE - 1) // PAGE, path


def test_bentoml_serve_reads_the_whole_pair_as_it_starts(server, trained_home):
    version = post(f"{server.url}/recommend", {"user_id": 0, "top_k": 1})[1]["model_version"]
    models = trained_home / "bentoml" / "models"
    files = [p for name in (model_store.CANDIDATES, model_store.RANKER) for p in (models / name / version).rglob("*")
             if p.is_file()]
    read = re.search(r"read the model pair's (\d+) files \((\d+) MB\)", server.output())
    assert read, server.output()[-3000:]
    assert int(read[1]) == len(files) and int(read[2]) == round(sum(p.stat().st_size for p in files) / 2**20)
