"""Training faults: bad data stops `recsys train` with one clear line before any model is written; harmless
quirks (rows repeated verbatim, a log not sorted by time) are absorbed; a training killed with SIGTERM, at any
point, leaves `latest` on a complete pair and no half of its own run in the store.

The bad-data cases run the real console script on a Kion-format export of the tiny synthetic dataset, two at a
time (the CI machine has two cores).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from recsys import stopping
from recsys.data.export import write_kion
from recsys.data.kion import load_kion
from recsys.data.schema import DataError
from recsys.progress import Timings
from tests.helpers import BIN, ROOT, load_pair, project_env, train

STEP_TIMEOUT = 120  # seconds for a tiny training run to reach a step or to exit after SIGTERM


@pytest.fixture(scope="module")
def kion_dir(tiny, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("kion")
    write_kion(tiny, directory)
    return directory


def _edit_interactions(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / "interactions.csv"
        edit(pd.read_csv(path, dtype=str)).to_csv(path, index=False)
    return apply


def _keep_dates(keep: Callable[[pd.Series], pd.Series]) -> Callable[[Path], None]:
    """Keep only the interactions whose date (days before the log's last one) passes ``keep``."""
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        dates = pd.to_datetime(frame["last_watch_dt"])
        return frame[keep((dates.max() - dates).dt.days)]
    return _edit_interactions(edit)


def _one_late_event(frame: pd.DataFrame) -> pd.DataFrame:
    """One event dated 30 days after the rest of the log (a skewed clock): the last week holds one user."""
    late = frame.iloc[[0]].assign(user_id="999999", last_watch_dt=str(pd.to_datetime(frame["last_watch_dt"]).max()
                                                                      + pd.Timedelta(days=30)))
    return pd.concat([frame, late])


BAD_DATA: dict[str, tuple[Callable[[Path], None], tuple[str, ...], str]] = {
    # case: (what is done to the Kion files, extra `recsys train` flags, what the one error line must say)
    "missing-column": (_edit_interactions(lambda f: f.drop(columns="watched_pct")), (),
                       "interactions.csv: missing column(s) ['watched_pct']"),
    "ids-as-text": (_edit_interactions(lambda f: f.assign(user_id=f["user_id"].where(f.index != 5, "user_42"))), (),
                    "interactions.csv: column 'user_id' must hold integer ids; found ['user_42']"),
    "empty-train-window": (lambda d: None, ("--label-days", "200"), "the history window holds 0 interactions"),
    "empty-label-window": (_keep_dates(lambda days: (days < 7) | (days >= 21)), (),
                           "the labels window holds 0 interactions of 0 users"),
    "empty-holdout-window": (_edit_interactions(_one_late_event), ("--label-days", "40"),
                             "the holdout window holds 1 interactions of 1 users"),
}


def _train_on(directory: Path, flags: tuple[str, ...]) -> subprocess.CompletedProcess:
    return train(project_env(directory), "--dataset", "kion", "--data-dir", str(directory / "kion"), *flags)


@pytest.fixture(scope="module")
def bad_runs(kion_dir, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Every case's damaged copy of the files, and what `recsys train` on it did."""
    homes = {}
    for case, (damage, _, _) in BAD_DATA.items():
        homes[case] = tmp_path_factory.mktemp(case)
        shutil.copytree(kion_dir, homes[case] / "kion")
        damage(homes[case] / "kion")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = pool.map(_train_on, homes.values(), [flags for _, flags, _ in BAD_DATA.values()])
        return {case: (home, run) for (case, home), run in zip(homes.items(), runs, strict=True)}


@pytest.mark.parametrize(("case", "message"), [(case, message) for case, (_, _, message) in BAD_DATA.items()],
                         ids=BAD_DATA.keys())
def test_bad_data_is_one_clear_line_and_no_model(bad_runs, case, message):
    home, run = bad_runs[case]
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and message in errors[0], run.stderr[-3000:]
    models = home / "bentoml" / "models"
    assert not models.exists() or not any(models.iterdir())


@pytest.mark.parametrize(("file", "conflicting", "message"), [
    ("interactions.csv", lambda row: row.rsplit(",", 1)[0] + ",1.0", "1 duplicated (user_id, item_id) pair(s)"),
    ("users.csv", lambda row: row.split(",")[0] + ",age_18_24,,M,0", "repeats with different values; keep one row per user"),
], ids=["same-pair-other-watched-pct", "same-user-other-profile"])
def test_rows_that_repeat_an_id_with_other_values_are_an_error(kion_dir, tmp_path, file, conflicting, message):
    """Unlike a verbatim repeat, two different rows for one id cannot both be right: the loader names the id."""
    shutil.copytree(kion_dir, tmp_path / "kion")
    lines = (kion_dir / file).read_text().splitlines()
    (tmp_path / "kion" / file).write_text("\n".join([*lines, conflicting(lines[1])]) + "\n")
    with pytest.raises(DataError, match=re.escape(message)):
        load_kion(tmp_path / "kion")


def test_rows_repeated_verbatim_are_dropped_and_counted(kion_dir, tmp_path, caplog):
    """A file appended to itself, in part, loads as the original (same tables, same fingerprint, so same models);
    a warning says how many rows were dropped. A repeated user or item row is dropped the same way."""
    shutil.copytree(kion_dir, tmp_path / "kion")
    lines = (kion_dir / "interactions.csv").read_text().splitlines(keepends=True)
    (tmp_path / "kion" / "interactions.csv").write_text("".join(lines + lines[1:6] + lines[100:103]))
    users = (kion_dir / "users.csv").read_text().splitlines(keepends=True)
    (tmp_path / "kion" / "users.csv").write_text("".join(users + users[1:3]))
    with caplog.at_level(logging.WARNING, logger="recsys.data.schema"):
        doubled = load_kion(tmp_path / "kion")
    original = load_kion(kion_dir)
    pd.testing.assert_frame_equal(doubled.interactions, original.interactions)
    pd.testing.assert_frame_equal(doubled.users, original.users)
    assert doubled.fingerprint() == original.fingerprint()
    warnings = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("interactions.csv: dropped 8 exact duplicate row(s)") for m in warnings), warnings
    assert any(m.endswith("users.csv: dropped 2 exact duplicate row(s)") for m in warnings), warnings


def test_timestamps_out_of_order_load_as_the_sorted_log(kion_dir, tmp_path):
    """Logs are often concatenated or exported per user: the loader sorts, so the row order cannot change
    anything downstream (same tables, same fingerprint, same run id suffix)."""
    shutil.copytree(kion_dir, tmp_path / "kion")
    frame = pd.read_csv(kion_dir / "interactions.csv")
    frame.sample(frac=1.0, random_state=3).to_csv(tmp_path / "kion" / "interactions.csv", index=False)
    shuffled, original = load_kion(tmp_path / "kion"), load_kion(kion_dir)
    assert not pd.read_csv(tmp_path / "kion" / "interactions.csv")["last_watch_dt"].is_monotonic_increasing
    pd.testing.assert_frame_equal(shuffled.interactions, original.interactions)
    assert shuffled.fingerprint() == original.fingerprint()


def test_dates_with_and_without_a_time_are_all_dates(kion_dir, tmp_path):
    """Regression: pandas infers one date format from the first value, so a log that also has a few
    '2021-08-09 13:20:00' among its '2021-05-11' failed with "must hold dates; found ['2021-08-09 13:20:00']"."""
    shutil.copytree(kion_dir, tmp_path / "kion")
    frame = pd.read_csv(kion_dir / "interactions.csv", dtype=str)
    frame.loc[[10, 20], "last_watch_dt"] = frame.loc[[10, 20], "last_watch_dt"] + " 13:20:00"
    frame.to_csv(tmp_path / "kion" / "interactions.csv", index=False)
    times = load_kion(tmp_path / "kion").interactions.set_index(["user_id", "item_id"])["last_watch_dt"]
    for _, row in frame.loc[[10, 20]].iterrows():
        assert times[int(row["user_id"]), int(row["item_id"])] == pd.Timestamp(row["last_watch_dt"])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed SystemExit
def test_a_stop_swallowed_by_a_finalizer_is_raised_at_the_next_step(monkeypatch):
    """Regression: SIGTERM that arrived while BentoML's weakref finalizer removed a temporary folder raised its
    SystemExit inside the finalizer, where Python prints and drops it; the training went on and exited 0."""
    monkeypatch.setattr(stopping, "_stopped_by", None)
    owner = type("Owner", (), {})()
    weakref.finalize(owner, stopping._stop, signal.SIGTERM, None)
    del owner  # the finalizer runs now; the SystemExit it raises goes nowhere
    with pytest.raises(SystemExit) as stop:
        with Timings().step("the next step"):
            pass
    assert stop.value.code == 128 + signal.SIGTERM


def _versions(models: Path, name: str) -> set[str]:
    folder = models / name
    return {p.name for p in folder.iterdir() if p.is_dir()} if folder.exists() else set()


@pytest.mark.parametrize("step", ["▶ A. CatBoost reranker", "saved recsys_candidates:"],
                         ids=["while-training", "between-the-two-saves"])
def test_sigterm_leaves_latest_on_a_complete_pair(trained_home, tmp_path, step):
    """A real `recsys train` gets SIGTERM as soon as it logs ``step``. It stops with 143, leaves nothing of its run
    in the store (SIGTERM unwinds like Ctrl-C, and the save discards its run on any interruption), and `latest`
    names the previous pair, complete. Between the two saves the candidates model of the run is already
    committed; if the signal is late and the ranker is committed too, the new pair is complete and `latest`."""
    shutil.copytree(trained_home / "bentoml", tmp_path / "bentoml")
    models = tmp_path / "bentoml" / "models"
    previous = (models / "recsys_ranker" / "latest").read_text().strip()
    env = project_env(tmp_path, RECSYS_RANKER__ITERATIONS="20", RECSYS_LIGHTFM__EPOCHS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([str(BIN / "recsys"), "train", "--size", "tiny"], env=env, cwd=ROOT, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    log = []
    try:
        for line in process.stderr:
            log.append(line)
            if step in line:
                os.kill(process.pid, signal.SIGTERM)
                break
        log.extend(process.stderr)
        process.wait(timeout=STEP_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = "".join(log)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "stopped by SIGTERM" in output, output[-3000:]

    latest = (models / "recsys_ranker" / "latest").read_text().strip()
    assert _versions(models, "recsys_candidates") == _versions(models, "recsys_ranker")  # no half pair
    assert (models / "recsys_candidates" / "latest").read_text().strip() == latest
    assert _versions(models, "recsys_ranker") - {previous} <= {latest}
    if "A." in step:
        assert latest == previous
    load_pair(tmp_path, latest)  # every file of the pair `latest` names is there and loads


CHECK_PAIRS = """
import sys
from recsys.core import model_store
for version in sys.argv[1:]:
    model_store.servable_version(version)
print(model_store.resolve_version())
"""


def test_concurrent_trainings_each_save_a_servable_pair(tmp_path):
    """Regression (issue 12, item 4): runs on one store shared `var/features/<dataset>`, so one run's ranker
    carried another run's feature store and could not be served. Three real runs at once, two of them on the same
    seed (same data, same run id prefix), then the checks `bentoml serve` runs at start-up on every run that
    exited 0, and the ranker's `latest` must name one of them."""
    env = project_env(tmp_path, RECSYS_RANKER__ITERATIONS="20", RECSYS_LIGHTFM__EPOCHS="1",
                      RECSYS_RANKER__THREADS="1", RECSYS_LIGHTFM__THREADS="1")
    processes = [subprocess.Popen([str(BIN / "recsys"), "train", "--size", "tiny", "--seed", str(seed)], env=env,
                                  cwd=ROOT, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for seed in (1, 2, 2)]
    logs = [process.communicate(timeout=STEP_TIMEOUT)[1] for process in processes]
    versions = [re.search(r" run (\S+) on ", log).group(1) for log in logs]
    succeeded = [version for process, version in zip(processes, versions, strict=True) if process.returncode == 0]
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode in (0, 2), log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    assert len(succeeded) == len(processes), [line for log in logs for line in log.splitlines() if " ERROR " in line]
    check = subprocess.run([str(BIN / "python"), "-c", CHECK_PAIRS, *succeeded], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=STEP_TIMEOUT)
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.strip() in succeeded
    models = tmp_path / "bentoml" / "models"
    assert (models / "recsys_candidates" / "latest").read_text().strip() == check.stdout.strip()
    reports = tmp_path / "var" / "reports"
    for version in succeeded:
        assert json.loads((reports / version / "report.json").read_text())["run_id"] == version
    assert json.loads((reports / "latest" / "report.json").read_text())["run_id"] in succeeded
