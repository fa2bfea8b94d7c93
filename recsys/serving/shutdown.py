"""Shutdown in order: the entry stops accepting and drains its connections, then the model services stop.

`bentoml serve` is a circus arbiter. On SIGTERM it stopped all its watchers at once, so the model services went
away while the entry still had requests in flight (503s), and the entry's uvicorn closed every idle keep-alive
connection at once, so a request a client sent on one just then was reset. Now:

- **The arbiter** (the `bentoml serve` process) stops the watcher that serves the public socket first and waits for
  its workers to exit before it stops the others. It also closes its own copy of the public socket at once, so
  once the entry workers have closed theirs the port refuses new connections instead of queueing them for a
  process that will never accept them (and resetting them when it exits). For the same reason every worker
  closes, as it starts, the listening sockets circus lets it inherit besides its own: the model services held the
  public one open until they exited.
- **An entry worker** stops accepting, then lets every open connection finish: a request in flight, or one that
  arrives on a kept-alive connection meanwhile, gets its real answer marked ``Connection: close``
  (serving/traffic.py); idle connections end at their usual idle timeout (serving/connections.py). So shutting
  down adds no new way to lose a request: the only race left is the one every keep-alive timeout has. At most
  ``drain_timeout_s``, then uvicorn's own shutdown.
- **A model service worker** that is told to stop while an entry worker is still alive keeps serving until the
  entry has gone (at most ``drain_timeout_s`` and a few seconds). That covers a SIGTERM to every process at once
  (Ctrl-C in a terminal, systemd's default ``KillMode=control-group``), which the arbiter's order alone cannot.

Both patches (circus' arbiter as BentoML subclasses it, uvicorn's ``Server.shutdown``) are pinned to the versions
they were written for, like recsys/serving/request_timer.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from typing import Any

import uvicorn

from recsys.serving.pins import written_for
from recsys.serving.server_process import is_server_process, service_pids
from recsys.serving.traffic import DRAINING

WRITTEN_FOR = {"bentoml": "1.4.40", "uvicorn": "0.54.0"}
AFTER_DRAIN_S = 5.0  # what a model worker adds to the entry's drain before it stops anyway
POLL_S = 0.05
log = logging.getLogger("recsys")


def apply(entry: str, drain_timeout_s: float) -> None:
    """Order this process's part of the shutdown: the arbiter's watchers, or this worker's uvicorn server."""
    if not written_for(__name__, WRITTEN_FOR, lost="on SIGTERM the model services may stop before the entry has "
                       "drained", check="circus' Arbiter._stop_watchers and uvicorn's Server.shutdown"):
        return
    if is_server_process():
        _stop_entry_first()
    else:
        _close_inherited_listeners()
        _before_uvicorn_shutdown(entry, drain_timeout_s)


def _close_inherited_listeners() -> None:
    """Close the listening sockets this worker inherited from circus other than its own (``--fd`` N)."""
    own = sys.argv[sys.argv.index("--fd") + 1] if "--fd" in sys.argv else None
    if own is None:
        return
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if str(fd) == own or not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(fd)) as probe:
                listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:  # the fd of the listing itself, already gone
            continue
        if listening:
            os.close(fd)


def _stop_entry_first() -> None:
    from _bentoml_impl.server.serving import API_SERVER_NAME
    from bentoml._internal.utils.circus import Arbiter
    from tornado import gen

    public = f"circus.sockets.{API_SERVER_NAME}"

    @gen.coroutine
    def _stop_watchers(self: Any, close_output_streams: bool = False, watcher_iter_func: Any = None) -> Any:
        watchers = (watcher_iter_func or self.iter_watchers)(reverse=False)
        entry = [w for w in watchers if public in " ".join(map(str, w.args or []))]
        if self._stopping and API_SERVER_NAME in self.sockets:  # the server is going away, not restarting workers
            self.sockets[API_SERVER_NAME].close()
        yield gen.multi([w._stop(close_output_streams) for w in entry])
        yield gen.multi([w._stop(close_output_streams) for w in watchers if w not in entry])

    Arbiter._stop_watchers = _stop_watchers


def _before_uvicorn_shutdown(entry: str, drain_timeout_s: float) -> None:
    from bentoml._internal.context import server_context

    original = uvicorn.Server.shutdown

    async def shutdown(self: uvicorn.Server, sockets: Any = None) -> None:
        if server_context.service_type == "entry_service":
            await _drain(self, drain_timeout_s)
        else:
            await _outlive(self, entry, drain_timeout_s + AFTER_DRAIN_S)
        await original(self, sockets)

    uvicorn.Server.shutdown = shutdown  # type: ignore[method-assign]  # the patch itself


async def _drain(server: uvicorn.Server, timeout: float) -> None:
    """Stop accepting; wait until every open connection has closed (each closes after its next answer, or at its
    idle timeout), at most ``timeout``."""
    for listener in server.servers:
        listener.close()
    DRAINING.set()
    start = time.monotonic()
    log.info("recsys: stopping: no new connections; draining %d open ones (at most %g s)",
             len(server.server_state.connections), timeout)
    while server.server_state.connections and not server.force_exit and time.monotonic() - start < timeout:
        await asyncio.sleep(POLL_S)
    log.info("recsys: drained in %.1f s; %d connections left", time.monotonic() - start,
             len(server.server_state.connections))
    if server.config.timeout_graceful_shutdown is None:  # uvicorn would wait for what is left for ever
        server.config.timeout_graceful_shutdown = 1


async def _outlive(server: uvicorn.Server, entry: str, timeout: float) -> None:
    """Keep serving while a worker of the ``entry`` service (a sibling process) is alive, at most ``timeout``."""
    start = time.monotonic()
    if service_pids(os.getppid()).get(entry):
        log.info("recsys: stopping once the %s service has drained (at most %g s)", entry, timeout)
    while (service_pids(os.getppid()).get(entry) and not server.force_exit
           and time.monotonic() - start < timeout):
        await asyncio.sleep(POLL_S * 2)
