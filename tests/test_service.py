"""End to end: the real `bentoml serve` on loopback, real models trained on the tiny dataset, real HTTP."""

from __future__ import annotations

import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from recsys.core.candidates import SOURCES, Mix
from recsys.data.synthetic import generate
from recsys.settings import get_settings
from tests.helpers import Server, expected, get, post, project_env, warm_user


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


def test_each_item_says_which_candidate_sources_proposed_it(server, models):
    """Recomputed independently: LightFM's top-n unseen items by score, the top-n unseen popular items and EASE's
    top-n unseen items (the weight rows of the user's history, summed), n as the pair was trained with."""
    candidates, _ = models
    mix = candidates.served_mix(Mix(*get_settings().candidates.mix))
    assert candidates.has_ease and mix.n_ease > 0
    for index in range(3):
        user = warm_user(models, index)
        body = post(f"{server.url}/recommend", {"user_id": user, "top_k": 20})[1]
        row = candidates.user_rows([user])[0][0]
        seen = set(candidates.history(row).tolist())
        by_score = [i for i in np.argsort(-candidates.lightfm_scores([row])[0], kind="stable") if i not in seen]
        popular = [i for i in candidates.popular.tolist() if i not in seen][: mix.n_popular]
        history = candidates.history(row)
        ease = candidates.ease_scores(np.zeros(len(history), np.int64), history, 1)[0]  # the served arithmetic
        by_ease = [i for i in np.argsort(-ease, kind="stable") if i not in seen]
        lightfm_ids = set(candidates.item_ids[by_score[: mix.n_lightfm]].tolist())
        popular_ids = set(candidates.item_ids[popular].tolist())
        ease_ids = set(candidates.item_ids[by_ease[: mix.n_ease]].tolist())
        for r in body["recommendations"]:
            assert r["retrieved_by"] and set(r["retrieved_by"]) <= set(SOURCES), r
            assert ("lightfm" in r["retrieved_by"]) == (r["item_id"] in lightfm_ids), r
            assert ("popular" in r["retrieved_by"]) == (r["item_id"] in popular_ids), r
            assert ("ease" in r["retrieved_by"]) == (r["item_id"] in ease_ids), r
    cold = post(f"{server.url}/recommend", {"user_id": 10**15, "top_k": 3})[1]
    assert all(r["retrieved_by"] == [] for r in cold["recommendations"])


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
    assert [r["score"] for r in body["recommendations"]] == [None] * 5  # a popularity list in rank order: no model score
    status, body = post(f"{server.url}/recommend", {"user_id": 10**15 + 1, "top_k": 3})
    assert [r["source"] for r in body["recommendations"]] == ["global"] * 3
    assert [r["item_id"] for r in body["recommendations"]] == candidates.item_ids[candidates.popular[:3]].tolist()


def test_user_in_the_users_table_without_history_gets_their_segment_without_sending_it(server):
    """Known to users.csv, absent from the interactions: the same list as the same features sent explicitly would
    give, looked up by the service (ground truth from the dataset itself); features the client sends win."""
    dataset = generate("tiny", seed=get_settings().data.seed)  # what `recsys train --size tiny` trained on
    idle = dataset.users[~dataset.users["user_id"].isin(dataset.interactions["user_id"])].head(8)
    assert len(idle) == 8
    sources = set()
    for user in idle.itertuples():
        status, body = post(f"{server.url}/recommend", {"user_id": user.user_id})
        assert status == 200 and body["cold_start"] is True, body
        features = {"age": user.age, "sex": user.sex, "kids_flg": int(user.kids_flg)}
        explicit = post(f"{server.url}/recommend", {"user_id": 10**15, "user_features": features})[1]
        assert body["recommendations"] == explicit["recommendations"]
        sources |= {r["source"] for r in body["recommendations"]}
    assert sources and sources <= {"segment", "kids_segment"}

    user, features = int(idle["user_id"].iloc[0]), {"kids_flg": 1 - int(idle["kids_flg"].iloc[0])}
    sent = post(f"{server.url}/recommend", {"user_id": user, "user_features": features})[1]
    assert sent["recommendations"] == post(f"{server.url}/recommend",
                                           {"user_id": 10**15, "user_features": features})[1]["recommendations"]
    assert sent["recommendations"] != post(f"{server.url}/recommend", {"user_id": user})[1]["recommendations"]


def test_get_recommendation_answers_like_post_recommend(server, models):
    """The Flask reference service's route: POST /recommend's item ids, in order, in the reference's shape."""
    candidates, _ = models
    users = [warm_user(models, i) for i in range(3)] + [int(candidates.profile_user_ids[0]), 10**15]
    for user in users:
        items = [r["item_id"] for r in post(f"{server.url}/recommend", {"user_id": user})[1]["recommendations"]]
        assert len(items) == 10
        assert get(f"{server.url}/get_recommendation?user_id={user}") == (
            200, {"recommendations": items, "status": "success", "msg": None})
    top3 = post(f"{server.url}/recommend", {"user_id": users[0], "top_k": 3})[1]["recommendations"]
    assert get(f"{server.url}/get_recommendation?user_id={users[0]}&top_k=3")[1]["recommendations"] == [
        r["item_id"] for r in top3]


@pytest.mark.parametrize(("query", "fragment"), [
    ("user_id=abc", "user_id: Input should be a valid integer"),
    ("user_id=5.5", "user_id: Input should be a valid integer"),
    ("user_id=", "user_id: Input should be a valid integer"),
    ("user_id=-3", "user_id: Input should be greater than or equal to 0"),
    (f"user_id={2**70}", "user_id: Input should be less than or equal to 9223372036854775807"),
    ("", "user_id: Field required"),
    ("top_k=3", "user_id: Field required"),
    ("user_id=1&top_k=0", "top_k: Input should be greater than or equal to 1"),
    ("user_id=1&top_k=10000", "top_k: Input should be less than or equal to 100"),
    ("user_id=1&colour=red", "colour: Extra inputs are not permitted"),
    ("user_id=1&user_id=2", "user_id: appears more than once"),
])
def test_get_recommendation_bad_query_is_a_400_with_a_message(server, models, query, fragment):
    status, error = get(f"{server.url}/get_recommendation?{query}")
    assert status == 400
    assert error["status"] == "error" and error["recommendations"] == []
    assert fragment in error["msg"]
    assert get(f"{server.url}/get_recommendation?user_id={warm_user(models)}")[0] == 200


def _users_batched(url: str) -> float:
    """Users that went through the entry service's micro-batcher so far (its Prometheus histogram's sum)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return float(re.search(r"^recsys_entry_batch_size_sum (\S+)$", response.read().decode(), re.M).group(1))


def test_get_recommendation_shares_the_micro_batcher_with_post(server, models):
    users = [warm_user(models, i) for i in range(8)]
    before = _users_batched(server.url)
    with ThreadPoolExecutor(16) as pool:
        gets = pool.map(lambda u: get(f"{server.url}/get_recommendation?user_id={u}&top_k=5"), users)
        posts = pool.map(lambda u: post(f"{server.url}/recommend", {"user_id": u, "top_k": 5}), users)
        gets, posts = list(gets), list(posts)
    assert _users_batched(server.url) - before == 16
    assert [g[1]["recommendations"] for g in gets] == [[r["item_id"] for r in p[1]["recommendations"]] for p in posts]


def test_a_second_server_on_the_same_store_leaves_the_first_ones_metrics_alone(server, models, trained_home):
    """`bentoml serve` empties its store's Prometheus folder as it starts; each server now has one of its own."""
    user = warm_user(models)
    before = _users_batched(server.url)
    with Server(project_env(trained_home)) as other:
        assert post(f"{other.url}/recommend", {"user_id": user})[0] == 200
        assert _users_batched(other.url) == 1
    for _ in range(3):
        assert post(f"{server.url}/recommend", {"user_id": user})[0] == 200
    assert _users_batched(server.url) - before == 3


def test_batch_matches_single_calls(server, models):
    users = [warm_user(models, i) for i in range(3)] + [10**15]
    status, body = post(f"{server.url}/recommend/batch", {"requests": [{"user_id": u, "top_k": 4} for u in users]})
    assert status == 200 and len(body["results"]) == 4
    for user, result in zip(users, body["results"], strict=True):
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


def _concurrent_answers(url: str, bodies: list[dict]) -> list[dict]:
    """Answers to all bodies sent at once, so the entry service's micro-batcher really mixes them."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: post(f"{url}/recommend", body), bodies))
    assert all(status == 200 for status, _ in answers), answers
    return [answer for _, answer in answers]


def test_full_batch_larger_than_a_model_batch_and_concurrent_singles_agree(server, models):
    settings = get_settings().serving
    users = [warm_user(models, i % 40) for i in range(settings.max_batch_users)]
    assert settings.max_batch_users > settings.max_batch_size
    status, body = post(f"{server.url}/recommend/batch", {"requests": [{"user_id": u, "top_k": 3} for u in users]})
    assert status == 200 and [r["user_id"] for r in body["results"]] == users
    singles = _concurrent_answers(server.url, [{"user_id": u, "top_k": 3} for u in users[:24]])
    assert [s["recommendations"] for s in singles] == [r["recommendations"] for r in body["results"][:24]]


def test_fused_topology_gives_the_same_answers_as_split(server, models, trained_home):
    bodies = [{"user_id": warm_user(models, i), "top_k": 7} for i in range(12)]
    bodies += [{"user_id": 10**12 + i, "user_features": {"age": "age_25_34", "kids_flg": i % 2}} for i in range(4)]
    split = _concurrent_answers(server.url, bodies)
    with Server(project_env(trained_home, RECSYS_SERVING__TOPOLOGY="fused")) as fused:
        assert set(fused.service_pids()) == {"recommender"}  # no model service processes
        assert _concurrent_answers(fused.url, bodies) == split
