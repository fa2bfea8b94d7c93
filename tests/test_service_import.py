"""The service module imports without a model pair: the pair is checked when `bentoml serve` starts, not at import.

(`bentoml serve` on the same empty store still refuses with its one line: tests/test_startup_faults.py, case
`empty-store`.)
"""

from __future__ import annotations

import subprocess

from tests.helpers import BIN, ROOT, project_env


def test_service_imports_with_an_empty_store(tmp_path):
    """Regression: `import service` exited ("recsys: cannot serve: ...") when the store held no pair, so nothing
    could import the module to test or document it."""
    code = "import service; print(service.Recommender.name, sorted(route for route in service.Recommender.apis))"
    result = subprocess.run([str(BIN / "python"), "-c", code], env=project_env(tmp_path), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.startswith("recommender ["), result.stdout
