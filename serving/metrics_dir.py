"""A Prometheus multiprocess folder of each server's own, so that two servers on one store keep their metrics.

`bentoml serve` (BentoML 1.4.40, ``ensure_prometheus_dir``) empties ``$BENTOML_HOME/prometheus_multiproc_dir``
as it starts and hands that folder to its workers, which keep their metrics in memory-mapped files there. A
second server on the same ``BENTOML_HOME`` (``make container``'s host server beside ``make serve``, a test's
server beside the session's) deleted the files of the first one's workers: from then on the first server's
``/metrics`` silently stopped counting. BentoML loads the service module before it prepares the folder, so the
server process can point it at a sub-folder named by its own pid; workers inherit the folder through
``PROMETHEUS_MULTIPROC_DIR`` and are left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
FOLDER = "prometheus_multiproc_dir"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def use_own_prometheus_dir() -> None:
    """In the `bentoml serve` process: this server's metrics folder is ``<home>/prometheus_multiproc_dir/<pid>``,
    and the folders of servers that have exited are removed. Does nothing in a worker (its server chose)."""
    if ENV in os.environ:
        return
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        root = Path(BentoMLContainer.bentoml_home.get()) / FOLDER
        provider = BentoMLContainer.prometheus_multiproc_dir
    except (ImportError, AttributeError) as exc:  # another BentoML than the locked one: keep its behaviour
        log.warning("metrics: cannot give this server its own Prometheus folder (%s); two servers on one "
                    "BENTOML_HOME would reset each other's /metrics", exc)
        return
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_dir() and folder.name.isdigit() and not _alive(int(folder.name)):
                shutil.rmtree(folder, ignore_errors=True)
    provider.set(str(root / str(os.getpid())))
