"""Several entry workers share the connections: each listens on a socket of its own (recsys/serving/reuseport.py).

Regression: BentoML's workers shared one listening socket and whichever woke first accepted a whole burst of new
connections, so with two fused workers one often served everything while the other idled. The checks read the
kernel's view (/proc): which sockets listen on the port, and which worker holds each accepted connection.
"""

from __future__ import annotations

import http.client
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import pytest

from tests.helpers import Server, project_env

CONNECTIONS = 32


@pytest.fixture(scope="module")
def two_workers(trained_home):
    with Server(project_env(trained_home, RECSYS_SERVING__TOPOLOGY="fused", RECSYS_SERVING__WORKERS="2")) as running:
        yield running


def _sockets(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets on local ``port`` in ``state`` (hex, as in /proc/net/tcp: 0A listen, 01 open)."""
    found = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            found.add(fields[9])
    return found


def _held_by(pid: int) -> set[str]:
    """Inodes of the sockets process ``pid`` holds open."""
    fds = Path(f"/proc/{pid}/fd")
    links = (os.readlink(fd) for fd in fds.iterdir())
    return {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}


def test_each_entry_worker_listens_on_a_socket_of_its_own(two_workers):
    workers = two_workers.service_pids()["recommender"]
    listening = _sockets(two_workers.port, "0A")
    assert len(workers) == 2 and len(listening) == 2, (workers, listening)
    assert all(len(_held_by(pid) & listening) == 1 for pid in workers)


def test_a_burst_of_keep_alive_connections_lands_on_both_workers(two_workers):
    """32 connections opened at once, each answered once and kept open: both workers hold some. (Spread by a hash
    of the connection's addresses: all 32 on one worker has a chance of 2 in 2^32.)"""
    start = Barrier(CONNECTIONS)

    def connect(_: int) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection("127.0.0.1", two_workers.port, timeout=30)
        start.wait()
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() is not None
        return connection

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        connections = list(pool.map(connect, range(CONNECTIONS)))
    try:
        accepted = _sockets(two_workers.port, "01")
        per_worker = [len(_held_by(pid) & accepted) for pid in two_workers.service_pids()["recommender"]]
        assert sum(per_worker) == CONNECTIONS and min(per_worker) > 0, per_worker
    finally:
        for connection in connections:
            connection.close()
