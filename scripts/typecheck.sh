#!/usr/bin/env bash
# mypy on the package as it imports: recsys/ with features/ and training/ inside it (recsys.features,
# recsys.training), plus the entry files. mypy cannot follow recsys/__init__.py's search of the parent folder nor
# setuptools' editable finder, so it reads a view of symlinks laid out like the wheel. Settings: pyproject.toml.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
view="$(mktemp -d)"
trap 'rm -rf "$view"' EXIT
mkdir "$view/recsys"
for entry in "$root"/recsys/*; do ln -s "$entry" "$view/recsys/"; done
ln -s "$root/features" "$view/recsys/features"
ln -s "$root/training" "$view/recsys/training"
ln -s "$root/service.py" "$root/locustfile.py" "$view/"
cd "$view"
exec "$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" "$@" recsys service.py locustfile.py
