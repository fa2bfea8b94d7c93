"""The entry's access log: by default one line per request that did not succeed, none for those that did.

BentoML's access log writes a line per request, in every worker, through the arbiter's output pipe: at hundreds of
requests a second that cost the entry about 7% of its CPU for lines nobody reads, since /metrics counts requests
by route and status anyway. A refused or failed request (4xx, 5xx) is another matter: it is what an operator
looks for, and rare in normal traffic. ``serving.access_log`` picks ``errors`` (:func:`log_error`, called by the
entry's edge layer, recsys/serving/edge.py: one INFO line per 4xx/5xx answer, in BentoML's format, never the
request's input), ``all`` (BentoML's own log, every request) or ``off``.
"""

from __future__ import annotations

import logging
from time import perf_counter

from starlette.types import Scope

log = logging.getLogger("bentoml.access")  # BentoML's access logger: same handlers, same place in the output


def log_error(scope: Scope, status: int, started: float) -> None:
    """The INFO line for an answer with status 400 or above: client, method, path, status and latency since
    ``started`` (``perf_counter``)."""
    client = scope.get("client")
    log.info("%s (scheme=%s,method=%s,path=%s) (status=%d) %.3fms", f"{client[0]}:{client[1]}" if client else "_",
             scope["scheme"], scope["method"], scope["path"], status, (perf_counter() - started) * 1000)
