"""The benchmark's measuring parts on the session server (the full `recsys bench` takes minutes)."""

from __future__ import annotations

import math

from recsys.tools.benchmark import _measure, _pause_delta, markdown


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
    # every process's pauses during the level (with serving.gc_threshold at 10,000 a 1.5 s level may run none:
    # test_pauses_during_a_level_are_the_histograms_growth checks the arithmetic)
    pauses = result["gc_pauses"]
    assert {"recommender/1", "candidates/1", "ranker/1"} <= set(pauses), pauses
    assert all(p["collections"] >= p["full"] >= 0 and p["total_ms"] >= 0 for p in pauses.values()), pauses

    report = {"started": "now", "model_version": "v", "users": 1, "items": 2, "seconds_per_level": 1.5,
              "machine": {"cpus": 2, "python": "3.11"}, "http": [result],
              "in_process": {"batch_1": {"candidates_ms": 1, "features_ms": 1, "catboost_ms": 1, "rank_total_ms": 1}}}
    assert "| split | recommend | 4 | flat out |" in markdown(report)


def test_pauses_during_a_level_are_the_histograms_growth():
    """Per process: the seconds, collections and full ones added during the level, and the smallest bucket that
    holds every pause of the level; a process without a pause reports zeros."""
    before = {"recommender/1": {"seconds": 0.5, "collections": 10, "full": 1, "le 0.001": 8, "le 0.01": 10,
                                "le +Inf": 10},
              "ranker/1": {"seconds": 0.1, "collections": 2, "full": 0, "le 0.001": 2, "le 0.01": 2, "le +Inf": 2}}
    after = {"recommender/1": {"seconds": 0.53, "collections": 14, "full": 2, "le 0.001": 10, "le 0.01": 14,
                               "le +Inf": 14},
             "ranker/1": before["ranker/1"]}
    delta = _pause_delta(before, after)
    assert delta["recommender/1"] == {"total_ms": 30.0, "collections": 4, "full": 1, "longest_le_ms": 10.0}
    assert delta["ranker/1"] == {"total_ms": 0.0, "collections": 0, "full": 0, "longest_le_ms": 1.0}
