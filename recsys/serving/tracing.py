"""No OpenTelemetry spans per request while tracing is off: a quarter of the entry's CPU per /recommend.

BentoML 1.4.40 puts OpenTelemetry's ASGI middleware in front of every service and records every span, whether
or not an exporter takes them (its sampler is "always record", to read a trace id): three spans per request (the
server span and one per ASGI send message, each with its attributes), started, ended and dropped. Measured on a
loaded entry worker (split, flat-out `/recommend`, hey, 10 s each way): 1.0-1.09 CPU ms per request with it,
0.76 without; the model services pay it per call too. Its one use when nothing exports traces is the request id
BentoML reads from the server span, for the ``X-BentoML-Request-ID`` header and its log records.

:func:`apply` therefore replaces that middleware, unless tracing is configured (``tracing.exporter_type`` in
BentoML's configuration), by :class:`RequestIdMiddleware`, which only sets the request id as BentoML's span hook
did (a random 64-bit number, as a span id is). With an exporter configured nothing changes. The patch is pinned
to the BentoML version it was written against, like recsys/serving/request_timer.py.
"""

from __future__ import annotations

import random

from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.context import trace_context
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from recsys.serving.pins import written_for

WRITTEN_FOR = {"bentoml": "1.4.40"}
OTEL_MIDDLEWARE = "OpenTelemetryMiddleware"


class RequestIdMiddleware:
    """What BentoML's span hook did per request when nothing exports the span: a fresh request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            trace_context.request_id = random.getrandbits(64)
        await self.app(scope, receive, send)


def without_spans(middlewares: list[Middleware], exporter: str | None) -> list[Middleware]:
    """BentoML's middleware stack with OpenTelemetry's ASGI middleware in place if traces are exported
    (``exporter``), else with :class:`RequestIdMiddleware` in its place."""
    if exporter:
        return middlewares
    return [Middleware(RequestIdMiddleware) if getattr(m.cls, "__name__", "") == OTEL_MIDDLEWARE else m
            for m in middlewares]


def apply() -> None:
    """Install the replacement for the HTTP apps this process builds, if BentoML is the version it was written for."""
    if not written_for(__name__, WRITTEN_FOR, lost="every request records OpenTelemetry spans whether or not "
                       "tracing is configured", check="BentoML's ServiceAppFactory.middlewares"):
        return
    stack = ServiceAppFactory.middlewares.fget
    assert stack is not None

    def middlewares(self: ServiceAppFactory) -> list[Middleware]:
        return without_spans(stack(self), BentoMLContainer.config.tracing.exporter_type.get())

    ServiceAppFactory.middlewares = property(middlewares)  # the patch itself

