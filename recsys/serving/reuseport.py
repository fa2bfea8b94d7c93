"""New connections spread over the entry's workers: each worker listens on a socket of its own (SO_REUSEPORT).

BentoML hands every worker of a service the one listening socket its arbiter bound. Every worker's event loop
wakes on a new connection and whichever runs first accepts everything queued, so a burst of connections (a load
balancer's pool, `hey -c 32`) mostly lands on one worker, and keep-alive keeps it there: with two fused workers
one did most of the work while the other idled (README, Load test and benchmark). Here, when the entry has several
workers, each stops the shared socket listening (it stays bound, held by the arbiter) and listens on its own
socket bound to the same address with SO_REUSEPORT: the kernel hashes each new connection to one of the workers'
sockets. What is lost: connections still waiting in a dying worker's own accept queue are reset, where the shared
socket let another worker take them (the drain on SIGTERM, recsys/serving/shutdown.py, is unaffected: it lets the
accepted connections finish).

:func:`apply` wraps uvicorn's ``Server.run`` in the entry's workers, pinned to the versions it was written for.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from bentoml._internal.context import server_context

from recsys.serving.pins import written_for

WRITTEN_FOR = {"bentoml": "1.4.40", "uvicorn": "0.54.0"}


def own_socket(shared: socket.socket, backlog: int) -> socket.socket:
    """A listening socket of this worker's, at the shared socket's address, which stops listening."""
    try:
        shared.shutdown(socket.SHUT_RD)  # on Linux a listening socket stops listening and stays bound
    except OSError:
        pass  # another worker stopped it already
    own = socket.socket(shared.family, socket.SOCK_STREAM)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the shared socket is bound, not listening
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # beside the other workers' sockets
    own.bind(shared.getsockname())
    own.listen(backlog)
    return own


def apply(workers: int) -> None:
    """In a worker of the entry service, when it has ``workers`` > 1, serve on a socket of the worker's own."""
    if workers < 2 or not hasattr(socket, "SO_REUSEPORT"):
        return
    if not written_for(__name__, WRITTEN_FOR, lost="new connections are not spread over the entry's workers",
                       check="how BentoML's service worker hands its socket to uvicorn.Server.run"):
        return
    run = uvicorn.Server.run
    if getattr(run, "own_sockets", False):
        return  # applied already in this process

    def run_on_own_sockets(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> Any:
        if sockets and server_context.service_type == "entry_service":
            sockets = [own_socket(shared, self.config.backlog) for shared in sockets]
        return run(self, sockets=sockets)

    run_on_own_sockets.own_sockets = True  # type: ignore[attr-defined]
    uvicorn.Server.run = run_on_own_sockets  # type: ignore[method-assign]  # the patch itself
