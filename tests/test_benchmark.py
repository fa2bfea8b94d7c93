"""The benchmark's measuring parts on the session server (the full `recsys bench` takes minutes)."""

from __future__ import annotations

from recsys.benchmark import _measure, markdown


def test_a_load_level_counts_requests_latency_and_cpu_per_process(server, models):
    candidates, _ = models
    bodies = [{"user_id": int(u), "top_k": 5} for u in candidates.user_ids[:50]]
    result = _measure(server, "/recommend", bodies, clients=4, seconds=1.5, config="split")
    # how many requests fit in 1.5 s depends on the machine; that every one is counted does not
    assert result["errors"] == 0 and result["completed"] >= result["requests"] > 0
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    cpu = result["cpu_ms_per_request"]
    assert set(cpu) == {"recommender", "candidates", "ranker", "client"}
    assert all(v > 0 for v in cpu.values()), cpu

    report = {"started": "now", "model_version": "v", "users": 1, "items": 2, "seconds_per_level": 1.5,
              "machine": {"cpus": 2, "python": "3.11"}, "http": [result],
              "in_process": {"batch_1": {"candidates_ms": 1, "features_ms": 1, "catboost_ms": 1, "rank_total_ms": 1}}}
    assert "| split | recommend | 4 |" in markdown(report)
