"""One clean error body for the public API, whatever BentoML raised underneath.

BentoML answers a bad request with a JSON array (``[{"error": "..."}]``) and double-wraps errors raised in a
dependency. This ASGI middleware turns every 4xx/5xx of the ``/recommend`` routes into
``{"status": "error", "msg": "...", "recommendations": []}`` with the same status code, refuses bodies
larger than ``MAX_BODY_BYTES`` with 413 before they are read, and anything but JSON with 415.
"""

from __future__ import annotations

import json
from typing import Any

from serving.asgi import rewrite_responses, send_json

MAX_BODY_BYTES = 1_000_000
PUBLIC_PREFIX = "/recommend"


def _unwrap(message: Any) -> str:
    """Dig the human message out of BentoML's (possibly nested, JSON-in-string) error arrays."""
    for _ in range(5):
        if isinstance(message, str):
            try:
                message = json.loads(message)
            except ValueError:
                return message
        elif isinstance(message, list) and message:
            message = message[0]
        elif isinstance(message, dict):
            message = message.get("error", message.get("msg", message.get("detail", json.dumps(message))))
        else:
            break
    return str(message)


def _describe(detail: list) -> str:
    """Pydantic's error list as one line a person can act on: 'top_k: Input should be ...; foo: ...'."""
    parts = []
    for err in detail:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def error_body(status: int, raw: bytes) -> bytes:
    text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), list):
        msg = _describe(parsed["detail"])
    else:
        msg = _unwrap(parsed) if text else f"HTTP {status}"
    return _error_json(msg)


def _error_json(msg: str) -> bytes:
    return json.dumps({"status": "error", "msg": msg, "recommendations": []}).encode()


class CleanErrorsMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PUBLIC_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if scope.get("method") == "POST" and content_type != b"application/json":
            await _refuse(receive, send, 415, f"unsupported Content-Type '{content_type.decode('latin-1')}'; "
                                                "send JSON with 'Content-Type: application/json'")
            return
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            await _refuse(receive, send, 413, f"request body of {int(length)} bytes exceeds the limit of "
                                                f"{MAX_BODY_BYTES} bytes; split it into smaller batches")
            return
        await rewrite_responses(self.app, scope, receive, send, lambda status: status >= 400, error_body)


async def _refuse(receive: Any, send: Any, status: int, msg: str) -> None:
    """Answer without calling the app; the body is read and dropped first, so a client still sending it gets
    this answer instead of a connection reset."""
    while (await receive()).get("more_body"):
        pass
    await send_json(send, status, _error_json(msg))
