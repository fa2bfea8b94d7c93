"""The entry service's micro-batcher: concurrent calls share one downstream call, answers stay in order."""

from __future__ import annotations

import asyncio

import pytest

from recsys.serving.batcher import MicroBatcher


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_calls_share_batches_and_get_their_own_answers_in_order():
    calls: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [2 * i for i in items]

    async def main() -> list[list[int]]:
        batcher = MicroBatcher(double, max_batch=8, max_in_flight=1)
        return await asyncio.gather(*(batcher([i, 100 + i]) for i in range(10)))

    answers = _run(main())
    assert answers == [[2 * i, 200 + 2 * i] for i in range(10)]
    # the calls made in one pass of the event loop start together, as many as a batch holds; no timer waits for more
    assert calls[0] == [0, 100, 1, 101, 2, 102, 3, 103]
    assert len(calls) < 10 and max(len(c) for c in calls) <= 8


def test_calls_that_arrive_together_share_one_batch_though_a_slot_is_free():
    """A burst (clients in step, read in one wake-up of the event loop) is one call downstream. The batcher used to
    send the first request of a burst alone, the second alone in the other slot, and the rest after them: three
    hops per model service, each with its fixed cost, for one burst."""
    calls: list[list[int]] = []

    async def record(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return items

    async def main() -> list[list[int]]:
        batcher = MicroBatcher(record, max_batch=64, max_in_flight=2)
        return await asyncio.gather(*(batcher([i]) for i in range(32)))

    assert _run(main()) == [[i] for i in range(32)]
    assert calls == [list(range(32))]


def test_a_lone_call_is_not_kept_waiting_for_company():
    async def main() -> tuple[list[int], float]:
        batcher = MicroBatcher(lambda items: asyncio.sleep(0, result=items), max_batch=64)
        loop = asyncio.get_running_loop()
        passes = 0

        def count() -> None:  # counts the event loop's passes while the call is answered
            nonlocal passes
            passes += 1
            loop.call_soon(count)

        loop.call_soon(count)
        return await batcher([7]), passes

    answer, passes = _run(main())
    assert answer == [7] and passes <= 5


def test_a_call_larger_than_max_batch_goes_alone_and_nothing_is_lost():
    async def main():
        batcher = MicroBatcher(lambda items: asyncio.sleep(0, result=items), max_batch=4)
        return await asyncio.gather(batcher(list(range(10))), batcher([42]))

    assert _run(main()) == [list(range(10)), [42]]


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs():
    async def handle(items: list[int]) -> list[int]:
        await asyncio.sleep(0.01)
        if 13 in items:
            raise RuntimeError("model service down")
        return items

    async def main():
        batcher = MicroBatcher(handle, max_batch=2, max_in_flight=1)
        first = await asyncio.gather(batcher([1]), batcher([13]), batcher([2]), return_exceptions=True)
        return first, await batcher([3])

    first, after = _run(main())
    assert isinstance(first[0], RuntimeError) and isinstance(first[1], RuntimeError)  # batched with the failure
    assert first[2] == [2]  # the next batch
    assert after == [3]


def test_batch_sizes_are_reported():
    sizes: list[int] = []

    async def main():
        batcher = MicroBatcher(lambda items: asyncio.sleep(0.01, result=items), max_batch=64, max_in_flight=1,
                               on_batch=sizes.append)
        await asyncio.gather(*(batcher([i]) for i in range(5)))

    _run(main())
    assert sizes == [5]


@pytest.mark.parametrize("in_flight", [1, 3])
def test_in_flight_limit_is_respected(in_flight):
    running = peak = 0

    async def handle(items):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return items

    async def main():
        batcher = MicroBatcher(handle, max_batch=1, max_in_flight=in_flight)
        await asyncio.gather(*(batcher([i]) for i in range(12)))

    _run(main())
    assert peak == in_flight
