"""A short headless Locust run against the real server: every simulated request must succeed."""

from __future__ import annotations

import json
import subprocess

from tests.helpers import BIN, ROOT, project_env

ROUTES = {"/recommend", "/recommend/batch"}


def loadtest(env: dict, *args: str, command: str = "loadtest") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "recsys"), command, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=180)


def test_locust_smoke_run_has_no_failures(server, trained_home, tmp_path):
    result = loadtest(project_env(trained_home), "--url", server.url, "--users", "4", "--spawn-rate", "4",
                      "--duration", "6s", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert summary["failures"] == 0
    routes = summary["by_route"]
    assert summary["requests"] == sum(r["requests"] for r in routes.values()) > 0
    assert set(routes) <= ROUTES
    # How many requests fit in 6 s depends on the machine. One task in ten is a batch (locustfile.py), so a run
    # of n requests misses a route with probability at most 0.9**n: both are required once that is below 1e-6.
    if 0.9 ** summary["requests"] < 1e-6:
        assert set(routes) == ROUTES
    assert (tmp_path / "locust.html").exists() and "p99" in result.stdout


def test_distributed_run_with_a_master_and_two_workers(server, trained_home, tmp_path):
    """What several load machines do (`--worker --master-host <master>`), as processes on loopback."""
    result = loadtest(project_env(trained_home), "--url", server.url, "--users", "4", "--spawn-rate", "4",
                      "--duration", "6s", "--workers", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["failures"] == 0 and summary["requests"] > 0
    assert "(2 Locust workers)" in result.stdout
    # the master handed the users to both workers, and both ran until it told them to quit
    master = (tmp_path / "locust.log").read_text()
    assert "Sending spawn jobs of 4 users at 4.00 spawn rate to 2 ready workers" in master, master[-2000:]
    for n in (1, 2):
        assert "Got quit message from master" in (tmp_path / f"worker-{n}.log").read_text()


def test_load_tests_refuse_non_loopback_targets(trained_home, tmp_path):
    result = loadtest(project_env(trained_home), "--url", "http://10.1.2.3:3000", "--duration", "1s",
                      "--out", str(tmp_path))
    assert result.returncode == 2 and "loopback only" in result.stderr


def test_soak_starts_its_own_server_and_samples_every_process_memory(trained_home, tmp_path):
    """The soak machinery on a short run (the real soak is `make soak`, minutes long)."""
    result = loadtest(project_env(trained_home), "--users", "4", "--duration", "8s", "--max-growth-pct", "50",
                      "--out", str(tmp_path), command="soak")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["requests"] > 0
    assert set(summary["memory"]) == {"recommender", "candidates", "ranker"}
    assert all(m["end_mb"] > 50 for m in summary["memory"].values())
    rows = (tmp_path / "memory.csv").read_text().splitlines()
    assert rows[0].startswith("seconds,") and len(rows) >= 2
    assert "RSS recommender" in result.stdout
