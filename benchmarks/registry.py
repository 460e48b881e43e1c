"""A name -> object registry whose lookup error lists the names it knows.

There is one instance for methods (`benchmarks.train.methods.METHODS`) and one for datasets
(`benchmarks.data.datasets.DATASETS`). Entries register themselves with the `register` decorator.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterable, TypeVar

from benchmarks import LTBenchError

T = TypeVar("T")


def package_modules(package: str) -> list[str]:
    """The dotted names of every module directly in `package` (sorted, so the order of
    registration, and hence of `names()`, does not depend on the file system)."""
    root = importlib.import_module(package)
    return sorted(f"{package}.{info.name}" for info in pkgutil.iter_modules(root.__path__))


class Registry(Generic[T]):
    """Maps names to objects.

    `modules` are imported on first use, and so is every module of each of `packages`, so that
    entries defined in other packages (the methods in `bccl/` and `baselines/`) are registered
    before anything is looked up, without import cycles and without a hand-kept list: a new method
    is its module and its recipe, nothing else.
    """

    def __init__(self, kind: str, modules: Iterable[str] = (), packages: Iterable[str] = ()):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._modules = tuple(modules)
        self._packages = tuple(packages)
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules + tuple(m for p in self._packages for m in package_modules(p)):
                importlib.import_module(module)

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise LTBenchError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries
