"""Hostile clients and operations against `bentoml serve` on loopback, each while normal clients keep asking.

    .venv/bin/python scripts/hostile_clients.py slow-bodies    # 512 connections trickle their bodies at 1 byte/s
    .venv/bin/python scripts/hostile_clients.py batch-flood    # big /recommend/batch calls back to back
    .venv/bin/python scripts/hostile_clients.py shutdown       # SIGTERM to `bentoml serve` under 24 clients
    .venv/bin/python scripts/hostile_clients.py shutdown --group   # SIGTERM to all its processes (Ctrl-C, systemd)

Each starts its own server on a free loopback port from the store in BENTOML_HOME (a trained pair is needed;
`--url` points slow-bodies and batch-flood at a running one instead) and prints what the attackers got, what
the normal client saw (answers by status, median, p99 and slowest latency, client-side) and how long the worst
request took. Every phase is bounded in time; only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.tools.process import Server  # noqa: E402

NORMAL = b'{"user_id": 1, "top_k": 10}'
BIG_BATCH = json.dumps({"requests": [{"user_id": i, "top_k": 100} for i in range(100)]}).encode()
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _summary(latencies: list[float]) -> str:
    if not latencies:
        return "no answers"
    ordered = sorted(latencies)
    return (f"median {_ms(statistics.median(ordered))} ms, p99 {_ms(ordered[int(0.99 * (len(ordered) - 1))])} ms, "
            f"slowest {_ms(ordered[-1])} ms")


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        raise SystemExit("hostile clients are only sent to loopback")
    return parts.hostname, parts.port


class Client(threading.Thread):
    """POSTs ``body`` to ``path`` back to back on one keep-alive connection (a new one when the server closes it)
    and records (sent, answered, outcome) of every request: the status (``"200 wrong"`` when an ``expected``
    answer differs), or the error that replaced the answer. With ``until_refused`` it stops once a new
    connection is refused (the server has stopped listening)."""

    def __init__(self, url: str, path: str = "/recommend", body: bytes = NORMAL, expected: bytes | None = None,
                 until_refused: bool = False, timeout: float = 120) -> None:
        super().__init__(daemon=True)
        self.host, self.port = _host_port(url)
        self.path, self.body, self.expected, self.until_refused, self.timeout = path, body, expected, until_refused, timeout
        self.answers: list[tuple[float, float, int | str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        while not self.stop.is_set():
            sent = time.perf_counter()
            try:
                connection.request("POST", self.path, body=self.body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                body = response.read()
                outcome: int | str = response.status
                if outcome == 200 and self.expected is not None and body != self.expected:
                    outcome = "200 wrong"
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                connection.close()
                if self.until_refused and isinstance(exc, ConnectionRefusedError):
                    self.answers.append((sent, time.perf_counter(), "refused"))
                    return
                time.sleep(0.05)
            self.answers.append((sent, time.perf_counter(), outcome))

    def between(self, start: float, end: float) -> list[tuple[float, int | str]]:
        """(latency, outcome) of the requests sent in [start, end]."""
        return [(b - a, outcome) for a, b, outcome in list(self.answers) if start <= a <= end]


def _describe(seen: list[tuple[float, int | str]]) -> str:
    counts = collections.Counter(outcome for _, outcome in seen)
    return (f"{len(seen)} requests {dict(sorted(counts.items(), key=str))}; 200s: "
            f"{_summary([t for t, outcome in seen if outcome == 200])}; slowest of all "
            f"{_ms(max((t for t, _ in seen), default=0))} ms")


def _expected_answer(url: str) -> bytes:
    host, port = _host_port(url)
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request("POST", "/recommend", body=NORMAL, headers={"Content-Type": "application/json"})
    return connection.getresponse().read()


# ---- slow bodies -------------------------------------------------------------------------------------------------

async def _trickle(host: str, port: int, deadline: float, results: list[tuple[str, float]]) -> None:
    """One attacker: headers and half of a 1,000-byte body, then a byte a second; when the server answers or
    closes, record what happened and how long the request lived, then reconnect, until ``deadline``."""
    head = (f"POST /recommend HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n").encode() + b'{"user_id": 1, "x": "' + b"a" * 480
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            results.append((f"connect: {type(exc).__name__}", 0.0))
            await asyncio.sleep(1)
            continue
        outcome = "still sending at the end"
        try:
            writer.write(head)
            while time.monotonic() < deadline:
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except asyncio.TimeoutError:
                    writer.write(b"a")
                    await writer.drain()
                    continue
                outcome = f"answer {data.split(b' ', 2)[1].decode()}" if data.startswith(b"HTTP/") else "closed"
                break
        except OSError as exc:
            outcome = type(exc).__name__
        finally:
            writer.close()
        results.append((outcome, time.monotonic() - start))


async def _silent(host: str, port: int, deadline: float, results: list[tuple[str, float]]) -> None:
    """A connection that never sends a byte: how long until the server closes it."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        data = await asyncio.wait_for(reader.read(4096), max(deadline - time.monotonic(), 0.1))
        results.append(("closed" if not data else "answered", time.monotonic() - start))
    except asyncio.TimeoutError:
        results.append(("still open at the end", time.monotonic() - start))
    except OSError as exc:
        results.append((type(exc).__name__, time.monotonic() - start))
    finally:
        writer.close()


def slow_bodies(url: str, connections: int, silent: int, seconds: float) -> list[str]:
    host, port = _host_port(url)
    normal = Client(url, expected=_expected_answer(url))
    normal.start()
    time.sleep(3)
    quiet_end = time.perf_counter()
    trickled: list[tuple[str, float]] = []
    idle: list[tuple[str, float]] = []
    ready: list[int] = []

    async def attack() -> None:
        deadline = time.monotonic() + seconds
        tasks = [_trickle(host, port, deadline, trickled) for _ in range(connections)]
        tasks += [_silent(host, port, deadline, idle) for _ in range(silent)]
        await asyncio.gather(*tasks)

    def readiness() -> None:
        while attacker.is_alive():
            try:
                connection = http.client.HTTPConnection(host, port, timeout=5)
                connection.request("GET", "/readyz")
                ready.append(connection.getresponse().status)
                connection.close()
            except OSError:
                ready.append(0)
            time.sleep(1)

    attacker = threading.Thread(target=lambda: asyncio.run(attack()))
    start = time.perf_counter()
    attacker.start()
    probe = threading.Thread(target=readiness)
    probe.start()
    attacker.join()
    end = time.perf_counter()
    probe.join()
    normal.stop.set()
    normal.join(timeout=150)
    outcomes = collections.Counter(outcome for outcome, _ in trickled)
    answered = [t for outcome, t in trickled if outcome.startswith("answer")]
    return [
        f"Slow bodies: {connections} connections trickling a body at 1 byte/s and {silent} silent ones, for "
        f"{seconds:.0f} s (each attacker reconnects once answered or closed).",
        f"- normal client with no attack: {_describe(normal.between(0, quiet_end))}",
        f"- normal client during the attack: {_describe(normal.between(start, end))}",
        f"- attackers: {len(trickled)} requests {dict(outcomes)}; answered after {_summary(answered)}",
        f"- silent connections: {dict(collections.Counter(o for o, _ in idle))}, closed after "
        f"{_summary([t for o, t in idle if o == 'closed'])}",
        f"- /readyz once a second during the attack: {dict(collections.Counter(ready))}",
    ]


# ---- batch flood -------------------------------------------------------------------------------------------------

def batch_flood(url: str, connections: int, seconds: float) -> list[str]:
    normal = Client(url, expected=_expected_answer(url))
    normal.start()
    time.sleep(3)
    quiet_end = time.perf_counter()
    flooders = [Client(url, "/recommend/batch", BIG_BATCH) for _ in range(connections)]
    start = time.perf_counter()
    for flooder in flooders:
        flooder.start()
    time.sleep(seconds)
    end = time.perf_counter()
    for client in (*flooders, normal):
        client.stop.set()
    for client in (*flooders, normal):
        client.join(timeout=150)
    batches = [answer for flooder in flooders for answer in flooder.between(start, end)]
    return [
        f"Batch flood: {connections} connections send /recommend/batch with 100 users x top_k 100 back to back "
        f"for {seconds:.0f} s.",
        f"- normal client with no flood: {_describe(normal.between(0, quiet_end))}",
        f"- normal client during the flood: {_describe(normal.between(start, end))}",
        f"- batch calls: {_describe(batches)}",
    ]


# ---- shutdown ----------------------------------------------------------------------------------------------------

def shutdown(clients: int, idle: int, group: bool) -> list[str]:
    with Server() as server:
        expected = _expected_answer(server.url)
        busy = [Client(server.url, expected=expected, until_refused=True, timeout=60) for _ in range(clients)]
        for client in busy:
            client.start()
        kept: list[http.client.HTTPConnection] = []
        for _ in range(idle):  # keep-alive connections that asked once and now sit idle
            connection = http.client.HTTPConnection(*_host_port(server.url), timeout=60)
            connection.request("POST", "/recommend", body=NORMAL, headers={"Content-Type": "application/json"})
            connection.getresponse().read()
            kept.append(connection)
        time.sleep(2)
        signalled = time.perf_counter()
        if group:
            os.killpg(server.process.pid, signal.SIGTERM)
        else:
            server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        late: list[str] = []
        for connection in kept:  # a request on each idle keep-alive connection, after the signal
            try:
                connection.request("POST", "/recommend", body=NORMAL, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                body = response.read()
                late.append(f"{response.status}" + (" wrong" if response.status == 200 and body != expected else "")
                            + (" + Connection: close" if response.getheader("connection") == "close" else ""))
            except (OSError, http.client.HTTPException) as exc:
                late.append(type(exc).__name__)
        for client in busy:
            client.join(timeout=120)
        server.process.wait(timeout=120)
        exited = time.perf_counter() - signalled
    after = [answer for client in busy for answer in client.between(signalled, time.perf_counter())]
    in_flight = [(b - a, o) for client in busy for a, b, o in client.answers if a < signalled < b]
    return [
        f"Shutdown: SIGTERM to {'every process of ' if group else ''}`bentoml serve` while {clients} clients send "
        f"/recommend back to back and {idle} keep-alive connections sit idle; the server exited "
        f"{exited:.1f} s after the signal.",
        f"- requests in flight at the signal: {_describe(in_flight)}",
        f"- requests the busy clients sent after the signal: {_describe(after)}",
        f"- one request on each idle keep-alive connection 0.5 s after the signal: {dict(collections.Counter(late))}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="attack", required=True)
    slow = sub.add_parser("slow-bodies")
    slow.add_argument("--connections", type=int, default=512)
    slow.add_argument("--silent", type=int, default=100, help="connections that never send a byte")
    slow.add_argument("--seconds", type=float, default=40)
    slow.add_argument("--url")
    flood = sub.add_parser("batch-flood")
    flood.add_argument("--connections", type=int, default=4)
    flood.add_argument("--seconds", type=float, default=10)
    flood.add_argument("--url")
    stop = sub.add_parser("shutdown")
    stop.add_argument("--clients", type=int, default=24)
    stop.add_argument("--idle", type=int, default=8, help="idle keep-alive connections that send after the signal")
    stop.add_argument("--group", action="store_true", help="signal every process of the server, not just its own")
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    if args.attack == "shutdown":
        lines = shutdown(args.clients, args.idle, args.group)
    else:
        def run(url: str) -> list[str]:
            if args.attack == "slow-bodies":
                return slow_bodies(url, args.connections, args.silent, args.seconds)
            return batch_flood(url, args.connections, args.seconds)
        if args.url:
            lines = run(args.url)
        else:
            with Server() as server:
                lines = run(server.url)
    print("\n".join(lines))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
