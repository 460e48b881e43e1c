"""The registries find their entries by themselves: every module of the method packages is
imported on first lookup, so a new method is its module and its recipe, nothing else."""

from __future__ import annotations

import pkgutil
import sys

import pytest

import baselines
import bccl
from benchmarks import LTBenchError
from benchmarks.train.methods import METHODS
from benchmarks.registry import Registry


def test_every_module_of_a_package_is_imported_on_first_lookup(tmp_path, monkeypatch):
    package = tmp_path / "somemethods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "alpha.py").write_text("from registry_under_test import REG\n@REG.register('alpha')\nclass A: pass\n")
    (package / "beta.py").write_text("from registry_under_test import REG\n@REG.register('beta')\nclass B: pass\n")
    (package / "helpers.py").write_text("VALUE = 1\n")  # registers nothing: imported all the same
    registry = Registry("thing", packages=("somemethods",))
    holder = type(sys)("registry_under_test")
    holder.REG = registry
    monkeypatch.setitem(sys.modules, "registry_under_test", holder)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.names() == ["alpha", "beta"]
    assert "somemethods.helpers" in sys.modules
    with pytest.raises(LTBenchError, match="unknown thing 'gamma'; known: alpha, beta"):
        registry.get("gamma")
    for name in ("somemethods", "somemethods.alpha", "somemethods.beta", "somemethods.helpers"):
        sys.modules.pop(name, None)


def test_the_method_registry_imports_every_module_of_bccl_and_baselines():
    METHODS.names()
    for package in (bccl, baselines):
        for info in pkgutil.iter_modules(package.__path__):
            assert f"{package.__name__}.{info.name}" in sys.modules
    assert {"bccl", "ce", "bcl", "paco"} <= set(METHODS.names())
