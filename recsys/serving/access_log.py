"""The entry's access log: by default one line per request that did not succeed, none for those that did.

BentoML's access log writes a line per request, in every worker, through the arbiter's output pipe: at hundreds of
requests a second that cost the entry about 7% of its CPU for lines nobody reads, since /metrics counts requests
by route and status anyway. A refused or failed request (4xx, 5xx) is another matter: it is what an operator
looks for, and rare in normal traffic. ``serving.access_log`` picks ``errors`` (this middleware: one INFO line
per 4xx/5xx answer, in BentoML's format, never the request's input), ``all`` (BentoML's own log, every request)
or ``off``.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger("bentoml.access")  # BentoML's access logger: same handlers, same place in the output


class ErrorLogMiddleware:
    """One INFO line for each answer with status 400 or above: client, method, path, status and latency."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 0

        async def send_logging_errors(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if status >= 400 and message["type"] == "http.response.body" and not message.get("more_body"):
                client = scope.get("client")
                log.info("%s (scheme=%s,method=%s,path=%s) (status=%d) %.3fms",
                         f"{client[0]}:{client[1]}" if client else "_", scope["scheme"], scope["method"],
                         scope["path"], status, (perf_counter() - start) * 1000)

        await self.app(scope, receive, send_logging_errors)
