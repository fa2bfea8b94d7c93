"""A model pair's files read once before traffic, so that the first requests do not wait for the disk.

The per-user arrays are memory-mapped (recsys/core/candidates.py, recsys/features/): start-up reads headers only.
On a host whose page cache does not hold the files (a fresh machine, a new container, after a reboot), the first
requests that touch each page then read it from disk, one page fault at a time and in random order, in every
request's latency. One sequential read of the pair's files in `bentoml serve` itself, before any worker starts,
fills the page cache once for every process of the host: about a second per GB from an SSD, and little more than
a memory copy when the files are cached already. The pages are the kernel's cache, not any process's memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("recsys")
CHUNK_BYTES = 8 << 20


def read_ahead(directories: Iterable[Path]) -> tuple[int, int]:
    """Read every file under ``directories`` once, through one reused buffer; the number of files and bytes."""
    files = size = 0
    start = time.monotonic()
    buffer = bytearray(CHUNK_BYTES)
    for path in sorted(p for directory in directories for p in directory.rglob("*") if p.is_file()):
        with path.open("rb", buffering=0) as file:
            while read := file.readinto(buffer):
                size += read
        files += 1
    log.info("recsys: read the model pair's %d files (%.0f MB) into the page cache in %.1f s", files, size / 2**20,
             time.monotonic() - start)
    return files, size
