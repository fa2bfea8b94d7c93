"""Finished stages of `recsys train` on disk, so that a stopped run started again does not redo them.

Each entry is keyed by everything its result was computed from: the built-in dataset by its size, seed and the
generator's source code; a first-level fit (feature tables, candidate model, LightFM state, epoch search) by the
data's fingerprint, its cut-off, the settings it depends on, its seed and the fit it went on from. A changed input
is a different key, so an entry is never stale, only unused. Entries are written to a temporary folder and renamed
into place, so a run stopped while writing leaves no half entry. The folder is ``settings.cache_dir``
(``var/cache``, gitignored); ``recsys train --no-cache`` neither reads nor writes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
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
    """Entries under ``root/<kind>/<key>/``; with ``root`` None every lookup misses and nothing is written."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def cached(self, kind: str, key: str, compute: Callable[[], T], save: Callable[[T, Path], None],
               load: Callable[[Path], T]) -> T:
        """``load`` the entry if there is one; else ``compute`` it and ``save`` it for the next run."""
        if self.root is None:
            return compute()
        entry = self.root / kind / key
        if entry.is_dir():
            log.info("cache hit: %s %s (%s)", kind, key, entry)
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
        return value
