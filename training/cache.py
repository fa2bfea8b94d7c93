"""Finished stages of `recsys train` on disk, so that a stopped run started again does not redo them.

Each entry is keyed by everything its result was computed from: the built-in dataset by its size, seed and the
generator's source code; a first-level fit (feature tables, candidate model, LightFM state, epoch search) by the
data's fingerprint, its cut-off, the settings it depends on, its seed and the fit it went on from. A changed input
is a different key, so an entry is never stale, only unused. Entries are written to a temporary folder and renamed
into place, so a run stopped while writing leaves no half entry. The folder is ``settings.cache_dir``
(``var/cache``, gitignored); ``recsys train --no-cache`` neither reads nor writes it.

Unused keys would pile up (at Kion's size each run with other settings leaves 2 GB), so the folder is bounded by
``settings.cache_max_gb``: after each write the least recently used entries (a hit counts as a use) are deleted
until the rest fits, each deletion logged; the entry just written is always kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("recsys")
T = TypeVar("T")


def cache_key(*parts: object) -> str:
    """A short hash of ``parts`` (JSON; settings as their ``model_dump()``)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class StageCache:
    """Entries under ``root/<kind>/<key>/``, at most ``max_bytes`` of them in all (None: unbounded); with ``root``
    None every lookup misses and nothing is written."""

    def __init__(self, root: Path | None, max_bytes: int | None = None,
                 on_hit: Callable[[], None] | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.on_hit = on_hit  # told of every hit: a run's progress estimate must not take a hit's pace for its own

    def cached(self, kind: str, key: str, compute: Callable[[], T], save: Callable[[T, Path], None],
               load: Callable[[Path], T]) -> T:
        """``load`` the entry if there is one; else ``compute`` it and ``save`` it for the next run."""
        if self.root is None:
            return compute()
        entry = self.root / kind / key
        if entry.is_dir():
            log.info("cache hit: %s %s (%s)", kind, key, entry)
            if self.on_hit is not None:
                self.on_hit()
            os.utime(entry)  # used now: the last to be evicted
            return load(entry)
        log.info("cache miss: %s %s", kind, key)
        value = compute()
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
        try:
            save(value, staging)
            os.replace(staging, entry)
        except OSError as exc:  # another run stored it meanwhile, or the disk is full: the run itself goes on
            log.warning("could not cache %s %s: %s", kind, key, exc)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.evict(keep=entry)
        return value

    def evict(self, keep: Path | None = None) -> None:
        """Delete the least recently used entries (but ``keep``) until the rest take at most ``max_bytes``."""
        if self.root is None or self.max_bytes is None:
            return
        entries = [e for e in self.root.glob("*/*") if e.is_dir() and not e.name.startswith(".")]
        sizes = {e: _size(e) for e in entries}
        total = sum(sizes.values())
        for entry in sorted(entries, key=lambda e: e.stat().st_mtime):
            if total <= self.max_bytes:
                break
            if entry == keep:
                continue
            log.info("cache evicted: %s %s (%.1f MB, unused since %s) to stay within %.1f MB", entry.parent.name,
                     entry.name, sizes[entry] / 1e6, time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.stat().st_mtime)),
                     self.max_bytes / 1e6)
            shutil.rmtree(entry, ignore_errors=True)
            total -= sizes[entry]


def _size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
