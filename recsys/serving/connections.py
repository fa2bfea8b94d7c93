"""Connections that stay silent or send their request head a byte at a time are closed, not kept for ever.

BentoML's workers run uvicorn with its C HTTP parser (httptools; uvicorn picks it, and uvloop, when installed:
both are locked dependencies). uvicorn (0.54) arms its keep-alive timer only after an answer and cancels it on any
byte received. A connection that never sends anything, or sends its head a byte every few seconds, was therefore
never closed: each holds a socket and a file descriptor for as long as the client likes. Here the same timer also
runs from the moment a connection opens, and only a complete request head stops it, so every connection either
sends a full head within ``idle_timeout_s`` of opening or of its last answer, or is closed. (Bodies have their own
deadline, in :mod:`recsys.serving.traffic`; while a request is processed no timer runs.)

uvicorn's answer to bytes that are not HTTP is a plain-text 400; here it is the service's documented error body.

uvicorn also writes an answer's head (status line and headers) to the socket as soon as the app starts it, and its
body when the app sends that: two ``send`` system calls and two TCP segments on loopback per answer, each waking
the client (py-spy put ~19% of the split entry's samples under load in those writes; the CPU per request measured
from /proc fell by less, README "fourth round"). :class:`OneWriteCycle` holds the head back and writes it with
the first body chunk, in one ``writev``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httptools
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from recsys.serving.errors import error_json
from recsys.serving.headers import SAFE_HEADERS
from recsys.serving.pins import written_for

WRITTEN_FOR = {"uvicorn": "0.54.0", "httptools": "0.9.0"}
NOT_HTTP = error_json("invalid HTTP request: the request line or headers could not be parsed; send HTTP/1.1")


def _bad_request() -> bytes:
    """The whole 400 answer to bytes that are not HTTP, in the documented error body; the connection closes."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(NOT_HTTP)).encode()),
               (b"connection", b"close"), *SAFE_HEADERS]
    return b"".join([b"HTTP/1.1 400 Bad Request\r\n", *(name + b": " + value + b"\r\n" for name, value in headers),
                     b"\r\n", NOT_HTTP])


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    idle_timeout_s = 5.0  # set by apply() from the settings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.idle_timeout_s  # type: ignore[assignment]  # uvicorn says int; seconds, any number

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.idle_timeout_s, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own version first cancels the timer on any byte; here only a complete head does
        # (on_headers_complete), so a head trickled a byte at a time still runs out of time.
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send_400_response("")
        except httptools.HttpParserUpgrade:  # as uvicorn does: a WebSocket if the app takes them, else ignored
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_headers_complete(self) -> None:
        self._unset_keepalive_if_required()
        super().on_headers_complete()
        if type(self.cycle) is RequestResponseCycle:  # None after an upgrade; its task runs on the loop's next pass
            self.cycle.__class__ = OneWriteCycle

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_bad_request())
        self.transport.close()


class _Held:
    """Takes the place of the transport while uvicorn writes an answer's head: keeps the bytes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


class _Prefixed:
    """The transport, with ``head`` written in the same ``writev`` as the first bytes written after it."""

    def __init__(self, transport: Any, head: Sequence[bytes]) -> None:
        self.transport, self.head = transport, head

    def write(self, data: bytes) -> None:
        head, self.head = self.head, ()
        self.transport.writelines([*head, data])

    def close(self) -> None:
        if self.head:  # nothing followed the head (cannot happen for a complete answer); still send it
            self.write(b"")
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request cycle, with an answer's head held back until its first body message: one ``writev``
    per answer. An app that starts an answer and never sends its body has broken the response anyway (uvicorn
    then closes the connection)."""

    head: tuple[bytes, ...] = ()

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            transport, held = self.transport, _Held()
            self.transport = held  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport, self.head = transport, tuple(held.parts)
        elif self.head and message["type"] == "http.response.body":
            transport = self.transport
            self.transport = _Prefixed(transport, self.head)  # type: ignore[assignment]
            self.head = ()
            try:
                await super().send(message)
            finally:
                self.transport = transport
        else:
            await super().send(message)


def apply(idle_timeout_s: float) -> None:
    """Use :class:`GuardedHttpToolsProtocol` for the HTTP servers this process starts."""
    if not written_for(__name__, WRITTEN_FOR, lost="silent connections and slow request heads are not timed out",
                       check="uvicorn's HttpToolsProtocol"):
        return
    GuardedHttpToolsProtocol.idle_timeout_s = idle_timeout_s
    HTTP_PROTOCOLS["auto"] = f"{__name__}:{GuardedHttpToolsProtocol.__name__}"
