"""ltbench: a reproducibility benchmark suite for long-tailed image recognition.

The package holds the harness (datasets, views, models, the epoch loop, evaluation, the results
store, grids and the report); the methods live in `bccl/` and `baselines/` and register themselves
in `benchmarks.train.methods.METHODS`.

Where the YAML configs come from (`CONFIG_DIR`). In a checkout they live in the top-level
`configs/` folder, which is where every command, grid path and doc tells users to look, so it
stays there. A wheel or a plain `pip install .` has no checkout around it, so the build maps that
same folder into the package as `benchmarks/configs/` (pyproject.toml: `package-dir` and
`package-data`; no copy is kept in the source tree). At run time `importlib.resources` finds the
packaged folder of an installed copy; when there is none (a checkout, or an editable install,
whose package *is* the source tree) the checkout's `configs/` is the one. Moving the folder under
`benchmarks/` would break the paths users know; a symlink would not survive Windows or an sdist.
The package must be installed unpacked (pip always does): the configs are read as files.
"""

from importlib import resources
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout (or site-packages when installed)


def _config_dir() -> Path:
    packaged = resources.files(__name__) / "configs"
    if packaged.is_dir():  # an installed wheel: configs/ was mapped into the package by the build
        return Path(str(packaged))
    return PROJECT_ROOT / "configs"


CONFIG_DIR = _config_dir()


class LTBenchError(Exception):
    """A user-facing error: bad input, missing data, unwritable folders.

    The command lines print its message on one line and exit with status 2, having written nothing.
    """


# Module paths before the stage folders (issue 23), kept as aliases for one release (0.1 -> 0.2):
# `import benchmarks.training` gives the very module `benchmarks.train.training` (same object, so
# monkeypatching either name patches both, and pickles naming an old path still load). No file is
# left at the old paths; the finder below maps them. Documented in docs/api.md.
MOVED_MODULES = {
    "benchmarks.datasets": "benchmarks.data.datasets",
    "benchmarks.evaluation": "benchmarks.train.evaluation",
    "benchmarks.grid": "benchmarks.run.grid",
    "benchmarks.logs": "benchmarks.store.logs",
    "benchmarks.losses": "benchmarks.train.losses",
    "benchmarks.predictions": "benchmarks.store.predictions",
    "benchmarks.results": "benchmarks.store.results",
    "benchmarks.training": "benchmarks.train.training",
}


def _install_aliases() -> None:
    import importlib
    import importlib.abc
    import importlib.util
    import sys

    class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

        def create_module(self, spec):
            module = importlib.import_module(MOVED_MODULES[spec.name])
            self.real_spec = module.__spec__  # importlib overwrites it with the alias's spec
            return module

        def exec_module(self, module):  # the real module is already executed: restore its spec
            module.__spec__ = self.real_spec

    if not any(type(f).__name__ == "_MovedModuleFinder" for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())


_install_aliases()
