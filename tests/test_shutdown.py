"""SIGTERM under load (issue 12, item 5): every request the server took gets its real answer, the model services
outlive the entry, and requests sent on kept-alive connections after the signal are answered, not reset.

Before, `bentoml serve` stopped the entry and the model services at once: requests in flight got 503 (the models
had gone) and idle keep-alive connections were closed under the clients, so a request sent on one was reset.
The signal goes either to `bentoml serve` alone (`kill`, `docker stop`) or to every process of the server at once
(Ctrl-C in a terminal, systemd's default); the clients count every answer.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from tests.helpers import Server, load_pair, post, project_env, warm_user

BUSY, IDLE = 16, 8
JSON = {"Content-Type": "application/json"}
SAFETY_NET_S = 60  # a client's socket time-out: only a hanging server reaches it


class Busy(threading.Thread):
    """Sends one request after another on a keep-alive connection (http.client opens a new one after an answer
    marked `Connection: close`) until the server refuses a new connection; records every outcome."""

    def __init__(self, address: tuple[str, int], body: bytes) -> None:
        super().__init__(daemon=True)
        self.connection = http.client.HTTPConnection(*address, timeout=SAFETY_NET_S)
        self.body = body
        self.outcomes: list[tuple[float, float, object]] = []  # (sent, answered, status and body, or the error)

    def run(self) -> None:
        while True:
            sent = time.monotonic()
            try:
                self.connection.request("POST", "/recommend", body=self.body, headers=JSON)
                response = self.connection.getresponse()
                outcome: object = (response.status, json.loads(response.read()))
            except ConnectionRefusedError:  # the server has stopped listening: a clean end
                self.outcomes.append((sent, time.monotonic(), "refused"))
                return
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                self.connection.close()
            self.outcomes.append((sent, time.monotonic(), outcome))


def _refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=SAFETY_NET_S).close()
    except ConnectionRefusedError:
        return True
    return False


def _answer(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, dict, str | None]:
    connection.request("POST", "/recommend", body=body, headers=JSON)
    response = connection.getresponse()
    return response.status, json.loads(response.read()), response.getheader("connection")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("whom", ["server", "every process"])
def test_sigterm_under_load_answers_every_request_it_took(trained_home, whom):
    with Server(project_env(trained_home)) as server:
        parts = urlsplit(server.url)
        address = (parts.hostname, parts.port)
        version = post(f"{server.url}/recommend", {"user_id": 0, "top_k": 1})[1]["model_version"]
        body = json.dumps({"user_id": warm_user(load_pair(trained_home, version)), "top_k": 10}).encode()
        status, expected = post(f"{server.url}/recommend", json.loads(body))
        assert status == 200
        busy = [Busy(address, body) for _ in range(BUSY)]
        for client in busy:
            client.start()
        idle = [http.client.HTTPConnection(*address, timeout=SAFETY_NET_S) for _ in range(IDLE)]
        assert {_answer(c, body)[:2] == (200, expected) for c in idle} == {True}  # now idle, kept alive
        while min(len(c.outcomes) for c in busy) < 3:  # every busy client is under way
            time.sleep(0.01)

        signalled = time.monotonic()
        if whom == "server":
            server.process.send_signal(signal.SIGTERM)
        else:
            os.killpg(server.process.pid, signal.SIGTERM)
        while not _refused(address):  # the server has stopped accepting
            time.sleep(0.01)
        with ThreadPoolExecutor(IDLE) as pool:  # a request on each kept-alive connection, after the signal
            late = list(pool.map(lambda c: _answer(c, body), idle))
        assert server.process.wait(timeout=SAFETY_NET_S) == 0
        for client in busy:
            client.join(timeout=SAFETY_NET_S)

    assert late == [(200, expected, "close")] * IDLE
    outcomes = [outcome for client in busy for _, _, outcome in client.outcomes]
    assert {str(o) for o in outcomes if o != "refused" and o != (200, expected)} == set(), \
        "a request the server took was not answered with its usual answer"
    assert [c.outcomes[-1][2] for c in busy] == ["refused"] * BUSY
    in_flight = [outcome for client in busy for sent, answered, outcome in client.outcomes if sent < signalled < answered]
    assert len(in_flight) >= BUSY // 2 and set(map(str, in_flight)) == {str((200, expected))}
