"""Admission and time limits of the entry service, answered in the service's documented error body.

This replaces BentoML's traffic layer on the entry (``MaxConcurrencyMiddleware`` and ``TimeoutMiddleware``), which
took a concurrency slot as soon as a request's head arrived and held it while the body trickled in: 512
connections sending a byte a second filled every slot, and every other request got ``429 {"error": "Too many
requests"}`` (no ``Retry-After``, outside the API's contract) until their 30 s timeout gave 504s, while /readyz said
200. Here a request goes through three stages, each bounded on its own:

1. **Arrival.** A body that is not complete with its head is an *upload*: it must arrive in full within
   ``body_timeout_s`` of the head, or the answer is 408 and the connection is closed. At most ``max_uploads`` are
   read at once; the others wait their turn within the same deadline, their bytes held back by uvicorn's flow
   control (64 KB) and the kernel, so the memory uploads hold stays bounded. Bytes are counted as they arrive: past
   ``MAX_BODY_BYTES`` they are read and dropped and the answer is 413. Requests whose body came with their head,
   as most JSON calls do, never wait here.
2. **Lanes.** Only a complete request takes a processing slot: ``/recommend/batch`` calls in their own lane of
   ``max_batch_concurrency``, everything else in one of ``max_concurrency``. A full lane answers 429 with
   ``Retry-After`` at once; a flood of batch calls cannot use up the single requests' slots.
3. **Processing.** An answer that has not started ``request_timeout_s`` after the body arrived is replaced by 504.

/healthz, /livez, /readyz and /metrics skip all of this, as they did with BentoML's layer. Once the process is
draining for shutdown (serving/shutdown.py), every answer carries ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from recsys.serving.asgi import replay, send_json
from recsys.serving.errors import RETRY_AFTER, error_json
from recsys.settings import ServingSettings

MAX_BODY_BYTES = 1_000_000
BYPASS_PATHS = frozenset({"/metrics", "/healthz", "/livez", "/readyz"})
BATCH_ROUTE = "/recommend/batch"
CLOSE = (b"connection", b"close")
DRAINING = threading.Event()  # set by recsys/serving/shutdown.py when this worker starts its shutdown



class Lane:
    """A count of requests in one kind of processing, and its limit (no queue: a full lane refuses at once)."""

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit, self.busy = name, limit, 0

    def take(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def give_back(self) -> None:
        self.busy -= 1


class TrafficMiddleware:
    ANSWERS_IN_TIME = True  # BentoML's request timer is not installed in front of it (recsys/serving/request_timer.py)

    def __init__(self, app: Any, limits: ServingSettings) -> None:
        self.app = app
        self.limits = limits
        self.uploads = asyncio.Semaphore(limits.max_uploads)
        self.lanes = {BATCH_ROUTE: Lane("batch requests", limits.max_batch_concurrency)}
        self.default_lane = Lane("requests", limits.max_concurrency)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bypass = scope["path"] in BYPASS_PATHS  # health and metrics: no limits
        answer = self.answering(scope, send, bypass)
        if bypass:
            await self.app(scope, receive, answer)
        else:
            await self.admit(scope, receive, answer)

    def answering(self, scope: Scope, send: Send, bypass: bool) -> Send:
        """The ``send`` every answer goes through: marked ``Connection: close`` if this worker is shutting down by
        then (health and metrics are not), so the client gets its answer and opens its next connection elsewhere,
        rather than losing a request on a closing socket. The entry's edge layer (recsys/serving/edge.py) adds its
        own marks here."""
        if bypass:
            return send

        async def closing(message: Message) -> None:
            await send(closing_when_draining(message))

        return closing

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request through arrival, its lane and processing; ``send`` is the final one (answers are not
        marked for draining here)."""
        body = await self._arrival(receive, send)
        if body is None:
            return  # answered already, or the client went away
        lane = self.lanes.get(scope["path"], self.default_lane)
        if not lane.take():
            await _refuse(send, 429, f"too many {lane.name} in progress ({lane.limit}); retry in a second",
                          [(b"retry-after", RETRY_AFTER[429])])
            return
        try:
            await self._processing(scope, body, receive, send)
        finally:
            lane.give_back()

    async def handle(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """Run the app on a request whose ``body`` has arrived (the entry's edge layer, recsys/serving/edge.py,
        adds its own stages here)."""
        await self.app(scope, replay(body, receive), send)

    async def _arrival(self, receive: Any, send: Send) -> bytes | None:
        """The whole body, or None once a 408 or 413 has been sent (or the client disconnected)."""
        deadline = asyncio.get_running_loop().time() + self.limits.body_timeout_s
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks, size = [message.get("body", b"")], len(message.get("body", b""))
        if message.get("more_body"):
            try:
                async with asyncio.timeout_at(deadline), self.uploads:
                    while message.get("more_body"):
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return None
                        chunk = message.get("body", b"")
                        size += len(chunk)
                        if size <= MAX_BODY_BYTES:  # past it, read and dropped: memory stays bounded
                            chunks.append(chunk)
            except TimeoutError:
                await _refuse(send, 408, f"the request body did not arrive within {self.limits.body_timeout_s:g} s "
                                         "of its headers; send the whole body at once", [CLOSE])
                return None
        if size > MAX_BODY_BYTES:
            await _refuse(send, 413, f"request body of {size} bytes exceeds the limit of {MAX_BODY_BYTES} bytes; "
                                     "split it into smaller batches")
            return None
        return b"".join(chunks)

    async def _processing(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """Run the app; if its answer has not started within the request timeout, cancel it and answer 504."""
        deadline = asyncio.timeout(self.limits.request_timeout_s)
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if not started:
                started = True
                deadline.reschedule(None)  # the answer has begun: the rest of it is not timed
            await send(message)

        try:
            async with deadline:
                await self.handle(scope, body, receive, watched)
        except TimeoutError:
            if not deadline.expired():
                raise  # the app's own, not ours
        if deadline.expired() and not started:
            await _refuse(send, 504, f"the answer took longer than {self.limits.request_timeout_s:g} s; retry later")


async def _refuse(send: Send, status: int, msg: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_json(send, status, error_json(msg), headers)


def closing_when_draining(message: Message) -> Message:
    """An ``http.response.start`` message marked ``Connection: close`` while this worker is shutting down; any
    other message as it is."""
    if message["type"] == "http.response.start" and DRAINING.is_set():
        headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
        message = {**message, "headers": [*headers, CLOSE]}
    return message
