"""The docs/ folder: every doc path cited in code, configs or the README exists, every method has
its page, the links between pages resolve, and the API page's examples import real names (its
loss example is run and must print what the page says it prints)."""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
import subprocess
from pathlib import Path

import pytest

from benchmarks.train.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = re.compile(r"docs/[A-Za-z0-9_<>./-]*[A-Za-z0-9_>]")
CITING = (".py", ".yaml", ".yml", ".md", ".toml")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        files = [ROOT / line for line in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file under the root
        files = [p for p in ROOT.rglob("*") if ".git" not in p.parts]
    return [p for p in files if p.suffix in CITING and p.is_file()]


def cited_doc_paths() -> dict[str, set[str]]:
    """{cited path: files citing it}, with `<method>` expanded to every registered method."""
    cited: dict[str, set[str]] = {}
    for path in tracked_files():
        for match in DOC_PATH.findall(path.read_text(errors="replace")):
            match = match.rstrip(".")
            names = [match.replace("<method>", m) for m in METHODS.names()] if "<method>" in match else [match]
            for name in names:
                cited.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return cited


def test_every_doc_path_cited_in_the_project_exists():
    cited = cited_doc_paths()
    assert "docs/methods/bccl.md" in cited and "docs/api.md" in cited  # the scan finds citations at all
    missing = {name: sorted(files) for name, files in cited.items() if not (ROOT / name).exists()}
    assert not missing, f"cited but absent: {missing}"


def test_nothing_cites_documents_outside_the_project():
    offenders = [str(p.relative_to(ROOT)) for p in tracked_files()
                 if p.name != "test_docs.py" and re.search(r"shared/docs|(?<![\w/])methods\.md", p.read_text(errors="replace"))]
    assert not offenders


def test_every_registered_method_has_its_page():
    for name in METHODS.names():
        assert (ROOT / "docs" / "methods" / f"{name}.md").is_file(), name


def test_links_between_pages_resolve():
    for page in (ROOT / "docs").rglob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).resolve().exists(), f"{page.relative_to(ROOT)} -> {target}"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_api_page_imports_real_names():
    blocks = python_blocks(ROOT / "docs" / "api.md")
    assert len(blocks) >= 5
    checked = 0
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
                    checked += 1
    assert checked >= 15


def test_api_page_loss_example_prints_what_the_page_says():
    text = (ROOT / "docs" / "api.md").read_text()
    block = python_blocks(ROOT / "docs" / "api.md")[0]
    printed = re.search(r"prints\n\n```\n(.*?)```", text, flags=re.S).group(1).split()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "docs/api.md", "exec"), {})
    got = out.getvalue().split()
    assert len(got) == len(printed) == 5
    assert [float(v) for v in got] == pytest.approx([float(v) for v in printed], rel=1e-5)


# The README's quick start, verbatim: CI (.ci/run) runs exactly these two commands, and users copy them.
QUICK_START = (
    "python -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]' && python run_benchmark.py && python report.py",
    "python -m pytest -q",
)


def test_readme_is_short_and_keeps_the_quick_start():
    """The README is the front door: at most 160 lines, the two quick-start commands as they are,
    one real grid, and links into docs/ for the reference material."""
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines"
    for command in QUICK_START:
        assert command in lines, f"quick-start command missing or changed: {command}"
    assert "python run_benchmark.py --grid cifar --data-root data --download" in lines
    assert "docs/results/fashion-mnist-lt.md" in text
    assert "](docs/README.md)" in text  # the docs index, which lists every page (test below)


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text()
    listed = set(re.findall(r"\]\(([^)#\s]+)", index))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")} - {"README.md"}
    assert not pages - listed, f"pages missing from docs/README.md: {sorted(pages - listed)}"
