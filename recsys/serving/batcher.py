"""Caller-side micro-batching: concurrent requests share one call to each model service.

BentoML's adaptive batching merges requests where they arrive, in the model service; the entry service still
pays one HTTP hop (with pickling and middleware) per request and per model service, and on a small machine
those hops cost far more than the models. Coalescing in the caller turns N hops into one. There is no timer:
a batch starts as soon as a slot is free and takes everything that queued meanwhile, so an idle service
adds no latency and batches grow with load. Two batches in flight let the candidates and the ranker services
work at the same time on different batches.

A new call does not start a batch by itself, though: it starts one at the end of the event loop's current pass
(``call_soon``), so the requests that arrived together (clients in step, as `hey -q` sends them, or several
connections read in one wake-up) share it. Starting at the first of them sent it alone, the next alone in the
second slot, and the rest in a third batch: per burst, three calls to each model service instead of one, each
paying a hop and CatBoost's fixed cost per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, handle: Callable[[list[T]], Awaitable[list[R]]], max_batch: int, max_in_flight: int = 2,
                 on_batch: Callable[[int], None] = lambda size: None):
        self.handle = handle
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.on_batch = on_batch
        self.pending: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self.in_flight = 0
        self._start_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, items: list[T]) -> list[R]:
        """The results for ``items``, in order; computed together with whatever else is waiting."""
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self.pending.append((items, future))
        if not self._start_scheduled:  # once the calls made in this pass of the loop have queued too
            self._start_scheduled = True
            asyncio.get_running_loop().call_soon(self._start)
        return await future

    def _start(self) -> None:
        self._start_scheduled = False
        while self.pending and self.in_flight < self.max_in_flight:
            batch = [self.pending.pop(0)]
            size = len(batch[0][0])
            while self.pending and size + len(self.pending[0][0]) <= self.max_batch:
                size += len(self.pending[0][0])
                batch.append(self.pending.pop(0))
            self.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[list[T], asyncio.Future[list[R]]]]) -> None:
        try:
            flat = [item for items, _ in batch for item in items]
            self.on_batch(len(flat))
            try:
                results = await self.handle(flat)
            except asyncio.CancelledError:  # shutting down: nobody waits forever
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # every caller of the batch gets the failure, the batcher goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            start = 0
            for items, future in batch:
                if not future.done():  # a caller that went away (client disconnect) is skipped
                    future.set_result(results[start:start + len(items)])
                start += len(items)
        finally:
            self.in_flight -= 1
            self._start()
