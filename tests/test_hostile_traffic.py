"""Hostile traffic against the running service: refused requests leave one log line each, the worst body that
fits in the size limit does not stall anyone else, redirects do not echo the Host header, the page may not be
framed, and plain `bentoml serve` listens on loopback only.

No wall-clock bound is asserted. The stall test checks an order of events instead: a normal client finishes all
its requests while a flood of hostile 1 MB bodies is being answered. Before the fix, one such body held the event
loop for 177 s, so a normal request could not be answered at all (the 60 s client timeout is only a safety net).
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from recsys.serving.headers import SAFE_HEADERS
from recsys.serving.traffic import MAX_BODY_BYTES
from scripts.hostile_bodies import many_keys
from tests.helpers import Server, project_env, warm_user
from tests.test_malformed_input import JSON, send

MARKER = "hostile-input-9f3b"



def _new_log(server, offset: int, count: int) -> tuple[str, list[str]]:
    """The server's output after ``offset`` and its access-log lines, once at least ``count`` of those have been
    written (logging is async; other lines, such as a library's first-use warning, may come in between)."""
    deadline = time.monotonic() + 60
    while True:
        log = server.output()[offset:]
        answered = [line for line in log.splitlines() if "(status=" in line]
        if len(answered) >= count or time.monotonic() > deadline:
            return log, answered
        time.sleep(0.2)


REFUSED = [  # (method, path, body, headers, status): every kind of 4xx, each carrying the marker
    ("POST", "/recommend", f'{{"user_id": "{MARKER}"}}'.encode(), JSON, 400),
    ("POST", "/recommend", f'{{"user_id": 1, "{MARKER}": 1}}'.encode(), JSON, 400),
    ("POST", "/recommend/batch", f'{{"requests": [{{"user_id": -1, "x": "{MARKER}"}}]}}'.encode(), JSON, 400),
    ("POST", "/recommend", f'{{"{MARKER}": 1, "{MARKER}": 2}}'.encode(), JSON, 400),
    ("POST", "/recommend", f'{{"user_id": 1 {MARKER}'.encode(), JSON, 400),
    ("POST", "/recommend", MARKER.encode(), {"Content-Type": "text/plain"}, 415),
    ("POST", "/recommend", MARKER.encode() * (MAX_BODY_BYTES // len(MARKER) + 1), JSON, 413),
    ("GET", "/recommend", b"", {}, 405),
    ("GET", "/ui/api/history?user_id=abc", b"", {}, 400),
]


@pytest.fixture(scope="module")
def logged(trained_home):
    """A plain `bentoml serve` (no --host) with BentoML's access log of every request (serving.access_log=all)."""
    server = Server(project_env(trained_home, RECSYS_SERVING__ACCESS_LOG="all"))
    server.command = [arg for arg in server.command if arg not in ("--host", "127.0.0.1")]
    with server:
        yield server


def _refuse_all(url: str) -> None:
    parts = urlsplit(url)
    for method, path, body, headers, status in REFUSED:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        connection.request(method, path, body=body or None, headers=headers)
        assert connection.getresponse().status == status, (method, path, body[:80])
        connection.close()


@pytest.mark.parametrize("served", ["server", "logged"], ids=["access_log=errors (default)", "access_log=all"])
def test_each_refused_request_is_one_info_line_without_its_input(served, request, models):
    """Regression: every 400 was logged at ERROR with a ~20-line traceback quoting the sender's input. A request
    that succeeds leaves a line only when every request is logged (a line per request costs the entry CPU;
    /metrics counts them): it is sent first, so its line, if any, comes before the refusals' last one."""
    server = request.getfixturevalue(served)
    offset = len(server.output())
    assert send(server.url, "/recommend", f'{{"user_id": {warm_user(models)}}}'.encode(), JSON)[0] == 200
    _refuse_all(server.url)
    log, answered = _new_log(server, offset, len(REFUSED) + (served == "logged"))
    assert "Traceback" not in log and "ERROR" not in log and MARKER not in log, log[-3000:]
    refused = [line for line in answered if "(status=4" in line]
    assert len(refused) == len(REFUSED) and all("[INFO]" in line for line in refused), log[-3000:]
    assert len(answered) - len(refused) == (served == "logged"), log[-3000:]


@pytest.mark.timeout(300)
def test_a_flood_of_the_worst_bodies_does_not_stall_normal_requests(server, models):
    """Two connections send the many-keys body back to back while a normal client sends 20 requests: all 20 get
    their usual answer, and hostile bodies keep being answered (400) during that time, so the normal requests
    really went through in the middle of the flood."""
    hostile_body = many_keys()
    assert len(hostile_body) <= MAX_BODY_BYTES
    normal = f'{{"user_id": {warm_user(models)}, "top_k": 7}}'.encode()
    status, usual = send(server.url, "/recommend", normal, JSON)
    assert status == 200
    stop = threading.Event()
    answered: list[tuple[float, int, str]] = []  # (when, status, message) of every hostile request

    def flood() -> None:
        while not stop.is_set():
            status, error = send(server.url, "/recommend", hostile_body, JSON)
            answered.append((time.monotonic(), status, error["msg"]))

    senders = [threading.Thread(target=flood, daemon=True) for _ in range(2)]
    for sender in senders:
        sender.start()
    while not answered:  # the flood is under way
        time.sleep(0.01)
    try:
        first_sent = time.monotonic()
        for _ in range(20):
            assert send(server.url, "/recommend", normal, JSON) == (200, usual)
        last_answered = time.monotonic()
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=120)
    during = [status for when, status, _ in answered if first_sent <= when <= last_answered]
    assert len(during) >= 2, f"the flood was not running while the normal requests were answered: {len(answered)}"
    assert {status for _, status, _ in answered} == {400}
    assert all("more JSON keys and values than any valid request has" in msg for _, _, msg in answered)


def _get(url: str, path: str, host: str | None = None) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    connection.request("GET", path, headers={"Host": host} if host else {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_redirects_do_not_echo_the_host_header(server):
    """Regression: `GET /ui` with `Host: evil.example` was redirected to http://evil.example/ui/."""
    response = _get(server.url, "/ui", host="evil.example")
    assert response.status == 307 and response.getheader("location") == "/ui/"


@pytest.mark.parametrize("path", ["/ui/", "/", "/ui/api/model"])
def test_pages_may_not_be_framed_or_sniffed(server, path):
    response = _get(server.url, path)
    assert response.status == 200
    for name, value in SAFE_HEADERS:
        assert response.getheader(name.decode()) == value.decode(), name


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_plain_bentoml_serve_listens_on_loopback_only(logged):
    """`bentoml serve` without --host listened on 0.0.0.0; the image sets BENTOML_HOST=0.0.0.0 (bentofile.yaml)."""
    assert _listening(logged.port) == {"0100007F"}  # 127.0.0.1
