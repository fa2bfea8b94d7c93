"""One clean error body for the public API, whatever BentoML raised underneath.

BentoML answers a bad request with a JSON array (``[{"error": "..."}]``) and double-wraps errors raised in a
dependency. This ASGI middleware turns every 4xx/5xx of the public routes (``/recommend``, ``/recommend/batch``,
``/get_recommendation``) into ``{"status": "error", "msg": "...", "recommendations": []}`` with the same status
code. Before BentoML sees a request it refuses anything but JSON with 415, a body larger than ``MAX_BODY_BYTES``
with 413 (counted as it arrives, so a chunked body cannot slip past), and an invalid body with 400
(:mod:`serving.admission`: bounded, linear checks, off the event loop for big bodies). BentoML therefore only
ever parses valid, small requests: it never logs a 4xx as an ERROR with a traceback quoting the sender's input
(the access log's one line is the record of a refused request), and its parser never silently keeps the last of
repeated keys.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from recsys.serving import flask_compat
from recsys.serving.admission import INLINE_BYTES, Admission
from recsys.serving.asgi import rewrite_responses, send_json

MAX_BODY_BYTES = 1_000_000
PUBLIC_PATHS = ("/recommend", flask_compat.ROUTE)  # prefixes


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


def error_body(status: int, raw: bytes) -> bytes:
    text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return _error_json(_unwrap(parsed) if text else f"HTTP {status}")


class ModelServiceDown(RuntimeError):
    """A model service did not answer in time; the request may be retried."""


def unavailable(exc: ModelServiceDown) -> Response:
    """503 with the reason (BentoML would replace the message of any 5xx it raises with a generic one)."""
    return Response(_error_json(str(exc)), status_code=503, media_type="application/json",
                    headers={"Retry-After": "2"})


def _error_json(msg: str) -> bytes:
    return json.dumps({"status": "error", "msg": msg, "recommendations": []}).encode()


class CleanErrorsMiddleware:
    """``inputs`` maps each POST route to its input model (``Service.apis``' routes and input specs)."""

    def __init__(self, app: Any, inputs: dict[str, type[BaseModel]]) -> None:
        self.app = app
        self.admissions = {route: Admission.of(model) for route, model in inputs.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PUBLIC_PATHS):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        body, size = await _read_body(receive)
        if size < 0:
            return  # the client went away before it finished sending
        if scope.get("method") == "POST" and content_type != b"application/json":
            await send_json(send, 415, _error_json(f"unsupported Content-Type '{content_type.decode('latin-1')}'; "
                                                   "send JSON with 'Content-Type: application/json'"))
            return
        if body is None:
            await send_json(send, 413, _error_json(f"request body of {size} bytes exceeds the limit of "
                                                   f"{MAX_BODY_BYTES} bytes; split it into smaller batches"))
            return
        admission = self.admissions.get(scope["path"]) if scope.get("method") == "POST" else None
        if admission is not None:
            refusal = (admission.refusal(body) if len(body) <= INLINE_BYTES
                       else await asyncio.to_thread(admission.refusal, body))
            if refusal is not None:
                await send_json(send, 400, _error_json(refusal))
                return
        await rewrite_responses(self.app, scope, _replay(body, receive), send, lambda status: status >= 400, error_body)


async def _read_body(receive: Any) -> tuple[bytes | None, int]:
    """The request body and its size; the body is None past ``MAX_BODY_BYTES``.

    The declared Content-Length is not trusted (a chunked body has none): bytes are counted as they arrive, and
    past the limit they are read and dropped, so memory stays bounded and the client still gets its 413 instead
    of a connection reset. A client that disconnects mid-body gives (None, -1).
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None, -1
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        if not message.get("more_body"):
            return (b"".join(chunks) if size <= MAX_BODY_BYTES else None), size


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the app the body already read, then waits on the client as usual."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
