"""What `bentoml serve` itself settles once for every worker it starts and restarts.

BentoML imports the service module in the server process (circus' arbiter), then again in every worker it starts,
and again whenever it restarts one; workers inherit the server's environment. So whatever a worker would resolve
on its own at import, the server resolves once and hands down. Workers are told apart by
``PROMETHEUS_MULTIPROC_DIR``, which the server puts in their environment.

- **The model pair.** Each worker resolved ``latest`` itself: a worker restarted after a newer pair was trained
  into the store loaded that pair while the others stayed on the old one, and answers mixed two catalogues under
  one ``model_version``. The server pins the version it resolved in ``RECSYS_SERVING__MODEL_VERSION``.
- **The Prometheus folder.** BentoML 1.4.40 (``ensure_prometheus_dir``) empties
  ``$BENTOML_HOME/prometheus_multiproc_dir`` as a server starts; a second server on the same store
  (``make container``'s host server beside ``make serve``, a test's server beside the session's) deleted the files
  of the first one's workers, and its ``/metrics`` silently stopped counting. BentoML loads the service module
  before it prepares that folder, so the server points it at a sub-folder named by its own pid.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from recsys.settings import ENV_PREFIX

log = logging.getLogger(__name__)

WORKER_MARK = "PROMETHEUS_MULTIPROC_DIR"
MODEL_VERSION_ENV = f"{ENV_PREFIX}SERVING__MODEL_VERSION"
FOLDER = "prometheus_multiproc_dir"


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ...; utime is [11], rss pages [21]);
    empty if the process has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def service_pids(root: int) -> dict[str, list[int]]:
    """PIDs of the service workers under process ``root`` (a `bentoml serve`), by service name, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        if fields := stat_fields(int(entry.name)):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[str, list[int]] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "--service-name" in argv:
            found.setdefault(argv[argv.index("--service-name") + 1], []).append(pid)
    return found


def is_server_process() -> bool:
    return WORKER_MARK not in os.environ


def pin_model_version(version: str) -> None:
    """Every worker, and every restart of one, loads exactly this pair."""
    if is_server_process():
        os.environ[MODEL_VERSION_ENV] = version


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def use_own_prometheus_dir() -> None:
    """This server's metrics folder is ``<home>/prometheus_multiproc_dir/<pid>``; folders of servers that have
    exited are removed."""
    if not is_server_process():
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
