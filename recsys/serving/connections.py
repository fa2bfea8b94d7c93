"""Connections that stay silent or send their request head a byte at a time are closed, not kept for ever.

uvicorn (0.54, the h11 protocol BentoML's workers run) arms its keep-alive timer only after an answer and cancels
it on any byte received. A connection that never sends anything, or sends its head a byte every few seconds, was
therefore never closed: each holds a socket and a file descriptor for as long as the client likes. Here the same
timer also runs from the moment a connection opens, and only a complete request head stops it, so every
connection either sends a full head within ``idle_timeout_s`` of opening or of its last answer, or is closed.
(Bodies have their own deadline, in :mod:`recsys.serving.traffic`; while a request is processed no timer runs.)

uvicorn's answer to bytes that are not HTTP is a plain-text 400; here it is the service's documented error body.

:func:`apply` makes this protocol uvicorn's default ("auto") in the process that imports the service, pinned to
the uvicorn version it was written against like recsys/serving/request_timer.py.
"""

from __future__ import annotations

from typing import Any

import h11
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.protocols.http.h11_impl import H11Protocol

from recsys.serving.errors import error_json
from recsys.serving.headers import SAFE_HEADERS
from recsys.serving.pins import written_for

WRITTEN_FOR = {"uvicorn": "0.54.0"}


class GuardedH11Protocol(H11Protocol):
    idle_timeout_s = 5.0  # set by apply() from the settings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.idle_timeout_s  # type: ignore[assignment]  # uvicorn says int; seconds, any number

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.idle_timeout_s, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own version first cancels the timer on any byte; here only a complete head does (handle_events
        # cancels it when h11 yields the Request), so a head trickled a byte at a time still runs out of time.
        self.conn.receive_data(data)
        self.handle_events()

    def send_400_response(self, msg: str) -> None:
        body = error_json("invalid HTTP request: the request line or headers could not be parsed; send HTTP/1.1")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), *SAFE_HEADERS]
        for event in (h11.Response(status_code=400, reason=b"Bad Request", headers=headers),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def apply(idle_timeout_s: float) -> None:
    """Use :class:`GuardedH11Protocol` for the HTTP servers this process starts."""
    if not written_for(__name__, WRITTEN_FOR, lost="silent connections and slow request heads are not timed out",
                       check="uvicorn's H11Protocol"):
        return
    GuardedH11Protocol.idle_timeout_s = idle_timeout_s
    HTTP_PROTOCOLS["auto"] = f"{__name__}:{GuardedH11Protocol.__name__}"
