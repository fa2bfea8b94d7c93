"""SIGTERM (`kill`, a container stop) stops a `recsys` command the way Ctrl-C does, clean-up included.

By default Python ends the process on SIGTERM at once, so no `finally` block or `except BaseException` runs: a
training stopped during its save would leave the committed candidates half of its pair behind, and `loadtest`
or `bench` would leave their servers running. Here SIGTERM raises SystemExit instead. A handler that fires
while a finalizer runs (BentoML removes its temporary folders in weakref finalizers) cannot raise: Python prints
the exception and carries on. So the request is remembered and raised again at the next step boundary.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("recsys")
_stopped_by: int | None = None


def stop_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _stop)


def _stop(signum: int, frame: object) -> None:
    global _stopped_by
    if _stopped_by is None:
        log.error("stopped by %s", signal.Signals(signum).name)
        _stopped_by = signum
    raise SystemExit(128 + signum)


def raise_if_stopped() -> None:
    """Raise the stop again if its first SystemExit was swallowed (see the module's docstring)."""
    if _stopped_by is not None:
        raise SystemExit(128 + _stopped_by)
