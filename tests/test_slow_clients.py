"""Slow and silent clients, over-capacity and floods of big batches against `bentoml serve` (issue 12, items 2,
6 and 9): each gets a clear, documented answer in bounded time while a normal client keeps getting its answers.

No wall-clock bound is asserted: the tests check what happened (a 408, a closed connection, the order in which
answers arrived); the time-outs of the test's own sockets are safety nets that only fire on a failure.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers import Server, load_pair, post, project_env, warm_user
from tests.test_malformed_input import JSON, send

SAFETY_NET_S = 30  # a test socket's time-out: only a failing server ever reaches it


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def _slow_body(url: str, path: str = "/recommend") -> socket.socket:
    """A connection that sent its head and half of its body, and then nothing."""
    sock = socket.create_connection(_address(url), timeout=SAFETY_NET_S)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
                 '{"user_id": 1, "top'.encode())
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _error(raw: bytes) -> tuple[int, dict[str, str], dict]:
    """Status, headers and the documented error body of a raw HTTP answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    error = json.loads(body)
    assert error["status"] == "error" and error["recommendations"] == [] and len(error["msg"]) > 15, error
    return int(lines[0].split()[1]), headers, error


def test_slow_uploads_do_not_take_the_normal_requests_slots(server, models):
    """Regression: 512 connections trickling their bodies filled BentoML's 512 concurrency slots (taken when the
    head arrived), and every other request got 429 until the attack stopped. Here 600 uploads are stuck half-way
    while a normal client sends 10 requests: each gets its usual answer."""
    normal = f'{{"user_id": {warm_user(models)}, "top_k": 7}}'.encode()
    status, usual = send(server.url, "/recommend", normal, JSON)
    assert status == 200
    slow = [_slow_body(server.url) for _ in range(600)]
    try:
        for _ in range(10):
            assert send(server.url, "/recommend", normal, JSON) == (200, usual)
        unanswered = select.select(slow, [], [], 0)[0]
        assert len(unanswered) < 100, "the slow uploads were not under way while the normal requests went through"
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.timeout(300)
def test_single_requests_do_not_queue_behind_a_flood_of_big_batches(server, models):
    """Regression: single requests and /recommend/batch calls shared one queue in the entry, so a single sent
    during a flood of big batches waited for every batch queued before it (~3 s behind a flood; each batch of 100
    users x top_k 100 also held the event loop ~22 ms to build its answer). Sixteen such batches are sent at once,
    then one single: fewer than half of the batches still pending when it was sent may finish before it."""
    users = [warm_user(models, i) for i in range(100)]
    batch = json.dumps({"requests": [{"user_id": u, "top_k": 100} for u in users]}).encode()
    single = f'{{"user_id": {users[0]}, "top_k": 10}}'.encode()
    status, usual = send(server.url, "/recommend", single, JSON)
    assert status == 200
    finished: list[str] = []  # in the order the answers arrived
    sent = threading.Semaphore(0)

    def post_batch() -> int:
        connection = http.client.HTTPConnection(*_address(server.url), timeout=SAFETY_NET_S * 4)
        connection.request("POST", "/recommend/batch", body=batch, headers=JSON)
        sent.release()
        response = connection.getresponse()
        answer = json.loads(response.read())
        finished.append("batch")
        connection.close()
        assert len(answer["results"]) == 100
        return response.status

    with ThreadPoolExecutor(16) as pool:
        batches = [pool.submit(post_batch) for _ in range(16)]
        for _ in batches:
            sent.acquire()
        time.sleep(0.1)  # the batches are read and queued in the entry by now
        finished.append("single sent")
        assert send(server.url, "/recommend", single, JSON) == (200, usual)
        finished.append("single answered")
        assert [b.result() for b in batches] == [200] * 16
    pending = finished[finished.index("single sent"):].count("batch")
    overtaking = finished[finished.index("single sent"):finished.index("single answered")].count("batch")
    assert pending >= 8, f"the flood was over before the single request was sent: {finished}"
    assert overtaking < pending / 2, f"the single request waited behind the batches: {finished}"


@pytest.fixture(scope="module")
def strict(trained_home):
    """A server with short limits: a 1 s body deadline and idle timeout, one request processed at a time, a 2 s
    answer deadline, and model calls that may hang for 10 s."""
    env = project_env(trained_home, RECSYS_SERVING__BODY_TIMEOUT_S="1", RECSYS_SERVING__IDLE_TIMEOUT_S="1",
                      RECSYS_SERVING__MAX_CONCURRENCY="1", RECSYS_SERVING__REQUEST_TIMEOUT_S="2",
                      RECSYS_SERVING__DEPENDENCY_TIMEOUT_S="10")
    with Server(env) as running:
        yield running


def test_every_service_process_runs_the_c_parser_and_loop_the_guards_are_written_for(strict):
    """The connection tests here hold for the protocol the workers really run: uvicorn's httptools one (guarded in
    recsys/serving/connections.py) on uvloop, which uvicorn picks only when both are installed."""
    pids = strict.service_pids()
    assert set(pids) == {"recommender", "candidates", "ranker"}, pids
    for name, workers in pids.items():
        for pid in workers:
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "/httptools/parser/" in maps and "/uvloop/loop." in maps, (name, pid)


def test_a_body_that_does_not_arrive_in_time_gets_a_408_and_the_connection_is_closed(strict):
    sock = _slow_body(strict.url)
    status, headers, error = _error(_read_all(sock))  # _read_all returns only once the server has closed
    sock.close()
    assert status == 408 and headers["connection"] == "close", headers
    assert "did not arrive within 1 s of its headers" in error["msg"]


def test_silent_connections_and_request_heads_sent_a_byte_at_a_time_are_closed(strict):
    """Regression: a connection that never sent a byte, or sent its head a byte every few seconds, was never
    closed (uvicorn's keep-alive timer runs only after an answer and any byte reset it)."""
    silent = socket.create_connection(_address(strict.url), timeout=SAFETY_NET_S)
    assert silent.recv(1) == b""
    silent.close()
    trickle = socket.create_connection(_address(strict.url), timeout=SAFETY_NET_S)
    head, sent = b"POST /recommend HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 1000, 0
    with pytest.raises(OSError):  # the server closes it half-way: a reset or a broken pipe
        for byte in head:
            trickle.sendall(bytes([byte]))
            sent += 1
            time.sleep(0.05)
    assert sent < len(head)
    trickle.close()


def test_an_idle_keep_alive_connection_is_closed(strict):
    connection = http.client.HTTPConnection(*_address(strict.url), timeout=SAFETY_NET_S)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    assert connection.sock.recv(1) == b""  # closed by the server after its idle timeout
    connection.close()


def test_bytes_that_are_not_http_get_a_documented_400(strict):
    sock = socket.create_connection(_address(strict.url), timeout=SAFETY_NET_S)
    sock.sendall(b"HELLO THERE\r\n\r\n")
    status, headers, error = _error(_read_all(sock))
    sock.close()
    assert status == 400 and headers["content-type"] == "application/json" and "HTTP/1.1" in error["msg"]
    assert headers["x-content-type-options"] == "nosniff"


def test_over_capacity_and_too_slow_answers_use_the_documented_body(strict, trained_home):
    """Regression: BentoML answered these itself, outside the API's contract: 429 `{"error":"Too many
    requests"}` without Retry-After and 504 `{"error":"Not able to process the request in 30 seconds"}`. With the
    candidates service stopped, two concurrent requests on a server that processes one at a time: one is refused
    at once (429), the other times out (504)."""
    version = post(f"{strict.url}/recommend", {"user_id": 0, "top_k": 1})[1]["model_version"]
    body = {"user_id": warm_user(load_pair(trained_home, version)), "top_k": 5}
    status, expected = post(f"{strict.url}/recommend", body)
    assert status == 200
    [pid] = strict.service_pids()["candidates"]
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: _raw_post(strict.url, body), range(2)))
    finally:
        os.kill(pid, signal.SIGCONT)
    by_status = {status: (headers, error) for status, headers, error in answers}
    assert set(by_status) == {429, 504}, answers
    assert by_status[429][0]["retry-after"] == "1" and "too many requests in progress (1)" in by_status[429][1]["msg"]
    assert "took longer than 2 s" in by_status[504][1]["msg"]
    deadline = time.monotonic() + SAFETY_NET_S
    while (answer := post(f"{strict.url}/recommend", body)) != (200, expected) and time.monotonic() < deadline:
        time.sleep(0.2)  # the slot is back once the stopped call has ended
    assert answer == (200, expected)


def _raw_post(url: str, body: dict) -> tuple[int, dict[str, str], dict]:
    connection = http.client.HTTPConnection(*_address(url), timeout=SAFETY_NET_S)
    connection.request("POST", "/recommend", body=json.dumps(body), headers=JSON)
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    error = json.loads(raw)
    assert error["status"] == "error" and error["recommendations"] == [], error
    return response.status, {k.lower(): v for k, v in response.getheaders()}, error
