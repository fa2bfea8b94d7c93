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
                            rewrite: Rewrite, retry_after: dict[int, bytes] | None = None) -> None:
    """Run ``app``; a response whose status is ``wanted`` is buffered and sent again as JSON ``rewrite(status, body)``,
    with a ``Retry-After`` header from ``retry_after`` (by status) if it has none.

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
            status, headers = start["status"], list(start.get("headers") or [])
            if retry_after and status in retry_after and not any(k.lower() == b"retry-after" for k, _ in headers):
                headers.append((b"retry-after", retry_after[status]))
            await send_json(send, status, rewrite(status, b"".join(chunks)), headers)

    await app(scope, receive, capture)


def replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the app the body already read, then waits on the client as usual."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
