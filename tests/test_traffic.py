"""The entry's traffic layer (recsys/serving/traffic.py) on its own: an ASGI app whose progress the test controls.

Every refusal is the documented error body; a request only takes a processing slot once its body is in, so slow
uploads cannot use up the slots, and /recommend/batch calls have their own lane. The end-to-end behaviour against
`bentoml serve` is in test_slow_clients.py and test_shutdown.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from recsys.serving.traffic import DRAINING, MAX_BODY_BYTES, TrafficMiddleware
from recsys.settings import ServingSettings

LIMITS = ServingSettings(body_timeout_s=0.3, max_uploads=2, max_concurrency=2, max_batch_concurrency=1,
                         request_timeout_s=0.3)


class Held:
    """An app that reads the body, then answers 200 with it once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self, scope: dict, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.started += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class Client:
    """One request: its body arrives in the given pieces (``None``: the client stops sending)."""

    def __init__(self, path: str = "/recommend", pieces: tuple[bytes | None, ...] = (b"{}",)) -> None:
        self.scope = {"type": "http", "path": path, "method": "POST", "headers": []}
        self.pieces = list(pieces)
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if not self.pieces or self.pieces[0] is None:
            await asyncio.Event().wait()  # a stalled client: nothing more, ever
        piece = self.pieces.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.request", "body": piece, "more_body": bool(self.pieces)}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        return self.sent[0]["status"] if self.sent else None

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def error(self) -> dict:
        body = json.loads(self.sent[1]["body"])
        assert body["status"] == "error" and body["recommendations"] == [], body
        return body


def _serve(middleware: TrafficMiddleware, *clients: Client) -> list[asyncio.Task]:
    return [asyncio.ensure_future(middleware(c.scope, c.receive, c.send)) for c in clients]


async def _until(condition, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def test_a_full_lane_answers_429_with_retry_after_and_the_documented_body():
    async def main():
        app = Held()
        middleware = TrafficMiddleware(app, LIMITS)
        first, second, third = Client(), Client(), Client()
        tasks = _serve(middleware, first, second)
        await _until(lambda: app.started == 2)
        await asyncio.gather(*_serve(middleware, third))
        app.release.set()
        await asyncio.gather(*tasks)
        return first, second, third

    first, second, third = asyncio.run(main())
    assert (first.status, second.status, third.status) == (200, 200, 429)
    assert third.headers[b"retry-after"] == b"1" and "too many requests in progress (2)" in third.error["msg"]


def test_batch_calls_have_their_own_lane_and_cannot_use_up_the_single_requests_slots():
    async def main():
        app = Held()
        middleware = TrafficMiddleware(app, LIMITS)
        batch, second_batch, single = Client("/recommend/batch"), Client("/recommend/batch"), Client()
        tasks = _serve(middleware, batch)
        await _until(lambda: app.started == 1)
        await asyncio.gather(*_serve(middleware, second_batch))  # refused at once: the batch lane (1) is full
        tasks += _serve(middleware, single)
        await _until(lambda: app.started == 2)  # ...while a single request still gets in
        app.release.set()
        await asyncio.gather(*tasks)
        return batch, second_batch, single

    batch, second_batch, single = asyncio.run(main())
    assert (batch.status, second_batch.status, single.status) == (200, 429, 200)
    assert "too many batch requests in progress (1)" in second_batch.error["msg"]


def test_slow_uploads_take_no_processing_slot_and_end_in_408_closing_the_connection():
    async def main():
        app = Held()
        app.release.set()
        middleware = TrafficMiddleware(app, LIMITS)
        slow = [Client(pieces=(b'{"user_id"', None)) for _ in range(5)]  # more than max_uploads and lanes
        tasks = _serve(middleware, *slow)
        await asyncio.sleep(0.05)
        normal = Client()
        await asyncio.gather(*_serve(middleware, normal))  # answered while every slow upload is still pending
        pending = sum(not t.done() for t in tasks)
        await asyncio.gather(*tasks)
        return normal, pending, slow

    normal, pending, slow = asyncio.run(main())
    assert normal.status == 200 and pending == 5
    for client in slow:  # those over max_uploads waited their turn within the same deadline
        assert client.status == 408 and client.headers[b"connection"] == b"close"
        assert "did not arrive within 0.3 s" in client.error["msg"]


def test_an_upload_over_the_limit_is_read_and_dropped_then_413():
    async def main():
        client = Client(pieces=(b"x" * (MAX_BODY_BYTES // 2),) * 3)
        await asyncio.gather(*_serve(TrafficMiddleware(Held(), LIMITS), client))
        return client

    client = asyncio.run(main())
    assert client.status == 413 and "exceeds the limit" in client.error["msg"]


def test_an_answer_that_does_not_start_in_time_is_replaced_by_a_504():
    async def main():
        client = Client()
        await asyncio.gather(*_serve(TrafficMiddleware(Held(), LIMITS), client))  # never released
        return client

    client = asyncio.run(main())
    assert client.status == 504 and "longer than 0.3 s" in client.error["msg"]
    assert len(client.sent) == 2  # nothing from the cancelled app after it


@pytest.fixture
def draining():
    DRAINING.set()
    yield
    DRAINING.clear()


def test_answers_close_their_connection_once_the_worker_drains(draining):
    async def main():
        app = Held()
        app.release.set()
        client = Client()
        await asyncio.gather(*_serve(TrafficMiddleware(app, LIMITS), client))
        return client

    client = asyncio.run(main())
    assert client.status == 200 and client.headers[b"connection"] == b"close"
