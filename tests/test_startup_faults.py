"""Start-up faults: the real `bentoml serve` on a damaged copy of the session's trained store refuses to start.

Each case copies the trained pair into its own temporary BENTOML_HOME, damages the copy and starts the server.
It must exit non-zero within seconds, printing one line that names the problem and the fix. It must never come
up half-started: before `bentoml serve` checked the files (`recsys.core.model_store.servable_version`, now run by
the service's deployment hook), a damaged ranker only failed in its own worker, which BentoML restarted every few
seconds, forever, while the entry service answered cold-start users.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.features.store import META_KEY
from tests.helpers import Server, project_env

STARTUP_SECONDS = 30  # a refusal takes about 1.5 s; a server that is still not ready after this is half-started


def _model_dir(models: Path, name: str) -> Path:
    return models / name / (models / name / "latest").read_text().strip()


def _candidates(models: Path) -> Path:
    return _model_dir(models, "recsys_candidates")


def _ranker(models: Path) -> Path:
    return _model_dir(models, "recsys_ranker")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _other_fingerprint(path: Path) -> None:
    """Rewrite a Parquet file as another build of the feature store would have written it."""
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, META_KEY: b"0123456789abcdef"}), path)


def _unpair(models: Path) -> None:
    """The ranker's metadata names another feature store than the candidates model's."""
    yaml_file = _ranker(models) / "model.yaml"
    text = yaml_file.read_text()
    assert "feature_store_version: " in text
    yaml_file.write_text(text.replace("feature_store_version: ", "feature_store_version: 0000", 1))


DAMAGE: dict[str, tuple[Callable[[Path], None] | None, str]] = {
    # case: (what is done to the copied store, what the one line must say)
    "empty-store": (None, "model recsys_ranker:latest is not in the BentoML model store; run `recsys train`"),
    "only-the-candidates-model": (lambda m: shutil.rmtree(m / "recsys_ranker"),
                                  "model recsys_ranker:latest is not in the BentoML model store; run `recsys train`"),
    "only-the-ranker-model": (lambda m: shutil.rmtree(m / "recsys_candidates"),
                              "is missing from the BentoML model store although recsys_ranker:"),
    "pair-fingerprints-differ": (_unpair, "do not belong together (feature_store_version: "),
    "parquet-of-another-build": (lambda m: _other_fingerprint(_ranker(m) / "features" / "users.parquet"),
                                 "users.parquet belongs to feature store version 0123456789abcdef"),
    "missing-parquet": (lambda m: (_ranker(m) / "features" / "items.parquet").unlink(), "is missing items.parquet"),
    "truncated-parquet": (lambda m: _truncate(_ranker(m) / "features" / "users.parquet"),
                          "users.parquet is not a readable Parquet file"),
    "truncated-cbm": (lambda m: _truncate(_ranker(m) / "ranker.cbm"), "is damaged: cannot read ranker.cbm"),
    "truncated-npy": (lambda m: _truncate(_candidates(m) / "candidates" / "seen_indices.npy"),
                      "is damaged: cannot read seen_indices.npy (mmap length is greater than file size)"),
    "truncated-feature-array": (lambda m: _truncate(_ranker(m) / "features" / "users.numeric.npy"),
                                "users.numeric.npy is missing or unreadable (mmap length is greater than file size)"),
    "feature-array-of-another-build": (lambda m: np.save(_ranker(m) / "features" / "users.ids.npy", np.arange(3)),
                                       "users.ids.npy has shape (3,), online.json says"),
}


def _start(home: Path, **env: str) -> str:
    """What `bentoml serve` on ``home`` reported: "server exited with ..." and its output, or "started"."""
    try:
        with Server(project_env(home, **env), ready_timeout=STARTUP_SECONDS):
            return "started"
    except RuntimeError as exc:
        return str(exc)


@pytest.fixture(scope="module")
def reports(trained_home, tmp_path_factory) -> dict[str, str]:
    """Every case's damaged store, and what `bentoml serve` reported on it. Two servers start at a time (one per
    core on CI): the cases then take about 10 s in all instead of 25 s one after the other."""
    homes = {}
    for case, (damage, _) in DAMAGE.items():
        homes[case] = tmp_path_factory.mktemp(case)
        if damage is not None:
            shutil.copytree(trained_home / "bentoml" / "models", homes[case] / "bentoml" / "models")
            damage(homes[case] / "bentoml" / "models")
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(homes, pool.map(_start, homes.values()), strict=True))


def _one_line(report: str) -> str:
    """The one line a refused start-up printed (it must exit 1, with no traceback)."""
    assert report.startswith("server exited with 1:"), report[-3000:]  # not "started", nor "not ready after"
    output = report.split("\n", 1)[1]
    assert "Traceback" not in output, output[-3000:]
    line = output.strip().splitlines()[-1]
    assert line.startswith("recsys: cannot serve: "), line
    return line


@pytest.mark.parametrize(("case", "message"), [(case, message) for case, (_, message) in DAMAGE.items()],
                         ids=DAMAGE.keys())
def test_damaged_store_refuses_to_start_with_one_clear_line(reports, case, message):
    line = _one_line(reports[case])
    assert message in line and "recsys train" in line, line


BAD_SETTINGS = {  # environment: what the one line must say
    "RECSYS_SERVING__TOPOLOGY=bogus": "invalid setting RECSYS_SERVING__TOPOLOGY='bogus': Input should be 'split', "
                                      "'fused' or 'remote'",
    "RECSYS_SERVING__TOPOLOGY=remote": "topology 'remote' needs the model services' addresses: set "
                                       "RECSYS_SERVING__CANDIDATES_URL and RECSYS_SERVING__RANKER_URL",
    "RECSYS_SERVING__WORKERS=0": "RECSYS_SERVING__WORKERS='0': Input should be greater than or equal to 1",
    "RECSYS_LOG_LEVEL=bogus": "RECSYS_LOG_LEVEL='BOGUS': Input should be 'DEBUG', 'INFO'",
    "RECSYS_SERVING__TOPOLGY=fused": "unknown setting RECSYS_SERVING__TOPOLGY; did you mean RECSYS_SERVING__TOPOLOGY?",
}


@pytest.mark.parametrize(("assignment", "message"), BAD_SETTINGS.items(), ids=BAD_SETTINGS.keys())
def test_bad_setting_refuses_to_start_with_one_clear_line(trained_home, assignment, message):
    """Regression: a bad value was a 16-69-line pydantic traceback, and a misspelt name was silently ignored."""
    name, value = assignment.split("=")
    assert message in _one_line(_start(trained_home, **{name: value}))
