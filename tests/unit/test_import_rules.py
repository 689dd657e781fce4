"""The import rules of docs/architecture.md ("Packages"), read from every module's source with
ast: function-level (lazy) imports count too. tests/unit/test_imports.py checks what a fresh
interpreter actually loads on the paths that matter."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "mlbatch"
# package (or top-level module) -> the mlbatch packages it may import
ALLOWED = {
    "core": set(),
    "gcp": {"core"},
    "ui": set(),
    "local": {"core", "ui"},
    "release": {"core", "gcp", "iam", "local", "ui"},
    "run": {"core", "providers", "ui"},
    "agent": {"core"},
    "providers": {"core", "gcp", "local"},
    "triggers": {"core", "providers", "run", "ui"},
    "bench": {"core", "local", "providers", "run", "ui"},
    "bench_logs": {"agent", "core"},
    "bench_launch": {"core", "local", "ui"},
    "dashboard": {"core", "run", "ui"},
    "cli": {"core"},
    "doctor": {"core", "gcp", "local", "providers", "release", "ui"},
    "iam": {"core"},
}
# One module may go further, for the reason the architecture's table gives.
EXCEPTIONS = {"mlbatch/release/vmtest.py": {"providers"}}


def owner(path: Path) -> str:
    """The package a module belongs to: mlbatch/run/sweep.py -> run, mlbatch/ui.py -> ui."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names if node.module == "mlbatch"]
        else:
            continue
        found |= {name.split(".")[1] for name in names if name.startswith("mlbatch.")}
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_module_imports_only_what_its_package_may(path):
    package = owner(path)
    assert package in ALLOWED, f"{package}: a package with no rule: add a row to docs/architecture.md's Packages table"
    allowed = ALLOWED[package] | EXCEPTIONS.get(path.relative_to(ROOT).as_posix(), set()) | {package, "__version__"}
    assert imported_packages(path) <= allowed, f"{path.relative_to(ROOT)} breaks the rule of mlbatch.{package}"


def test_the_rules_here_are_the_architectures_table():
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and (name := re.fullmatch(r"`mlbatch\.(\w+)`", cells[0])):
            rows[name[1]] = {w for w in re.findall(r"`([\w.]+)`", cells[2]) if "." not in w and "/" not in w}
    exceptions = {p.split("/")[1]: extra for p, extra in EXCEPTIONS.items()}
    assert rows == {package: allowed | exceptions.get(package, set()) for package, allowed in ALLOWED.items()}


def test_the_check_sees_a_lazy_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mlbatch.providers.gce import GceProvider\n    import mlbatch.run.controller\n")
    assert imported_packages(module) == {"providers", "run"}
