"""Small ASGI plumbing shared by the middlewares that reshape what BentoML answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

Rewrite = Callable[[int, bytes], bytes]
# Headers that describe the body being replaced; every other header (e.g. a 405's Allow) is kept.
_BODY_HEADERS = {b"content-type", b"content-length", b"content-encoding", b"transfer-encoding"}


async def send_json(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    kept = [(k, v) for k, v in headers or [] if k.lower() not in _BODY_HEADERS]
    await send({"type": "http.response.start", "status": status,
                "headers": [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def rewrite_responses(app: Any, scope: Scope, receive: Receive, send: Send, wanted: Callable[[int], bool],
                            rewrite: Rewrite) -> None:
    """Run ``app``; a response whose status is ``wanted`` is buffered and sent again as JSON ``rewrite(status, body)``.

    Other responses stream through untouched.
    """
    start: Message | None = None
    passthrough = False
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal start, passthrough
        if message["type"] == "http.response.start":
            if wanted(message["status"]):
                start = message
            else:
                passthrough = True
                await send(message)
            return
        if passthrough or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            await send_json(send, start["status"], rewrite(start["status"], b"".join(chunks)), start.get("headers"))

    await app(scope, receive, capture)
