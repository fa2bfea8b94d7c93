"""Stages on their own servers (topology `remote`): three real `bentoml serve` processes on loopback ports, as three
containers or hosts would run them. The entry finds the two model services by address, answers exactly as the
single-host topology does, gives the documented 503 while a stage is down or serves another training's pair, and
recovers by itself once the stage is back."""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from recsys.core.candidates import Mix
from recsys.serving import wire
from recsys.settings import get_settings
from recsys.tools.process import free_port
from tests.helpers import Server, post, project_env, train, warm_user

TIMEOUT_S = 1.5


def _stage(home, target: str, port: int) -> Server:
    return Server(project_env(home), target=f"service:{target}", port=port)


def _entry(home, candidates_port: int, ranker_port: int, **server: object) -> Server:
    return Server(project_env(home, RECSYS_SERVING__TOPOLOGY="remote",
                              RECSYS_SERVING__CANDIDATES_URL=f"http://127.0.0.1:{candidates_port}",
                              RECSYS_SERVING__RANKER_URL=f"http://127.0.0.1:{ranker_port}",
                              RECSYS_SERVING__DEPENDENCY_TIMEOUT_S=str(TIMEOUT_S)), **server)


def _ready(server: Server) -> int:
    """/readyz's status (BentoML's health routes answer plain text, not JSON)."""
    try:
        with urllib.request.urlopen(f"{server.url}/readyz", timeout=TIMEOUT_S + 10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _until(condition, within: float = 60) -> None:
    deadline = time.time() + within
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.3)
    pytest.fail(f"not reached within {within}s")


@pytest.fixture(scope="module")
def other_pair_home(tmp_path_factory):
    """A store whose pair comes from another training (another seed of the tiny data)."""
    home = tmp_path_factory.mktemp("other-pair")
    result = train(project_env(home), "--size", "tiny", "--seed", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    return home


def _bodies(models) -> list[dict]:
    bodies = [{"user_id": warm_user(models, i), "top_k": 6} for i in range(6)]
    bodies.append({"user_id": warm_user(models, 7), "top_k": 4, "exclude_seen": False})
    bodies += [{"user_id": 10**12, "user_features": {"age": "age_25_34", "sex": "F", "kids_flg": 1}}, {"user_id": 10**12 + 1}]
    return bodies


def test_three_servers_answer_like_one_and_a_stage_that_dies_costs_a_503_until_it_is_back(server, models, trained_home):
    bodies = _bodies(models)
    expected = [post(f"{server.url}/recommend", body) for body in bodies]
    assert all(status == 200 for status, _ in expected)
    candidates_port, ranker_port = free_port(), free_port()
    with _stage(trained_home, "Ranker", ranker_port):
        candidates = _stage(trained_home, "Candidates", candidates_port).__enter__()
        try:
            with _entry(trained_home, candidates_port, ranker_port) as entry:
                assert set(entry.service_pids()) == {"recommender"}  # no model service runs beside the entry
                assert [post(f"{entry.url}/recommend", body) for body in bodies] == expected
                status, batch = post(f"{entry.url}/recommend/batch", {"requests": bodies})
                assert status == 200 and batch["results"] == [answer for _, answer in expected]

                candidates.__exit__()  # the candidates host goes away
                status, answer = post(f"{entry.url}/recommend", bodies[0], timeout=TIMEOUT_S + 10)
                assert status == 503 and answer["recommendations"] == []
                assert answer["msg"].startswith("the candidates model service is unavailable"), answer
                assert _ready(entry) == 503  # a load balancer stops sending traffic here

                candidates = _stage(trained_home, "Candidates", candidates_port).__enter__()  # and comes back
                _until(lambda: _ready(entry) == 200)
                assert [post(f"{entry.url}/recommend", body) for body in bodies] == expected
        finally:
            candidates.__exit__()


def test_a_stage_serving_another_training_is_refused(server, models, trained_home, other_pair_home):
    body = _bodies(models)[0]
    version = post(f"{server.url}/recommend", body)[1]["model_version"]
    candidates_port, ranker_port = free_port(), free_port()
    with _stage(trained_home, "Candidates", candidates_port), _stage(other_pair_home, "Ranker", ranker_port), \
            _entry(trained_home, candidates_port, ranker_port, ready_path="/livez") as entry:
        assert _ready(entry) == 503  # never ready: no traffic is sent to it
        status, answer = post(f"{entry.url}/recommend", body)
        assert status == 503 and answer["recommendations"] == []
        assert answer["msg"].startswith("the ranker model service serves model pair ") and \
            f"not this entry's {version}" in answer["msg"], answer
        # cold users never reach the ranker: they are served, from the entry's own pair's candidates service
        assert post(f"{entry.url}/recommend", {"user_id": 10**12})[0] == 200


@pytest.mark.parametrize("target", ["Candidates", "Ranker"])
def test_a_model_service_on_its_own_checks_the_pair_and_refuses_in_one_line(trained_home, tmp_path, target):
    """Served alone it runs the same start-up check as the whole service (BentoML's deployment hook): here its
    store holds a pair whose two models were not trained together."""
    shutil.copytree(trained_home / "bentoml", tmp_path / "bentoml")
    ranker = tmp_path / "bentoml" / "models" / "recsys_ranker"
    model_yaml = ranker / (ranker / "latest").read_text().strip() / "model.yaml"
    model_yaml.write_text(model_yaml.read_text().replace("feature_store_version: ", "feature_store_version: 0000", 1))
    with pytest.raises(RuntimeError, match="server exited with 1") as refused:
        _stage(tmp_path, target, free_port()).__enter__()
    assert "recsys: cannot serve: recsys_candidates:" in str(refused.value) and "do not belong together" in \
        str(refused.value) and "Traceback" not in str(refused.value), str(refused.value)[-2000:]


def test_a_stage_answers_a_plain_json_request_with_json_safe_arrays(models, trained_home):
    """What a `remote` entry, an entry from before the raw-arrays mark, or any JSON client sends: no `raw_arrays`
    mark, and the arrays come back base64-encoded, the same numbers the model gives in process. A JSON client that
    asks for raw arrays (``"raw_arrays": true``) gets the same answer: JSON cannot carry them (it was a 500)."""
    user = warm_user(models)
    query = {"user_id": user, "exclude_seen": True, "user_features": None}
    with _stage(trained_home, "Candidates", free_port()) as stage:
        answered = [post(f"{stage.url}/generate", {"queries": [item]}) for item in (query, {**query, wire.RAW: True})]
    candidates, _ = models
    rows, _ = candidates.user_rows(np.array([user]))
    mix = candidates.served_mix(Mix(*get_settings().candidates.mix))
    for status, answers in answered:
        assert status == 200 and answers[0]["items"][wire.ARRAY] == "<i8", answers
        (answer,) = wire.unpack(answers)
        assert np.array_equal(answer["items"], candidates.generate(rows, mix, True).items)
