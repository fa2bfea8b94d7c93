"""The package's layers only point down, its modules import each other in no cycle, and it installs as one name.

Layers, lowest first: the base modules (settings, progress, stopping) -> data -> features -> core -> training and
serving (independent of each other) -> tools. service.py is the serving entry and locustfile.py a tool. The
imports are read from the source with ast, function-level ones included, so a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = "recsys"
LAYERS: tuple[frozenset[str], ...] = tuple(map(frozenset, (
    {"settings", "progress", "stopping", ""}, {"data"}, {"features"}, {"core"}, {"training", "serving"}, {"tools"},
)))
INDEPENDENT = {frozenset({"training", "serving"})}  # same layer, and neither may import the other
# folders of the repository that are subpackages of recsys (see recsys/__init__.py), and entry files outside it
MAPPED = {"features": "recsys.features", "training": "recsys.training"}
ENTRIES = {"service.py": "recsys.serving.<service>", "locustfile.py": "recsys.tools.<locustfile>"}
# old top-level names: importing them would load a second copy of a module under another name
RETIRED = {"data", "serving", "features", "training"}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of the package, the mapped folders and the entry files included."""
    modules = {}
    for folder, dotted in ((root / PACKAGE, PACKAGE), *((root / f, d) for f, d in MAPPED.items())):
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            modules[".".join((dotted, *parts[:-1]) if parts[-1] == "__init__" else (dotted, *parts))] = path
    modules.update({name: root / file for file, name in ENTRIES.items()})
    return modules


def imported_names(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every dotted name the source imports (``from a import b`` yields ``a.b``), relative imports resolved."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the project modules it imports; names outside the project are dropped, and ``a.b`` that is not a
    module of its own (a class, a function) stands for module ``a``."""
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        targets = set()
        for name in imported_names(source, module, is_package):
            while name and name not in sources:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def layer_of(module: str) -> tuple[int, str]:
    part = module.split(".")[1] if "." in module else ""
    part = "" if part not in {p for layer in LAYERS for p in layer} else part
    return next(i for i, layer in enumerate(LAYERS) if part in layer), part


def wrong_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up a layer, or across two independent packages of one layer."""
    found = []
    for module, targets in graph.items():
        (level, part) = layer_of(module)
        for target in targets:
            target_level, target_part = layer_of(target)
            if target_level > level or (part != target_part and frozenset({part, target_part}) in INDEPENDENT):
                found.append(f"{module} -> {target}")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan's strongly connected
    components of more than one module, or a module that imports itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1 or node in graph.get(node, ()):
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def project_graph() -> dict[str, set[str]]:
    return import_graph({name: (path.read_text(), path.name == "__init__.py")
                         for name, path in project_modules().items()})


def test_layers_only_point_down():
    assert wrong_arrows(project_graph()) == []


def test_no_module_cycle():
    assert cycles(project_graph()) == []


def test_checks_see_an_upward_import_a_sideways_one_and_a_cycle():
    """The checks above are only worth their silence if they report a wrong arrow when there is one."""
    graph = import_graph({
        "recsys.settings": ("", False),
        "recsys.data.schema": ("from recsys.tools import cli\nfrom recsys import settings", False),
        "recsys.tools.cli": ("def main():\n    from ..data.schema import Dataset", False),
        "recsys.training.pipeline": ("import recsys.serving.handlers", False),
        "recsys.serving.handlers": ("", False),
    })
    assert wrong_arrows(graph) == ["recsys.data.schema -> recsys.tools.cli",
                                   "recsys.training.pipeline -> recsys.serving.handlers"]
    assert cycles(graph) == [["recsys.data.schema", "recsys.tools.cli"]]


@pytest.mark.parametrize("folder", ["recsys", "features", "training", "tests", "scripts"])
def test_no_import_of_a_retired_top_level_name(folder):
    """`data`, `serving`, `features` and `training` are not top-level modules: `import features.store` from the
    repository would load a second copy of recsys.features.store."""
    stray = [f"{path.relative_to(ROOT)}: {name}" for path in sorted((ROOT / folder).rglob("*.py"))
             for name in imported_names(path.read_text(), "", False) if name.split(".")[0] in RETIRED]
    assert stray == []


def test_an_install_registers_one_package(tmp_path):
    """The wheel holds one top-level package, recsys, with training/ and features/ mapped into it and the web
    page's files beside its code; no `data` or `serving` module."""
    source = tmp_path / "source"  # setuptools builds in the source folder: a copy keeps build/ out of the tree
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "var", "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {PACKAGE}
    for module in ("recsys/features/store.py", "recsys/training/pipeline.py", "recsys/data/schema.py",
                   "recsys/serving/web/static/app.js", "recsys/tools/cli.py"):
        assert module in names
    assert "recsys/__init__.py" in names and not any(n.startswith(("data/", "serving/")) for n in names)
