"""The lock is what gets installed: the venv, the Bento and the image all carry requirements/lock.txt's versions.

`make setup` installs requirements/lock.txt with hashes; `bentoml build` packs requirements/serving.txt, a subset
compiled against the same lock (`make lock` writes both). These checks fail when one of them drifts: a lock
edited by hand, a serving lock not regenerated after an upgrade, a venv built some other way, or a pyproject
range that no longer admits the locked version.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

LOCK = ROOT / "requirements" / "lock.txt"
SERVING_LOCK = ROOT / "requirements" / "serving.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a pip requirements file (continuations skipped)."""
    found = {}
    for line in path.read_text().splitlines():
        if match := PIN.match(line):
            found[canonicalize_name(match[1])] = match[2]
    return found


def requirements(path: Path) -> list[str]:
    """Names of the requirements in a `.in` file (comments and blank lines skipped)."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [canonicalize_name(Requirement(line).name) for line in lines if line]


def hashed(path: Path) -> bool:
    """Every pinned requirement is followed by at least one --hash (pip's hash-checking mode needs all of them)."""
    blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
    return all("--hash=sha256:" in block for block in blocks if PIN.match(block))


def test_both_locks_pin_every_package_with_hashes():
    lock, serving = pins(LOCK), pins(SERVING_LOCK)
    assert len(lock) > 100 and {"bentoml", "catboost", "rectools-lightfm", "pandas", "pytest", "pip"} <= set(lock)
    assert hashed(LOCK) and hashed(SERVING_LOCK)
    # the Bento installs a subset of the tested environment, at the same versions, and no LightFM
    assert {"bentoml", "catboost", "numpy", "pyarrow", "pydantic"} <= set(serving)
    assert {name: version for name, version in serving.items() if lock.get(name) != version} == {}
    assert "rectools-lightfm" not in serving and "pytest" not in serving
    assert set(requirements(ROOT / "requirements" / "serving.in")) <= set(serving)


def test_the_venv_is_exactly_the_lock():
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("recsys-bento")  # the project itself, installed editable on top of the lock
    lock = pins(LOCK)
    assert {n: (v, lock.get(n)) for n, v in installed.items() if lock.get(n) != v} == {}
    assert sorted(set(lock) - set(installed)) == []


def test_pyproject_ranges_admit_the_locked_versions():
    """The ranges stay for people installing the package into their own environment; the lock must satisfy them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    lock = pins(LOCK)
    wanted += requirements(ROOT / "requirements" / "tools.in")
    outside = [str(r) for r in map(Requirement, wanted)
               if not r.specifier.contains(lock[canonicalize_name(r.name)], prereleases=True)]
    assert outside == []


def test_the_bento_installs_the_serving_lock():
    config = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert config["python"] == {"requirements_txt": "requirements/serving.txt", "lock_packages": False}
