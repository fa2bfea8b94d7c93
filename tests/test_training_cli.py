"""`recsys train` from the command line on a dataset in a real published file format (MovieLens 100k)."""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.core.candidates import Mix
from recsys.data.movielens import load_movielens_100k
from tests.helpers import BIN, ROOT, load_pair, project_env, train
from tests.test_startup_faults import BAD_SETTINGS


def test_train_on_a_movielens_100k_folder(tmp_path):
    env = project_env(tmp_path, RECSYS_RANKER__ITERATIONS="100")
    export = subprocess.run([str(BIN / "recsys"), "data", "--size", "tiny", "--export", str(tmp_path / "ml"),
                             "--format", "movielens-100k"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert export.returncode == 0, export.stderr
    result = train(env, "--dataset", "movielens-100k", "--data-dir", str(tmp_path / "ml"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "var" / "reports" / "latest" / "report.json").read_text())
    assert report["dataset"] == "movielens-100k"
    assert report["split"]["strategy"] == "per_user"
    assert set(report["evaluation"]["metrics"]) == {"popular", "lightfm", "ease", "two_stage"}
    version = report["run_id"]
    for name in ("recsys_candidates", "recsys_ranker"):
        assert (tmp_path / "bentoml" / "models" / name / version / "model.yaml").exists()
    # the titles rated below 4 stars are seen: no user is ever proposed one of them
    dismissed = load_movielens_100k(tmp_path / "ml").dismissed
    candidates, _ = load_pair(tmp_path, version)
    assert len(dismissed) and len(candidates.dismissed_indptr)
    batch = candidates.generate(np.arange(len(candidates.user_ids)), candidates.served_mix(Mix(100, 30, 30)))
    proposed = pd.MultiIndex.from_arrays([candidates.user_ids[batch.owner], candidates.item_ids[batch.items]])
    assert not proposed.isin(pd.MultiIndex.from_frame(dismissed[["user_id", "item_id"]])).any()
    # but they still say what the user picks: EASE's score from them is a feature of the reranker served
    assert "ease_dismissed" in report["ranker_features"]
    assert batch.column("ease_dismissed").any()


def test_bad_data_dir_is_one_clear_line_and_no_model(tmp_path):
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "u.data").write_text("1,2,5,881250949\n")
    env = project_env(tmp_path)
    result = train(env, "--dataset", "movielens-100k", "--data-dir", str(tmp_path / "ml"))
    assert result.returncode == 2
    assert "u.data" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bentoml" / "models").exists() or not any((tmp_path / "bentoml" / "models").iterdir())


def _recsys(env: dict[str, str], *args: str, max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """`recsys ...`; with ``max_file_bytes``, any file it writes fails past that size as on a full disk (EFBIG
    from RLIMIT_FSIZE; Python ignores SIGXFSZ, so the write raises instead of killing the process)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([str(BIN / "recsys"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600, preexec_fn=limit if max_file_bytes else None)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(("assignment", "message"), BAD_SETTINGS.items(), ids=BAD_SETTINGS.keys())
def test_bad_setting_is_one_line_and_exit_2(tmp_path, assignment, message):
    name, value = assignment.split("=")
    result = _recsys(project_env(tmp_path, **{name: value}), "data", "--size", "tiny")
    line = _one_error_line(result)
    assert line.startswith("recsys: ") and message in line and line == result.stderr.strip(), result.stderr


def test_export_on_a_full_disk_leaves_the_previous_files(tmp_path):
    """Regression: a full disk left a truncated interactions.csv (and a traceback)."""
    env, out = project_env(tmp_path), tmp_path / "export"
    out.mkdir()
    (out / "interactions.csv").write_text("previous\n")
    line = _one_error_line(_recsys(env, "data", "--size", "tiny", "--export", str(out), max_file_bytes=100_000))
    assert line.endswith(f"ERROR file system error: {out}: File too large"), line
    assert sorted(p.name for p in out.iterdir()) == ["interactions.csv"]  # no temporary file left behind
    assert (out / "interactions.csv").read_text() == "previous\n"


def test_export_into_a_path_that_cannot_be_a_folder_is_one_line(tmp_path):
    """A folder under a regular file: ENOTDIR, as unwritable as a read-only folder (which root could still write)."""
    (tmp_path / "file").write_text("")
    target = Path(tmp_path / "file" / "export")
    line = _one_error_line(_recsys(project_env(tmp_path), "data", "--size", "tiny", "--export", str(target)))
    assert line.endswith(f"ERROR file system error: {target}: Not a directory"), line


@pytest.mark.parametrize("case", ["full-disk", "store-under-a-file"])
def test_train_that_cannot_write_is_one_line_and_no_model(tmp_path, case):
    (tmp_path / "file").write_text("")
    if case == "full-disk":
        result = _recsys(project_env(tmp_path), "train", "--size", "tiny", max_file_bytes=100_000)
        problem = "File too large"
    else:
        env = {**project_env(tmp_path), "BENTOML_HOME": str(tmp_path / "file" / "bentoml")}
        result, problem = _recsys(env, "train", "--size", "tiny"), f"{tmp_path / 'file' / 'bentoml'}: Not a directory"
    line = _one_error_line(result)
    assert "ERROR file system error: " in line and problem in line, line
    assert not any(tmp_path.rglob("model.yaml"))
