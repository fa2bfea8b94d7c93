"""The worst request bodies that fit in the 1 MB limit, each sent while a normal client keeps asking /recommend.

    .venv/bin/python scripts/hostile_bodies.py            # starts `bentoml serve` on loopback (needs a trained store)
    .venv/bin/python scripts/hostile_bodies.py --url http://127.0.0.1:3000

For each body: its status and the start of its message, the slowest of ``--repeat`` sends (client-side, loopback,
including the upload), and what a normal client saw meanwhile (requests answered, median and slowest latency),
against the normal client's latency with no attack. Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.serving.traffic import MAX_BODY_BYTES  # noqa: E402
from recsys.tools.process import Server  # noqa: E402

NORMAL = b'{"user_id": 1, "top_k": 10}'


def _fill(unit: bytes, head: bytes, tail: bytes) -> bytes:
    """``head`` + as many comma-separated ``unit`` as fit in the limit + ``tail``."""
    count = (MAX_BODY_BYTES - len(head) - len(tail)) // (len(unit) + 1)
    return head + b",".join([unit] * count) + tail


def many_keys() -> bytes:
    """~90k distinct keys and one repeated at the end (the body that held the loop for 177 s)."""
    keys, size = [], 2
    while size < MAX_BODY_BYTES - 40:
        keys.append(b'"k%d":1' % len(keys))
        size += len(keys[-1]) + 1
    return b"{" + b",".join(keys + [b'"k0":1']) + b"}"


def _padded(body: bytes) -> bytes:
    return body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"


def bodies() -> dict[str, tuple[str, bytes]]:
    full_batch = json.dumps({"requests": [{"user_id": i, "top_k": 100} for i in range(100)]}).encode()
    extra_keys = b'{"requests": [{"user_id": 1}],' + b",".join(b'"x%d": 1' % i for i in range(1_730)) + b"}"
    cases = {
        "many distinct keys, one repeated": ("/recommend", many_keys()),
        "many distinct keys (batch route)": ("/recommend/batch", many_keys()),
        "one valid key repeated 83k times": ("/recommend", _fill(b'"user_id":1', b"{", b"}")),
        "333k empty objects": ("/recommend/batch", _fill(b"{}", b'{"requests": [', b"]}")),
        "500k-deep nesting": ("/recommend", b"[" * (MAX_BODY_BYTES // 2) + b"]" * (MAX_BODY_BYTES // 2)),
        "1 MB string": ("/recommend", b'{"user_id": 1, "x": "' + b"a" * (MAX_BODY_BYTES - 30) + b'"}'),
        "1 MB of \\u escapes": ("/recommend", b'{"user_id": "' + b"\\u00e9" * ((MAX_BODY_BYTES - 20) // 6) + b'"}'),
        "1 MB integer": ("/recommend", b'{"user_id": ' + b"9" * (MAX_BODY_BYTES - 20) + b"}"),
        "1 MB float": ("/recommend", b'{"user_id": 0.' + b"9" * (MAX_BODY_BYTES - 20) + b"}"),
        "60k batch users": ("/recommend/batch", _fill(b'{"user_id":1}', b'{"requests": [', b"]}")),
        "1,730 unknown keys (just within the size check)": ("/recommend/batch", extra_keys),
        "valid: 100 users x top_k 100, padded to 1 MB": ("/recommend/batch", _padded(full_batch)),
        "valid: one user padded to 1 MB": ("/recommend", _padded(NORMAL)),
    }
    assert all(len(body) <= MAX_BODY_BYTES for _, body in cases.values())
    return cases


def _post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


class NormalClient(threading.Thread):
    """Sends NORMAL to /recommend back to back and records (sent, answered) times of the 200s."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(daemon=True)
        self.connection = http.client.HTTPConnection(host, port, timeout=300)
        self.times: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.perf_counter()
            status, _ = _post(self.connection, "/recommend", NORMAL)
            if status == 200:
                self.times.append((sent, time.perf_counter()))

    def seen_between(self, start: float, end: float) -> list[float]:
        """Latencies of the requests that overlapped [start, end], once the one in flight at ``end`` is answered."""
        while not self.times or self.times[-1][0] < end:
            time.sleep(0.01)
        return [b - a for a, b in list(self.times) if b >= start and a <= end]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def measure(url: str, repeat: int) -> list[str]:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("hostile bodies are only sent to loopback")
    normal = NormalClient(parts.hostname, parts.port)
    normal.start()
    time.sleep(2)
    quiet = normal.seen_between(0, time.perf_counter())
    rows = ["| body | route | bytes | answer | median, slowest of %d (ms) | normal client meanwhile: answers, median, "
            "slowest (ms) |" % repeat, "|---|---|---|---|---|---|"]
    hostile = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    for name, (path, body) in bodies().items():
        start, took = time.perf_counter(), []
        for _ in range(repeat):
            sent = time.perf_counter()
            status, answer = _post(hostile, path, body)
            took.append(time.perf_counter() - sent)
        seen = normal.seen_between(start, time.perf_counter())
        msg = json.loads(answer).get("msg") or "success"
        rows.append(f"| {name} | `{path}` | {len(body):,} | {status} {msg[:60]} | {_ms(statistics.median(took))}, "
                    f"{_ms(max(took))} | {len(seen)}, {_ms(statistics.median(seen))}, {_ms(max(seen))} |")
    rows.append(f"\nNormal client with no attack: {len(quiet)} answers, median {_ms(statistics.median(quiet))} ms, "
                f"slowest {_ms(max(quiet))} ms.")
    rows.append(flood(parts.hostname, parts.port, normal))
    normal.stop.set()
    return rows


def flood(host: str, port: int, normal: NormalClient, connections: int = 4, seconds: float = 5.0) -> str:
    """``connections`` clients send the many-keys body back to back for ``seconds``."""
    body, answered = bodies()["many distinct keys, one repeated"][1], []

    def send_until(deadline: float) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=300)
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            answered.append((_post(connection, "/recommend", body)[0], time.perf_counter() - sent))

    start = time.perf_counter()
    senders = [threading.Thread(target=send_until, args=(start + seconds,)) for _ in range(connections)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    seen = sorted(normal.seen_between(start, time.perf_counter()))
    statuses = sorted({status for status, _ in answered})
    return (f"Flood: {connections} connections sent the many-keys body back to back for {seconds:.0f} s: "
            f"{len(answered)} answers ({statuses}), median {_ms(statistics.median(t for _, t in answered))} ms; "
            f"the normal client got {len(seen)} answers, median {_ms(statistics.median(seen))} ms, "
            f"p99 {_ms(seen[int(0.99 * (len(seen) - 1))])} ms, slowest {_ms(seen[-1])} ms.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running server on loopback (default: start one)")
    parser.add_argument("--repeat", type=int, default=20, help="sends of each body")
    args = parser.parse_args()
    if args.url:
        print("\n".join(measure(args.url, args.repeat)))
        return
    with Server() as server:
        print("\n".join(measure(server.url, args.repeat)))


if __name__ == "__main__":
    main()
