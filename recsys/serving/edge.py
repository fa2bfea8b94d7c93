"""The entry's own ASGI layer: one per request, where there were six.

Each of the entry's concerns used to be a middleware of its own, each a coroutine call per request and most a
wrapper around every ``send``: the safe headers (recsys/serving/headers.py), the error log (access_log.py), the
traffic limits (traffic.py), the clean error bodies (errors.py), the collector's timer gauge on /metrics
(gc_watch.py) and the public OpenAPI spec (openapi.py). The request body was read twice (traffic, then clean
errors) and replayed twice. Here they are stages of one layer, in the same order and with the same behaviour: one
``send`` wrapper for what every answer gets (safe headers, ``Connection: close`` while draining, the error log
line), the traffic stages as before, then per path the clean-errors or spec stage, on the body read once.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from recsys.serving.access_log import log_error
from recsys.serving.asgi import replay
from recsys.serving.errors import PUBLIC_PATHS, CleanErrors
from recsys.serving.gc_watch import refresh_loop_timers
from recsys.serving.headers import with_safe_headers
from recsys.serving.openapi import SPEC_PATH, PublicSpec
from recsys.serving.traffic import TrafficMiddleware, closing_when_draining
from recsys.settings import ServingSettings


class EntryEdge(TrafficMiddleware):
    """The entry's layer: ``inputs`` maps each POST route to its input model, ``info`` and ``labels`` make the
    public spec, ``log_errors`` writes a line per 4xx/5xx answer (``serving.access_log == "errors"``)."""

    def __init__(self, app: Any, limits: ServingSettings, inputs: dict[str, type[BaseModel]], info: dict[str, str],
                 labels: Callable[[], dict[str, frozenset[str]]], log_errors: bool) -> None:
        super().__init__(app, limits)
        self.clean_errors = CleanErrors(inputs)
        self.spec = PublicSpec(info, labels)
        self.log_errors = log_errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            refresh_loop_timers()
        await super().__call__(scope, receive, send)

    def answering(self, scope: Scope, send: Send, bypass: bool) -> Send:
        """One ``send`` wrapper for what every answer gets: safe headers, ``Connection: close`` while draining
        (not health and metrics), the error log line."""
        started = perf_counter()
        status = 0

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = with_safe_headers(message if bypass else closing_when_draining(message))
            await send(message)
            if (status >= 400 and self.log_errors and message["type"] == "http.response.body"
                    and not message.get("more_body")):
                log_error(scope, status, started)

        return answer

    async def handle(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        if scope["path"].startswith(PUBLIC_PATHS):
            await self.clean_errors(self.app, scope, body, receive, send)
        elif scope["path"] == SPEC_PATH:
            await self.spec(self.app, scope, replay(body, receive), send)
        else:
            await self.app(scope, replay(body, receive), send)
