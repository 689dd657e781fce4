"""One registry of errors with exit codes (core/errors.py), matching the README's table."""

from __future__ import annotations

import importlib
import pkgutil
import re

import mlbatch
from mlbatch.core.errors import ExitCode, MlbatchError
from tests.conftest import ROOT


def _subclasses(cls: type) -> set[type]:
    direct = set(cls.__subclasses__())
    return direct.union(*(_subclasses(c) for c in direct))


def test_every_error_with_an_exit_code_is_defined_in_core_errors():
    for module in pkgutil.walk_packages(mlbatch.__path__, "mlbatch."):
        importlib.import_module(module.name)
    elsewhere = {f"{c.__module__}.{c.__name__}" for c in _subclasses(MlbatchError) if c.__module__ != "mlbatch.core.errors"}
    assert elsewhere == set()


def test_the_readme_table_lists_every_reserved_code():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Exit codes") :]
    listed = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert listed == {int(code) for code in ExitCode}
