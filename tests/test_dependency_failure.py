"""A model service process that dies or hangs costs a clear 503, never a hang or a bare 500, and the service
heals by itself: circus restarts a killed worker, a resumed one answers again."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import Server, get, load_pair, post, project_env, train, warm_user

TIMEOUT_S = 1.5


def _recovers(server: Server, body: dict, expected: dict, within: float = 60) -> float:
    """Seconds until the service gives the expected answer again; every answer on the way is 200 or 503."""
    start = time.time()
    while time.time() - start < within:
        status, answer = post(f"{server.url}/recommend", body, timeout=TIMEOUT_S + 5)
        assert status in (200, 503), (status, answer)
        if status == 200:
            assert answer == expected
            return time.time() - start
        assert "model service is unavailable" in answer["msg"] and answer["recommendations"] == []
        time.sleep(0.2)
    pytest.fail(f"no recovery within {within}s")


@pytest.mark.parametrize("stage", ["candidates", "ranker"])
def test_killed_or_stuck_model_service_gives_503_then_recovers(trained_home, stage):
    env = project_env(trained_home, RECSYS_SERVING__DEPENDENCY_TIMEOUT_S=str(TIMEOUT_S))
    with Server(env) as server:
        version = post(f"{server.url}/recommend", {"user_id": 0, "top_k": 1})[1]["model_version"]
        body = {"user_id": warm_user(load_pair(trained_home, version)), "top_k": 5}
        status, expected = post(f"{server.url}/recommend", body)
        assert status == 200 and expected["cold_start"] is False

        [pid] = server.service_pids()[stage]
        os.kill(pid, signal.SIGSTOP)  # hangs: the entry must not wait for it
        try:
            # the client's own timeout catches a hang; the answer must come from the dependency timeout
            status, answer = post(f"{server.url}/recommend", body, timeout=TIMEOUT_S + 10)
            assert status == 503 and f"the {stage} model service is unavailable (TimeoutError)" in answer["msg"], answer
            status, answer = get(f"{server.url}/get_recommendation?user_id={body['user_id']}", timeout=TIMEOUT_S + 10)
            assert status == 503 and f"the {stage} model service is unavailable (TimeoutError)" in answer["msg"], answer
        finally:
            os.kill(pid, signal.SIGCONT)
        _recovers(server, body, expected)

        os.kill(pid, signal.SIGKILL)  # dies: circus starts a new worker
        request = urllib.request.Request(f"{server.url}/recommend", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=TIMEOUT_S + 10)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "2"
        assert "model service is unavailable" in json.loads(refused.value.read())["msg"]
        _recovers(server, body, expected)
        assert server.service_pids()[stage] != [pid]


def test_restarted_workers_serve_the_pair_the_server_started_with(tmp_path):
    """Serve pair A, train a newer pair B into the same store, kill each model worker: circus' restarts load A,
    not `latest` (a restarted ranker used to load B and rank A's candidates with it, labelled A)."""
    env = project_env(tmp_path, RECSYS_SERVING__DEPENDENCY_TIMEOUT_S=str(TIMEOUT_S))
    assert train(env, "--size", "tiny").returncode == 0
    with Server(env) as server:
        version = post(f"{server.url}/recommend", {"user_id": 0, "top_k": 1})[1]["model_version"]
        pair = load_pair(tmp_path, version)
        bodies = [{"user_id": warm_user(pair, i), "top_k": 10} for i in range(3)]
        expected = [post(f"{server.url}/recommend", body)[1] for body in bodies]
        assert train(env, "--size", "tiny", "--seed", "8").returncode == 0
        latest = (tmp_path / "bentoml" / "models" / "recsys_ranker" / "latest").read_text().strip()
        assert latest != version
        for stage in ("candidates", "ranker"):
            [pid] = server.service_pids()[stage]
            os.kill(pid, signal.SIGKILL)
            _recovers(server, bodies[0], expected[0])
            assert server.service_pids()[stage] != [pid]
        assert [post(f"{server.url}/recommend", body)[1] for body in bodies] == expected
