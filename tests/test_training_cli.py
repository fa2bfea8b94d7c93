"""`recsys train` from the command line on a dataset in a real published file format (MovieLens 100k)."""

from __future__ import annotations

import json
import subprocess

from tests.helpers import BIN, ROOT, project_env, train


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


def test_bad_data_dir_is_one_clear_line_and_no_model(tmp_path):
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "u.data").write_text("1,2,5,881250949\n")
    env = project_env(tmp_path)
    result = train(env, "--dataset", "movielens-100k", "--data-dir", str(tmp_path / "ml"))
    assert result.returncode == 2
    assert "u.data" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bentoml" / "models").exists() or not any((tmp_path / "bentoml" / "models").iterdir())
