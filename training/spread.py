"""Metrics over several model seeds: mean ± spread, and which "two-stage beats X" claims the spread allows.

Two runs of one configuration differ (on MovieLens-100k by 0.007 ndcg@10, as much as the gap to EASE), so one run
cannot say that one model beats another. Every seed refits LightFM and the reranker on the same split and scores
the same users; popularity and EASE do not depend on the seed, so their spread is zero and the gap's spread is the
two-stage model's own.

A claim is made for a baseline when there are at least ``MIN_SEEDS`` seeds, every seed's gap is positive and the mean
gap is at least ``CLAIM_SDS`` sample standard deviations of the gap (with 3 seeds that is stricter than a one-sided
t-test at 95%, which needs 1.69).
"""

from __future__ import annotations

import statistics
from typing import Any

CHALLENGER = "two_stage"
CLAIM_SDS = 2.0
MIN_SEEDS = 3  # a standard deviation of two values is too rough to claim on


def summarise(evaluations: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """model -> metric -> mean, sd (sample; 0 for one seed), min, max over the seeds' evaluations."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, metrics in evaluations[0]["metrics"].items():
        out[model] = {}
        for metric in metrics:
            values = [e["metrics"][model][metric] for e in evaluations]
            out[model][metric] = {"mean": statistics.fmean(values),
                                  "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                                  "min": min(values), "max": max(values)}
    return out


def claims(evaluations: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """For each baseline, on ndcg@k and map@k: the mean gap, its sd and relative size, and whether the claim is
    made."""
    metrics, out = (f"ndcg@{k}", f"map@{k}"), []
    for baseline in evaluations[0]["metrics"]:
        if baseline == CHALLENGER:
            continue
        for metric in metrics:
            gaps = [e["metrics"][CHALLENGER][metric] - e["metrics"][baseline][metric] for e in evaluations]
            base = statistics.fmean(e["metrics"][baseline][metric] for e in evaluations)
            mean = statistics.fmean(gaps)
            sd = statistics.stdev(gaps) if len(gaps) > 1 else None
            if len(gaps) < MIN_SEEDS:
                verdict, claimed = f"not claimed: {len(gaps)} seed(s), {MIN_SEEDS} needed (--seeds)", False
            elif sd is not None and min(gaps) > 0 and mean >= CLAIM_SDS * sd:
                verdict, claimed = "beats it", True
            elif mean > 0:
                verdict, claimed = f"not claimed: the gap is within {CLAIM_SDS:g} sd of its spread", False
            else:
                verdict, claimed = "does not beat it", False
            out.append({"baseline": baseline, "metric": metric, "seeds": len(gaps), "mean_gap": mean, "sd_gap": sd,
                        "relative_gap": mean / base if base > 0 else None, "claimed": claimed, "verdict": verdict})
    return out
