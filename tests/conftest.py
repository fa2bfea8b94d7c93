"""Shared fixtures: a tiny synthetic dataset generated once per test session."""

from __future__ import annotations

import pytest

from data.schema import Dataset
from data.synthetic import generate


@pytest.fixture(scope="session")
def tiny() -> Dataset:
    return generate("tiny", seed=7)
