"""Finished requests leave nothing behind in the entry process, and the collector's pauses show on /metrics.

BentoML 1.4.40 keeps a timer per request alive for `traffic.timeout` seconds (recsys/serving/request_timer.py); the
entry's count of scheduled timers, read through /metrics, shows whether that retention is back.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import uvloop
from prometheus_client.parser import text_string_to_metric_families

from recsys.serving.gc_watch import scheduled_timers
from tests.helpers import BIN, ROOT, post, warm_user

BURST = 1200


def _samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` on /metrics, by their labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
        return response.status


def _entry_timers(url: str) -> float:
    (timers,) = [v for labels, v in _samples(url, "recsys_event_loop_timers").items()
                 if ("service", "recommender") in labels]
    return timers


def test_a_burst_of_requests_leaves_no_timers_behind_in_the_entry(server, models):
    baseline = _entry_timers(server.url)
    users = [warm_user(models, i % 20) for i in range(BURST // 4)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda u: post(f"{server.url}/recommend", {"user_id": u, "top_k": 5})[0], users))
        statuses += list(pool.map(lambda _: _status(f"{server.url}/healthz"), range(BURST - len(users))))
    assert statuses == [200] * BURST
    # Each finished request's timer is cancelled: uvloop drops it at once (asyncio's own loop once cancelled timers
    # are the majority, past 100), so what stays is bounded whatever the traffic. BentoML's own middleware would
    # leave all BURST.
    left = _entry_timers(server.url) - baseline
    assert left < BURST / 4, f"{left:.0f} timers outlived {BURST} finished requests: BentoML's per-request " \
                             "timer retention is back (recsys/serving/request_timer.py)"


def test_collector_pauses_and_the_frozen_start_up_heap_show_per_process(server, models):
    """Every process publishes its pauses (at least the collection before its start-up heap is frozen: with the
    raised young threshold, a few dozen requests may run no collection at all)."""
    for _ in range(50):
        post(f"{server.url}/recommend", {"user_id": warm_user(models), "top_k": 5})
    for _ in range(40):  # each process publishes its pauses every 0.25 s
        pauses = _samples(server.url, "recsys_gc_pause_seconds_count")
        observed = {service: sum(v for labels, v in pauses.items() if ("service", service) in labels)
                    for service in ("recommender", "candidates", "ranker")}
        if all(observed.values()):
            break
        time.sleep(0.25)
    assert all(observed.values()), f"no collector pauses observed for some service: {observed}"
    frozen = _samples(server.url, "recsys_gc_frozen_objects")
    for service in observed:
        assert any(v > 10_000 for labels, v in frozen.items() if ("service", service) in labels), frozen


def test_the_timer_count_sees_the_timers_of_uvloop_and_of_asyncios_own_loop():
    """Regression: the count read asyncio's private heap, which uvloop (what the workers run) does not have: it
    said 0 whatever was scheduled, so the burst test above could not fail."""
    async def pending_after_scheduling_seven_and_cancelling_one() -> int:
        loop = asyncio.get_running_loop()
        timers = [loop.call_later(60, print) for _ in range(7)]
        timers[0].cancel()
        count = scheduled_timers(loop)
        for timer in timers:
            timer.cancel()
        return count

    assert uvloop.run(pending_after_scheduling_seven_and_cancelling_one()) == 6  # uvloop forgets a cancelled one
    assert asyncio.run(pending_after_scheduling_seven_and_cancelling_one()) == 7  # asyncio keeps it for a while


def test_settling_a_service_raises_the_collectors_young_threshold():
    """Young collections every `serving.gc_threshold` net allocations, not Python's 700 (in a process of its own:
    the threshold is process-wide)."""
    code = ("import gc; from recsys.serving import gc_watch; gc_watch.settle(False, 12_345); "
            "print(gc.get_threshold()[0])")
    out = subprocess.run([str(BIN / "python"), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "12345"
