"""The machine's ceiling for `recsys bench`: the smallest ASGI app, under the same uvicorn as BentoML's workers."""

from __future__ import annotations

from typing import Any

BODY = b"ok"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start or stop
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
