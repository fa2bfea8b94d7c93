"""End to end: the real `bentoml serve` on loopback, real models trained on the tiny dataset, real HTTP."""

from __future__ import annotations

import urllib.request

import pytest

from recsys.settings import get_settings
from tests.helpers import expected, post, warm_user


def test_warm_user_gets_the_two_stage_ranking(server, models):
    user = warm_user(models)
    status, body = post(f"{server.url}/recommend", {"user_id": user, "top_k": 10})
    assert status == 200, body
    assert body["status"] == "success" and body["msg"] is None and body["cold_start"] is False
    items = [r["item_id"] for r in body["recommendations"]]
    scores = [r["score"] for r in body["recommendations"]]
    assert len(items) == 10 and len(set(items)) == 10
    assert scores == sorted(scores, reverse=True)
    assert all(r["source"] == "reranked" for r in body["recommendations"])
    candidates, _ = models
    seen = set(candidates.item_ids[candidates.history(candidates.user_rows([user])[0][0])].tolist())
    assert not seen & set(items)
    want_items, want_scores = expected(models, user, 10)
    assert items == want_items
    assert scores == pytest.approx(want_scores, abs=1e-5)


def test_exclude_seen_false_may_return_watched_items(server, models):
    user = warm_user(models)
    status, body = post(f"{server.url}/recommend", {"user_id": user, "top_k": 20, "exclude_seen": False})
    assert status == 200
    assert [r["item_id"] for r in body["recommendations"]] == expected(models, user, 20, exclude_seen=False)[0]


def test_unknown_user_gets_popularity_for_their_segment(server, models):
    candidates, _ = models
    status, body = post(f"{server.url}/recommend", {
        "user_id": 10**15, "top_k": 5, "user_features": {"age": "age_25_34", "sex": "F", "kids_flg": 1}})
    assert status == 200 and body["cold_start"] is True
    items, source = candidates.segment_items("age_25_34", "F", 1)
    assert body["recommendations"][0]["source"] == source != "global"
    assert [r["item_id"] for r in body["recommendations"]] == candidates.item_ids[items[:5]].tolist()
    status, body = post(f"{server.url}/recommend", {"user_id": 10**15 + 1, "top_k": 3})
    assert [r["source"] for r in body["recommendations"]] == ["global"] * 3
    assert [r["item_id"] for r in body["recommendations"]] == candidates.item_ids[candidates.popular[:3]].tolist()


def test_batch_matches_single_calls(server, models):
    users = [warm_user(models, i) for i in range(3)] + [10**15]
    status, body = post(f"{server.url}/recommend/batch", {"requests": [{"user_id": u, "top_k": 4} for u in users]})
    assert status == 200 and len(body["results"]) == 4
    for user, result in zip(users, body["results"]):
        single = post(f"{server.url}/recommend", {"user_id": user, "top_k": 4})[1]
        assert result["user_id"] == user
        assert result["recommendations"] == single["recommendations"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"user_id": "abc"}, "user_id: Input should be a valid integer"),
    ({"user_id": 5.5}, "user_id"),
    ({"user_id": -3}, "greater than or equal to 0"),
    ({"user_id": 2**70}, "less than or equal to"),
    ({"user_id": 1, "top_k": 0}, "top_k"),
    ({"user_id": 1, "top_k": 10_000}, "top_k: Input should be less than or equal to 100"),
    ({"user_id": 1, "colour": "red"}, "colour: Extra inputs are not permitted"),
    ({"top_k": 3}, "user_id: Field required"),
    ({"user_id": 1, "user_features": {"kids_flg": 7}}, "user_features.kids_flg"),
    (b'{"user_id": 1', "Invalid JSON"),
    (b"", "user_id: Field required"),
    ([1, 2, 3], "object"),
])
def test_bad_input_is_a_400_with_a_message_and_the_service_keeps_serving(server, models, body, fragment):
    user = warm_user(models)
    before = post(f"{server.url}/recommend", {"user_id": user, "top_k": 5})[1]
    status, error = post(f"{server.url}/recommend", body)
    assert status == 400
    assert error["status"] == "error" and error["recommendations"] == []
    assert fragment in error["msg"]
    assert post(f"{server.url}/recommend", {"user_id": user, "top_k": 5})[1] == before


def test_oversized_and_too_many_users_are_refused(server):
    status, error = post(f"{server.url}/recommend/batch",
                         {"requests": [{"user_id": i} for i in range(get_settings().serving.max_batch_users + 1)]})
    assert status == 400 and "requests: List should have at most" in error["msg"]
    status, error = post(f"{server.url}/recommend/batch", b'{"requests": [' + b'{"user_id": 1},' * 200_000 + b"]}")
    assert status == 413 and "exceeds the limit" in error["msg"]


def test_operational_endpoints(server):
    for path in ("/healthz", "/readyz", "/livez", "/metrics", "/docs.json"):
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            assert response.status == 200
            text = response.read().decode()
    assert "/recommend/batch" in text and "/recommend" in text


def test_non_json_content_type_is_a_415(server):
    status, error = post(f"{server.url}/recommend", b"user_id=5", content_type="application/x-www-form-urlencoded")
    assert status == 415 and "Content-Type: application/json" in error["msg"]
