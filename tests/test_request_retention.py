"""The collector's pauses and the frozen start-up heap show on /metrics, per process."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import post, warm_user


def _samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` on /metrics, by their labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def test_collector_pauses_and_the_frozen_start_up_heap_show_per_process(server, models):
    for _ in range(50):
        post(f"{server.url}/recommend", {"user_id": warm_user(models), "top_k": 5})
    pauses = _samples(server.url, "recsys_gc_pause_seconds_count")
    frozen = _samples(server.url, "recsys_gc_frozen_objects")
    for service in ("recommender", "candidates", "ranker"):
        observed = sum(v for labels, v in pauses.items() if ("service", service) in labels)
        assert observed > 0, f"no collector pauses observed for {service}: {pauses}"
        assert any(v > 10_000 for labels, v in frozen.items() if ("service", service) in labels), frozen
