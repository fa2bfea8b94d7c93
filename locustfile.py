"""Realistic traffic for the recommender: `locust -f locustfile.py --host http://127.0.0.1:3000`.

* Users are drawn from the served model's own user ids, weighted by their history length, so a few heavy users
  come back often (as on a real streaming service). The ids are read once from the BentoML model store
  (BENTOML_HOME), the same store the server loads.
* A share of requests (LOCUST_COLD_SHARE, default 0.1) are for users the models have never seen, half of them
  with demographics; `top_k` varies; one call in ten is a batch of 5-20 users.
* Every answer is checked (status, `"status": "success"`, non-empty, no duplicate items, at most `top_k`), so a
  wrong answer counts as a failure, not just a latency.

Only loopback hosts are accepted: this file refuses to load anything else.
"""

from __future__ import annotations

import os
import random
from typing import Any
from urllib.parse import urlparse

import numpy as np
from locust import HttpUser, between, events, task
from locust.env import Environment

from recsys.core.model_store import CANDIDATES, get_model, load_candidates, resolve_version

COLD_SHARE = float(os.environ.get("LOCUST_COLD_SHARE", "0.1"))
TOP_K = [5, 10, 10, 10, 10, 20, 50]
PROFILES = [{"age": "age_25_34", "sex": "F", "kids_flg": 1}, {"age": "age_18_24", "sex": "M", "kids_flg": 0},
            {"age": "age_55_64", "sex": "F", "kids_flg": 0}]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Population:
    """The served users with their sampling weights (history length), loaded once per Locust process."""

    def __init__(self) -> None:
        model = load_candidates(get_model(CANDIDATES, resolve_version(os.environ.get("RECSYS_SERVING__MODEL_VERSION"))))
        self.user_ids = model.user_ids
        activity = np.diff(model.seen_indptr).astype(np.float64)
        self.cumulative = np.cumsum(activity / activity.sum())
        self.cold_base = int(model.user_ids.max()) + 1_000_000

    def warm(self) -> int:
        return int(self.user_ids[min(int(np.searchsorted(self.cumulative, random.random())), len(self.user_ids) - 1)])

    def request(self) -> dict[str, Any]:
        if random.random() < COLD_SHARE:
            body: dict[str, Any] = {"user_id": self.cold_base + random.randrange(1_000_000), "top_k": random.choice(TOP_K)}
            if random.random() < 0.5:
                body["user_features"] = random.choice(PROFILES)
            return body
        return {"user_id": self.warm(), "top_k": random.choice(TOP_K)}


population: Population | None = None


def _population() -> Population:
    if population is None:
        raise RuntimeError("no population: locust's init event loads it before any user starts")
    return population


@events.init.add_listener
def _load_population(environment: Environment, **_: object) -> None:
    global population
    host = urlparse(environment.host or "").hostname
    if host is not None and host not in LOOPBACK:
        raise SystemExit(f"refusing to load {environment.host}: load tests target loopback only (127.0.0.1)")
    population = Population()


def check(answer: dict[str, Any], request: dict[str, Any]) -> str | None:
    """Why an answer is wrong, or None when it is fine."""
    if answer.get("status") != "success":
        return f"status {answer.get('status')!r}: {answer.get('msg')}"
    items = [r["item_id"] for r in answer.get("recommendations", [])]
    if not items:
        return "empty recommendations"
    if len(items) != len(set(items)):
        return "duplicate items"
    if len(items) > request["top_k"]:
        return f"{len(items)} items for top_k {request['top_k']}"
    if answer.get("user_id") != request["user_id"]:
        return "answer for another user"
    return None


class RecommenderUser(HttpUser):
    wait_time = between(0.0, 0.05)

    @task(9)
    def recommend(self) -> None:
        body = _population().request()
        with self.client.post("/recommend", json=body, catch_response=True, name="/recommend") as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            problem = check(response.json(), body)
            if problem:
                response.failure(problem)

    @task(1)
    def recommend_batch(self) -> None:
        bodies = [_population().request() for _ in range(random.randint(5, 20))]
        with self.client.post("/recommend/batch", json={"requests": bodies}, catch_response=True,
                              name="/recommend/batch") as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            results = response.json().get("results", [])
            problems = [p for r, b in zip(results, bodies, strict=True) if (p := check(r, b))]
            if len(results) != len(bodies) or problems:
                response.failure(problems[0] if problems else f"{len(results)} results for {len(bodies)} requests")
