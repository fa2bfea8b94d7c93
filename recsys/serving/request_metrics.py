"""BentoML's request metrics with each route's labelled series looked up once, not on every request.

BentoML 1.4.40's ``RunnerTrafficMetricsMiddleware`` (``bentoml/_internal/server/http/instruments.py``) records four
series per HTTP request: the last request's time, the requests in progress, the request count and its duration.
For each it calls ``labels(...)`` with five keyword labels: a sort of the label names, a tuple of ``str``s and a
locked dictionary look-up, four times per request, for the same few routes and statuses. :class:`BoundRequestMetrics`
keeps the labelled series (prometheus_client's children, the very objects ``labels`` returns) per route and status,
and records the same values in them: /metrics is unchanged. Other scopes (websockets) go through BentoML's code.

:func:`apply` installs it, pinned to the BentoML version it was written against like recsys/serving/request_timer.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from timeit import default_timer
from typing import Any

from bentoml._internal.context import server_context
from bentoml._internal.server.http import instruments
from starlette.types import Message, Receive, Scope, Send

from recsys.serving.pins import written_for

WRITTEN_FOR = {"bentoml": "1.4.40"}
MAX_BOUND_PATHS = 256  # paths are the clients' to choose (404s included): past this many, looked up per request


@dataclass
class RouteSeries:
    """One path's labelled series: the last request's time (None on skipped paths), in progress, and per status
    the request count and duration."""

    last_request: Any
    in_progress: Any
    labels: dict[str, Any]
    by_status: dict[int, tuple[Any, Any]] = field(default_factory=dict)


class BoundRequestMetrics(instruments.RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics for HTTP, each path's and status's labelled series looked up once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.routes: dict[str, RouteSeries] = {}

    def series(self, path: str) -> RouteSeries:
        if (known := self.routes.get(path)) is not None:
            return known
        labels = {"endpoint": path, "service_name": server_context.bento_name,
                  "service_version": server_context.bento_version, "runner_name": server_context.service_name}
        last = None if path.startswith(tuple(self.skip_paths)) else self.metrics_last_request_timestamp.labels(
            service_name=labels["service_name"], service_version=labels["service_version"],
            runner_name=labels["runner_name"])
        route = RouteSeries(last, self.metrics_request_in_progress.labels(**labels), labels)
        if len(self.routes) < MAX_BOUND_PATHS:
            self.routes[path] = route
        return route

    def finished(self, route: RouteSeries, status: int) -> tuple[Any, Any]:
        """The request count and duration series of ``route`` answered with ``status``."""
        if (known := route.by_status.get(status)) is None:
            labels = {**route.labels, "http_response_code": status}
            known = route.by_status[status] = (self.metrics_request_total.labels(**labels),
                                               self.metrics_request_duration.labels(**labels))
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if not self._is_setup:
            self._setup()
        if scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        route = self.series(scope["path"])
        if route.last_request is not None:
            route.last_request.set_to_current_time()
        start = default_timer()
        status = 0

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                total, duration = self.finished(route, status)
                total.inc()
                duration.observe(max(default_timer() - start, 0))
            await send(message)

        with route.in_progress.track_inprogress():
            await self.app(scope, receive, counted)


def apply() -> None:
    """Install the bound metrics for the HTTP apps this process builds (once), if BentoML is the version this was
    written for."""
    if not written_for(__name__, WRITTEN_FOR, lost="BentoML's request metrics look their labelled series up four "
                       "times per request", check="RunnerTrafficMetricsMiddleware.__call__"):
        return
    instruments.RunnerTrafficMetricsMiddleware = BoundRequestMetrics  # type: ignore[misc]  # the patch itself
