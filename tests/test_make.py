"""`make test`'s verdict on pytest's exit status, with a stand-in pytest that exits as told (the real one cannot be
made to collect nothing from the whole suite without breaking it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT


def _make_pytest(tmp_path: Path, pytest_exit: int, *args: str):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    fake = tmp_path / ".venv" / "bin" / "pytest"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text(f"#!/bin/sh\necho \"stand-in pytest $*\"\nexit {pytest_exit}\n")
    fake.chmod(0o755)
    # not the selection of a `make test PYTEST_ARGS=...` that runs this test (make hands it down in MAKEFLAGS)
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS"}}
    return subprocess.run(["make", "--no-print-directory", "-C", str(tmp_path), "pytest", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_no_tests_from_the_whole_suite_fails_loudly(tmp_path):
    result = _make_pytest(tmp_path, 5)
    assert result.returncode != 0
    assert "FAILED: pytest collected no tests from the whole suite" in result.stdout


def test_no_tests_from_a_narrowed_selection_passes_loudly(tmp_path):
    result = _make_pytest(tmp_path, 5, "PYTEST_ARGS=-q -k nothing_matches")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stand-in pytest -q -k nothing_matches" in result.stdout
    assert "NO TESTS RAN: PYTEST_ARGS='-q -k nothing_matches' selected none" in result.stdout


@pytest.mark.parametrize("status", [0, 1, 2])
def test_other_statuses_pass_through(tmp_path, status):
    assert (_make_pytest(tmp_path, status).returncode == 0) == (status == 0)
