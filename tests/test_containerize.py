"""scripts/containerize.sh's bookkeeping and exit paths, with stub docker/bentoml/recsys/smoke and no image built.

The script runs from a copy in a fake repo (it finds .venv/bin and scripts/container/ next to itself): the stubs log
every call and fail where STUB_FAIL says, and the test checks the exit status, the PASS/FAIL line naming the phase,
the timings table and the clean-up (container removed, host server killed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PHASES = ["preflight", "model pair (train if missing)", "bentoml build", "base image", "bentoml containerize",
          "image packages = requirements/serving.txt", "start container + host server", "container /readyz (waiting)",
          "host serve /readyz (waiting, started alongside)", "POST /recommend, compare", "image housekeeping"]

DOCKER = """#!/usr/bin/env bash
echo "docker $*" >>"$STUB_LOG"
case $1 in
    info | rm | rmi) ;;
    image) if [[ $* == *--format* ]]; then echo 1234000000; fi ;;
    run) [[ $STUB_FAIL == run ]] && { echo "run failed" >&2; exit 1; }; echo container-id ;;
    inspect) if [[ $STUB_FAIL == container-dies ]]; then echo false; else echo true; fi ;;
    logs) echo "last words of the container" ;;
    *) echo "stub docker: unexpected $*" >&2; exit 2 ;;
esac
exit 0
"""

BENTOML = """#!/usr/bin/env bash
echo "bentoml $*" >>"$STUB_LOG"
case $1 in
    models) if [[ $STUB_FAIL == empty-store ]]; then echo '[]'
            else echo '[{"tag": "recsys_candidates:v1"}, {"tag": "recsys_ranker:v1"}]'; fi ;;
    build) [[ $STUB_FAIL == build ]] && { echo "build failed" >&2; exit 1; }; echo "__tag__:recsys:stub1" ;;
    get) echo "$STUB_BENTO" ;;
    containerize) [[ $STUB_FAIL == containerize ]] && { echo "build step failed"; exit 1; }; pwd >"$STUB_DIR/containerize.cwd" ;;
    serve) echo $$ >"$STUB_DIR/host.pid"; exec sleep 120 ;;
    *) echo "stub bentoml: unexpected $*" >&2; exit 2 ;;
esac
exit 0
"""

RECSYS = """#!/usr/bin/env bash
echo "recsys $*" >>"$STUB_LOG"
echo "models: recsys_candidates:v1, recsys_ranker:v1"
"""

SMOKE = """import os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    print("smoke " + " ".join(sys.argv[1:]), file=log)
fail = os.environ.get("STUB_FAIL")
if sys.argv[1] == "user":
    print(7)
sys.exit(int((sys.argv[1], fail) in {("probe", "container-dies"), ("compare", "compare"), ("packages", "packages")}))
"""


def _write(path: Path, text: str, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if executable:
        path.chmod(0o755)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def fake_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the script in a repo whose .venv/bin, scripts/container/smoke.py and `docker` are stubs."""
    repo, stubs = tmp_path / "repo", tmp_path / "stubs"
    _write(repo / "scripts" / "containerize.sh", (ROOT / "scripts" / "containerize.sh").read_text())
    _write(repo / "scripts" / "container" / "smoke.py", SMOKE)
    _write(repo / ".venv" / "bin" / "bentoml", BENTOML, executable=True)
    _write(repo / ".venv" / "bin" / "recsys", RECSYS, executable=True)
    (repo / ".venv" / "bin" / "python").symlink_to(sys.executable)
    _write(stubs / "docker", DOCKER, executable=True)
    bento = tmp_path / "bento"
    _write(bento / "env" / "docker" / "Dockerfile", "FROM python:3.11-slim AS base-container\n")
    (tmp_path / "calls.log").touch()
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "CONTAINER_BACKEND": "docker",
           "CONTAINER_BENTOML_HOME": str(tmp_path / "store"), "CONTAINER_READY_TIMEOUT": "10",
           "STUB_LOG": str(tmp_path / "calls.log"), "STUB_DIR": str(tmp_path), "STUB_BENTO": str(bento)}
    return repo, env


def run_script(tmp_path: Path, fail: str = "", **env: str) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    repo, base_env = fake_repo(tmp_path)
    result = subprocess.run(["bash", str(repo / "scripts" / "containerize.sh")], capture_output=True, text=True,
                            timeout=60, env={**base_env, "STUB_FAIL": fail, **env})
    return result, (tmp_path / "calls.log").read_text().splitlines(), tmp_path


def _timings(stdout: str) -> list[str]:
    table = stdout.split("[containerize] timings:\n", 1)[1].split("\n\n", 1)[0]
    return [line.rsplit(None, 2)[0].strip() for line in table.splitlines()]


def _cleaned_up(calls: list[str], tmp_path: Path) -> None:
    assert any(c.startswith("docker rm -f recsys-container-") for c in calls), calls
    assert not _alive(int((tmp_path / "host.pid").read_text())), "the host bentoml serve was left running"


def test_all_phases_pass_exit_0_with_timings_and_cleanup(tmp_path):
    state = tmp_path / "repo" / "var" / "container"
    _write(state / "images", "recsys:passed0\nrecsys:failed0\n")  # images of two earlier runs
    result, calls, tmp = run_script(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("PASS: recsys:stub1 containerized with docker"), last
    assert _timings(result.stdout) == [*PHASES, "cleanup (container, host server)", "total"]
    _cleaned_up(calls, tmp)
    assert not any(c.startswith("recsys train") for c in calls), "trained although the store has a pair"
    assert [c for c in calls if c.startswith("docker rmi")] == ["docker rmi recsys:passed0", "docker rmi recsys:failed0"]
    assert (state / "images").read_text() == "recsys:stub1\n"
    # containerize runs where its temporary copy of the Bento is under the working directory (bentoml#5566)
    assert (tmp / "containerize.cwd").read_text().strip() == str(tmp / "repo" / "var" / "container")


def test_empty_store_trains_a_stand_in_loudly_and_image_removal(tmp_path):
    result, calls, tmp = run_script(tmp_path, fail="empty-store", CONTAINER_RM_IMAGE="1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "recsys train --size tiny" in calls
    assert "STAND-IN" in result.stderr and "CONTAINER_BENTOML_HOME=" in result.stderr
    assert "docker rmi recsys:stub1" in calls
    assert (tmp / "repo" / "var" / "container" / "images").read_text() == ""
    assert "cleanup (container, host server, image)" in _timings(result.stdout)


@pytest.mark.parametrize("fail, phase, started", [
    ("build", "bentoml build", False),
    ("containerize", "bentoml containerize", False),
    ("packages", "image packages = requirements/serving.txt", False),
    ("container-dies", "container /readyz (waiting)", True),
    ("compare", "POST /recommend, compare", True),
])
def test_a_failing_phase_exits_nonzero_naming_it(tmp_path, fail, phase, started):
    result, calls, tmp = run_script(tmp_path, fail=fail)
    assert result.returncode != 0
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"FAIL: in phase '{phase}' (exit {result.returncode})"), last
    assert "PASS" not in result.stdout
    timings = _timings(result.stdout)
    assert timings[-2:] == ["cleanup (container, host server)", "total"]
    assert phase not in timings, "a failed phase is not timed as if it had finished"
    if started:
        _cleaned_up(calls, tmp)
        assert "last words of the container" in result.stdout
        # kept for inspection, listed so that the next passing run removes it
        assert (tmp / "repo" / "var" / "container" / "images").read_text() == "recsys:stub1\n"
    else:
        assert not any(c.startswith(("docker run -d", "bentoml serve")) for c in calls)


def test_without_the_project_virtualenv_it_stops_in_preflight_saying_what_to_run(tmp_path):
    repo, env = fake_repo(tmp_path)
    shutil.rmtree(repo / ".venv")
    result = subprocess.run(["bash", str(repo / "scripts" / "containerize.sh")], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1].startswith("FAIL: in phase 'preflight' (exit 1): no project virtualenv")
    assert "make setup" in result.stderr


def test_the_image_package_check_compares_pip_freeze_with_the_serving_lock(tmp_path):
    """The real smoke.py: the image passes only with exactly the lock's versions (pip freeze spells names freely)."""
    lock = ROOT / "requirements" / "serving.txt"
    pinned = [line.split(" ")[0] for line in lock.read_text().splitlines() if "==" in line and line[0].isalnum()]
    freeze = tmp_path / "freeze.txt"

    def check(lines: list[str]) -> subprocess.CompletedProcess:
        freeze.write_text("\n".join(lines) + "\n")
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "container" / "smoke.py"), "packages", str(lock),
                               str(freeze)], capture_output=True, text=True, timeout=60)

    respelled = [name.replace("-", "_").upper() + "==" + version for name, version in (p.split("==") for p in pinned)]
    assert len(pinned) > 50 and check(respelled).returncode == 0
    name, version = pinned[0].split("==")
    older = check([f"{name}==0.0.1", *pinned[1:]])
    assert older.returncode == 1 and f"{name}: image 0.0.1, lock {version}" in older.stderr
    assert check([*pinned[1:], "extra-package==1.0"]).returncode == 1
