"""The benchmark's measuring parts on the session server (the full `recsys bench` takes minutes)."""

from __future__ import annotations

import math

from recsys.tools.benchmark import _measure, markdown


def test_a_load_level_counts_requests_latency_cpu_and_collector_pauses_per_process(server, models):
    candidates, _ = models
    body = {"user_id": int(candidates.user_ids[0]), "top_k": 5}
    result = _measure(server, "/recommend", body, clients=4, seconds=1.5, config="split")
    # how many requests fit in 1.5 s depends on the machine; that they were answered without errors does not
    assert result["errors"] == 0 and result["requests"] > 0
    # hey prints a percentile only once it has the requests for it (i * 100 / n reaches 99 only from n = 100 on),
    # so on a slow or busy machine a 1.5 s level may have no p99: NaN, never a wrong number
    shown = [result[f"p{p}_ms"] for p in (50, 95, 99) if not math.isnan(result[f"p{p}_ms"])]
    assert result["requests"] < 100 or len(shown) == 3
    assert 0 < shown[0] and shown == sorted(shown) and shown[-1] <= result["max_ms"]
    # Little's law: flat out, every connection is busy all the time (a client whose figures break it is lying)
    assert 0 < result["busy_connections"] <= 4.5
    cpu = result["cpu_ms_per_request"]
    assert set(cpu) == {"recommender", "candidates", "ranker", "client"}
    assert all(v > 0 for v in cpu.values()), cpu
    pauses = result["gc_pauses"]
    assert {"recommender/1", "candidates/1", "ranker/1"} <= set(pauses), pauses
    assert pauses["recommender/1"]["collections"] > 0 and pauses["recommender/1"]["total_ms"] > 0

    report = {"started": "now", "model_version": "v", "users": 1, "items": 2, "seconds_per_level": 1.5,
              "machine": {"cpus": 2, "python": "3.11"}, "http": [result],
              "in_process": {"batch_1": {"candidates_ms": 1, "features_ms": 1, "catboost_ms": 1, "rank_total_ms": 1}}}
    assert "| split | recommend | 4 | flat out |" in markdown(report)
