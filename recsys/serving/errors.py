"""One clean error body for the public API, whatever BentoML raised underneath.

BentoML answers a bad request with a JSON array (``[{"error": "..."}]``) and double-wraps errors raised in a
dependency. :class:`CleanErrors` turns every 4xx/5xx of the public routes (``/recommend``, ``/recommend/batch``,
``/get_recommendation``) into ``{"status": "error", "msg": "...", "recommendations": []}`` with the same status
code, and a 429 or 503 always says when to retry (``Retry-After``). It runs in the entry's edge layer
(:mod:`serving.edge`) once :mod:`serving.traffic` has read the whole body within its time and size limits.
Before BentoML sees a request it refuses anything but JSON with 415 and an invalid body with 400
(:mod:`serving.admission`: bounded, linear checks, off the event loop for big bodies). BentoML therefore only
ever parses valid, small requests: it never logs a 4xx as an ERROR with a traceback quoting the sender's input
(the access log's one line, when it is on, is the record of a refused request), and its parser never silently
keeps the last of repeated keys.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from recsys.serving import flask_compat, parse_once
from recsys.serving.admission import INLINE_BYTES, Admission
from recsys.serving.asgi import replay, rewrite_responses, send_json

RETRY_AFTER = {429: b"1", 503: b"2"}  # seconds, when the answer does not say
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
    return error_json(_unwrap(parsed) if text else f"HTTP {status}")


class ModelServiceDown(RuntimeError):
    """A model service did not answer in time; the request may be retried."""


def unavailable(exc: ModelServiceDown) -> Response:
    """503 with the reason (BentoML would replace the message of any 5xx it raises with a generic one)."""
    return Response(error_json(str(exc)), status_code=503, media_type="application/json",
                    headers={"Retry-After": RETRY_AFTER[503].decode()})


def error_json(msg: str) -> bytes:
    """The documented error body (serving/openapi.py's ErrorResponse)."""
    return json.dumps({"status": "error", "msg": msg, "recommendations": []}).encode()


class CleanErrors:
    """The public routes' stage of the entry's edge layer (recsys/serving/edge.py), once the body has arrived:
    415 and 400 before the app runs, then the app with its 4xx/5xx rewritten. ``inputs`` maps each POST route to
    its input model (``Service.apis``' routes and input specs)."""

    def __init__(self, inputs: dict[str, type[BaseModel]]) -> None:
        self.admissions = {route: Admission.of(model) for route, model in inputs.items()}

    async def __call__(self, app: Any, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if scope.get("method") == "POST" and content_type != b"application/json":
            await send_json(send, 415, error_json(f"unsupported Content-Type '{content_type.decode('latin-1')}'; "
                                                   "send JSON with 'Content-Type: application/json'"))
            return
        admission = self.admissions.get(scope["path"]) if scope.get("method") == "POST" else None
        if admission is not None:
            admitted = (admission.admit(body) if len(body) <= INLINE_BYTES
                        else await asyncio.to_thread(admission.admit, body))
            if isinstance(admitted, str):
                await send_json(send, 400, error_json(admitted))
                return
            parse_once.hand_over(scope, admitted)  # BentoML's endpoint takes it as it is: the body is not parsed again
        await rewrite_responses(app, scope, replay(body, receive), send, lambda status: status >= 400, error_body,
                                RETRY_AFTER)
