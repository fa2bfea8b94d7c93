"""Workaround for BentoML 1.4.40 keeping every finished request alive for `traffic.timeout` seconds.

BentoML's ``TimeoutMiddleware`` (``bentoml/_internal/server/http/traffic.py``) schedules a timer per request with
``loop.call_later(timeout, ...)`` and never cancels it. The timer holds the request's waiter future and a copy of
its context (with the OpenTelemetry span), so under load a 30 s timeout keeps hundreds of thousands of objects
alive and the collector's full passes over them stall every connection for up to a second. The report for
upstream, with the same patch, is docs/bentoml-timeout-middleware-retention.md.

:func:`apply` swaps in a subclass that cancels the timer when the request ends. BentoML looks the class up in
``traffic`` each time it builds an app, so replacing it when the service module loads covers every service
process. The patch is pinned to the BentoML version it was written against; on any other version it is skipped
with a warning, so an upgrade cannot silently run a stale copy of BentoML's code.

A service whose own middleware answers in time (the entry: recsys/serving/traffic.py answers 504 itself, marked
``ANSWERS_IN_TIME``) does not get BentoML's timer at all: it was a backstop that could never fire first, and cost a
task, a future and a timer per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.server.http import traffic
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from recsys.serving.pins import written_for

WRITTEN_FOR = {"bentoml": "1.4.40"}
log = logging.getLogger("recsys")


class CancellingTimeoutMiddleware(traffic.TimeoutMiddleware):
    """BentoML's 504-after-`timeout` behaviour, with the timer cancelled as soon as the request ends."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        # the callback only touches `waiter`: an empty context, so a pending timer does not pin the request's span
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter, context=contextvars.Context())

        async def _send(message: Message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except asyncio.TimeoutError:
            if fut.cancel():
                await JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                   status_code=504)(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()


def apply(enabled: bool) -> None:
    """Install the workaround in this process if ``enabled`` and BentoML is the version it was written for."""
    if not enabled:
        log.info("recsys: BentoML's TimeoutMiddleware left as is (serving.cancel_request_timers is off)")
        return
    if not written_for(__name__, WRITTEN_FOR, lost="BentoML's TimeoutMiddleware keeps every request's timer",
                       check="whether this BentoML still leaks the timer (docs/bentoml-timeout-middleware-retention.md)"):
        return
    traffic.TimeoutMiddleware = CancellingTimeoutMiddleware  # type: ignore[misc]  # the patch itself
    stack = ServiceAppFactory.middlewares.fget
    assert stack is not None
    if getattr(stack, "backstop_dropped", False):
        return

    def middlewares(self: ServiceAppFactory) -> list[Middleware]:
        return without_backstop(stack(self), [cls for cls, _ in self.service.middlewares])

    middlewares.backstop_dropped = True  # type: ignore[attr-defined]  # applied once per process
    ServiceAppFactory.middlewares = property(middlewares)


def without_backstop(middlewares: list[Middleware], own: list[type]) -> list[Middleware]:
    """BentoML's middleware stack without its request timer if one of the service's ``own`` middlewares answers
    in time itself (``ANSWERS_IN_TIME``)."""
    if not any(getattr(cls, "ANSWERS_IN_TIME", False) for cls in own):
        return middlewares
    return [m for m in middlewares if not (isinstance(m.cls, type) and issubclass(m.cls, CancellingTimeoutMiddleware))]
