"""Garbage-collector pauses kept off the request path and made visible on /metrics.

A full (generation 2) collection walks every tracked object in the process and stops the event loop meanwhile.
Most of them are loaded at start-up and live for ever (the models, feature tables, BentoML's and its libraries'
state), so :func:`settle` freezes them into the permanent generation once a service is loaded: later collections
only walk what requests allocated. Every pause is then observed per process in ``recsys_gc_pause_seconds``, and
the entry's count of scheduled asyncio timers, the trace a retention like BentoML's request timer leaves
(serving/request_timer.py), is read into ``recsys_event_loop_timers`` whenever /metrics is scraped.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import bentoml
from bentoml._internal.context import server_context

PROCESS = ("service", "worker")
GC_PAUSE = bentoml.metrics.Histogram(
    name="recsys_gc_pause_seconds", documentation="garbage-collector pauses of this process, by generation",
    labelnames=[*PROCESS, "generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
FROZEN = bentoml.metrics.Gauge(
    name="recsys_gc_frozen_objects", documentation="start-up objects moved out of the collector's reach (gc.freeze)",
    labelnames=list(PROCESS), multiprocess_mode="livemax")
LOOP_TIMERS = bentoml.metrics.Gauge(
    name="recsys_event_loop_timers", documentation="timers scheduled in the event loop, read when /metrics is scraped",
    labelnames=list(PROCESS), multiprocess_mode="livemax")


def _process_labels() -> dict[str, str]:
    return {"service": server_context.service_name or "unknown", "worker": str(server_context.worker_index or 0)}


class _PauseTimer:
    """A ``gc.callbacks`` entry: times each collection from its start to its stop."""

    def __init__(self) -> None:
        labels = _process_labels()
        self.by_generation = [GC_PAUSE.labels(**labels, generation=str(g)) for g in range(3)]
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.by_generation[info["generation"]].observe(time.perf_counter() - self.started)


def settle(freeze: bool) -> None:
    """Once a service has loaded its models: freeze the heap built so far (if ``freeze``) and time the collector.

    Called at the end of each service's ``__init__``; in the fused topology that is three times in one process,
    which only freezes what the later services added and times the collector once.
    """
    if freeze:
        gc.collect()
        gc.freeze()
        FROZEN.labels(**_process_labels()).set(gc.get_freeze_count())
    if not any(isinstance(callback, _PauseTimer) for callback in gc.callbacks):
        gc.callbacks.append(_PauseTimer())


class LoopTimersOnScrape:
    """ASGI middleware that refreshes ``recsys_event_loop_timers`` just before /metrics is read (free otherwise)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            # BaseEventLoop's heap of TimerHandles (uvloop, not used here, has none to count)
            scheduled = getattr(asyncio.get_running_loop(), "_scheduled", ())
            LOOP_TIMERS.labels(**_process_labels()).set(len(scheduled))
        await self.app(scope, receive, send)
