"""The import picture stays clean (issue 23): no import cycle among the project's modules, the
stages import one way (commands -> run -> train -> data, the store beneath them all), and the
report reads the store without torch.

The graph is read with the stdlib `ast` from the source, counting every import statement, those
inside functions included (a lazy import is still an arrow). Importing a submodule is not counted
as an arrow to its package's `__init__` unless the statement names the package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmarks", "baselines", "bccl")

# Stage ranks: a module may import its own stage or a lower one, never a higher one.
STAGES = {"benchmarks.commands": 4, "benchmarks.run": 3, "benchmarks.train": 2, "baselines": 2, "bccl": 2,
          "benchmarks.data": 1, "benchmarks.store": 0}
# What the report may import: the store, its own modules, and the torch-free loose modules.
REPORTING_MAY_IMPORT = ("benchmarks.reporting", "benchmarks.store", "benchmarks.config", "benchmarks.calibration",
                        "benchmarks.checks", "benchmarks.run.variants")
MAX_LOOSE = 8


def project_modules() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def imports(mods: dict[str, Path], top_level_only: bool = False) -> dict[str, set[str]]:
    """module -> the project modules it imports (every statement, or only the module-level ones)."""
    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        nodes = tree.body if top_level_only else ast.walk(tree)
        deps = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            deps |= {m for m in map(known, targets) if m and m != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def stage(module: str) -> int | None:
    for prefix, rank in STAGES.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_project_modules():
    assert cycles(imports(project_modules())) == []


def test_stages_import_one_way():
    wrong = [f"{m} -> {d}" for m, deps in imports(project_modules()).items() for d in deps
             if stage(m) is not None and stage(d) is not None and stage(d) > stage(m)]
    assert wrong == [], "a lower stage imports a higher one (commands > run > train > data > store)"


def test_the_store_imports_only_itself():
    wrong = [f"{m} -> {d}" for m, deps in imports(project_modules()).items() if m.startswith("benchmarks.store")
             for d in deps if d != "benchmarks" and not d.startswith("benchmarks.store")]
    assert wrong == []


def test_reporting_reads_the_store_only():
    wrong = [f"{m} -> {d}" for m, deps in imports(project_modules()).items() if m.startswith("benchmarks.reporting")
             for d in deps if d != "benchmarks" and not d.startswith(REPORTING_MAY_IMPORT)]
    assert wrong == []


def test_reporting_never_imports_torch():
    """Statically: no module the report loads (module-level imports, followed through the project)
    imports torch; and at run time, importing every reporting module leaves torch unloaded."""
    mods = project_modules()
    graph = imports(mods, top_level_only=True)
    seen, todo = set(), [m for m in mods if m.startswith("benchmarks.reporting")]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    torch_users = [m for m in sorted(seen) for node in ast.parse(mods[m].read_text()).body
                   if isinstance(node, (ast.Import, ast.ImportFrom))
                   and any((a.name if isinstance(node, ast.Import) else node.module or "").split(".")[0] == "torch"
                           for a in node.names)]
    assert torch_users == []
    names = sorted(m for m in mods if m.startswith("benchmarks.reporting"))
    code = f"import sys\nfor m in {names!r}: __import__(m)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_benchmarks_top_keeps_few_loose_modules():
    loose = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))
    assert len(loose) <= MAX_LOOSE, loose


def test_old_module_paths_of_the_api_still_import_the_moved_modules():
    """docs/api.md's module paths before the stage folders: aliases for one release."""
    import importlib

    from benchmarks import MOVED_MODULES

    for old, new in MOVED_MODULES.items():
        module = importlib.import_module(old)
        assert module is importlib.import_module(new) and module.__spec__.name == new
    from benchmarks.training import Trainer, write_metrics  # noqa: F401
    from benchmarks.datasets import DatasetRequest, build_dataset  # noqa: F401
