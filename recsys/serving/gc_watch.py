"""Garbage-collector pauses kept off the request path and made visible on /metrics.

A full (generation 2) collection walks every tracked object in the process and stops the event loop meanwhile.
Most of them are loaded at start-up and live for ever (the models, feature tables, BentoML's and its libraries'
state), so :func:`settle` freezes them into the permanent generation once a service is loaded: later collections
only walk what requests allocated. A request's objects are nearly all freed by their reference counts as it ends,
yet with Python's default threshold (a young collection every 700 net allocations) the entry collected ~110 times
a second under load, and every ~100th collection was a full one of up to 10 ms that stalled every request in
flight: :func:`settle` raises the threshold (``serving.gc_threshold``, 10,000). Every pause is then observed per
process in ``recsys_gc_pause_seconds``, and the entry's count of scheduled asyncio timers, the trace a retention
like BentoML's request timer leaves (recsys/serving/request_timer.py), is read into ``recsys_event_loop_timers``
whenever /metrics is scraped.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import deque
from typing import Any

import prometheus_client
import uvloop
from bentoml._internal.context import server_context
from uvloop.loop import TimerHandle as UvloopTimer  # type: ignore[attr-defined]  # not in its stubs

PROCESS = ("service", "worker")
PUBLISH_EVERY_S = 0.25  # collector pauses reach /metrics this late at most
GC_PAUSE = prometheus_client.Histogram(
    name="recsys_gc_pause_seconds", documentation="garbage-collector pauses of this process, by generation",
    labelnames=[*PROCESS, "generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
FROZEN = prometheus_client.Gauge(
    name="recsys_gc_frozen_objects", documentation="start-up objects moved out of the collector's reach (gc.freeze)",
    labelnames=list(PROCESS), multiprocess_mode="livemax")
LOOP_TIMERS = prometheus_client.Gauge(
    name="recsys_event_loop_timers", documentation="timers scheduled in the event loop, read when /metrics is scraped",
    labelnames=list(PROCESS), multiprocess_mode="livemax")


def _process_labels() -> dict[str, str]:
    return {"service": server_context.service_name or "unknown", "worker": str(server_context.worker_index or 0)}


class _PauseTimer:
    """A ``gc.callbacks`` entry: times each collection from its start to its stop.

    It only appends to a queue. A collection can start inside any allocation, including one made while
    prometheus_client holds its process-wide, non-reentrant lock (in multiprocess mode every metric update takes
    it): a callback that observed the histogram itself would deadlock the worker. A thread publishes the queue.
    """

    def __init__(self) -> None:
        self.pending: deque[tuple[int, float]] = deque()
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pending.append((info["generation"], time.perf_counter() - self.started))

    def publish_forever(self, labels: dict[str, str]) -> None:
        by_generation = [GC_PAUSE.labels(**labels, generation=str(g)) for g in range(3)]
        while True:
            time.sleep(PUBLISH_EVERY_S)
            while self.pending:
                generation, seconds = self.pending.popleft()
                by_generation[generation].observe(seconds)


def settle(freeze: bool, threshold: int) -> None:
    """Once a service has loaded its models: freeze the heap built so far (if ``freeze``), collect young objects
    only every ``threshold`` net allocations, and time the collector.

    Called at the end of each service's ``__init__``; in the fused topology that is three times in one process,
    which only freezes what the later services added and times the collector once. The timer comes first, so the
    collection before the freeze is each process's first reported pause (a start-up one, before any request).
    """
    if not any(isinstance(callback, _PauseTimer) for callback in gc.callbacks):
        timer = _PauseTimer()
        # the labels are read here: the service's name is a context variable, which a new thread does not see
        threading.Thread(target=timer.publish_forever, args=(_process_labels(),), name="recsys-gc-pauses",
                         daemon=True).start()
        gc.callbacks.append(timer)
    if freeze:
        gc.collect()
        gc.freeze()
        FROZEN.labels(**_process_labels()).set(gc.get_freeze_count())
    gc.set_threshold(threshold, *gc.get_threshold()[1:])


def refresh_loop_timers() -> None:
    """Set ``recsys_event_loop_timers`` from the running loop: called just before /metrics is read (free otherwise)."""
    LOOP_TIMERS.labels(**_process_labels()).set(scheduled_timers(asyncio.get_running_loop()))


def scheduled_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Timers the event loop holds: asyncio's heap of TimerHandles (cancelled ones included until it drops them),
    or uvloop's set of live ones, which it keeps private; the collector's view of the loop reaches it."""
    if isinstance(loop, uvloop.Loop):
        return sum(len(held) for held in gc.get_referents(loop)
                   if isinstance(held, set) and any(isinstance(h, UvloopTimer) for h in held))
    return len(getattr(loop, "_scheduled", ()))
