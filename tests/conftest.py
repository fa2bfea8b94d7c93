"""Shared fixtures: a tiny synthetic dataset generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.data.schema import Dataset
from recsys.data.synthetic import generate
from tests.helpers import Server, load_pair, post, project_env, train


@pytest.fixture(scope="session")
def tiny() -> Dataset:
    return generate("tiny", seed=7)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory) -> Path:
    """A private BentoML store holding one model pair trained on the tiny synthetic dataset."""
    home = tmp_path_factory.mktemp("trained")
    result = train(project_env(home), "--size", "tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    return home


@pytest.fixture(scope="session")
def server(trained_home):
    with Server(project_env(trained_home)) as running:
        yield running


@pytest.fixture(scope="session")
def models(server, trained_home):
    """The same model pair the server loaded, read straight from the store's files (no BentoML involved)."""
    version = post(f"{server.url}/recommend", {"user_id": 0, "top_k": 1})[1]["model_version"]
    return load_pair(trained_home, version)
