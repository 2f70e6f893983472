"""The package layout: no import cycle anywhere, and dependencies that run one way.

Every import counts, a function-local one too (the cycle this test was written against hid in
one). ``cli`` may import everything; ``frontend`` and ``jobs`` import the shared modules at
``producer/``'s top level and ``schemas``, never each other (nor ``worker``); ``worker`` imports
``schemas`` only; ``schemas`` imports nothing of ours but itself; the job client loads no web
framework; and pyproject installs every package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Import name -> directory holding it (devstack is installed from scripts/devstack).
SOURCES = {
    "schemas": ROOT / "schemas",
    "producer": ROOT / "producer",
    "worker": ROOT / "worker",
    "devstack": ROOT / "scripts" / "devstack",
}
Graph = dict[str, set[str]]


def _modules() -> dict[str, Path]:
    found = {}
    for name, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every dotted name an import statement in ``tree`` names, ``from x import y`` as x.y."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


@cache
def _graph() -> tuple[Graph, Graph]:
    """First-party edges (module -> modules) and third-party roots each module imports."""
    modules = _modules()
    ours: Graph = {}
    theirs: Graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        names = set(_imported(tree, module, path.name == "__init__.py"))
        ours[module] = {n for n in names if n in modules and n != module}
        theirs[module] = {
            n.split(".")[0] for n in names if n.split(".")[0] not in SOURCES and n != "__future__"
        }
    return ours, theirs


def _cycle(graph: Graph) -> list[str] | None:
    """One import cycle of ``graph`` as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _reach(graph: Graph, start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_sees_the_layout() -> None:
    ours, _ = _graph()
    # Guards the walk itself: a resolver that saw no edge would pass every test below.
    assert "producer.frontend.gateway" in ours["producer.frontend.routes.openai"]
    assert "producer.jobs.collect" in ours["producer.jobs"]
    assert "producer.frontend.app" in ours["producer.cli.services"], "a function-local import"


def test_no_import_cycle() -> None:
    ours, _ = _graph()
    cycle = _cycle(ours)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_planted_cycle() -> None:
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(planted) == ["a", "b", "c", "a"]


FORBIDDEN = {
    # importer package: packages it must not reach, directly or through others
    "producer.jobs": ("producer.frontend", "producer.cli", "worker", "devstack"),
    "producer.frontend": ("producer.jobs", "producer.cli", "worker", "devstack"),
    "schemas": ("producer", "worker", "devstack"),
    "worker": ("producer", "devstack"),
}
BATCH_MODEL = "producer.jobs.batch"
SHARED = ("producer.assemble", "producer.publisher", "producer.refusals")


def test_dependencies_run_one_way() -> None:
    ours, _ = _graph()
    wrong = []
    for module in ours:
        rules = [bad for pkg, bads in FORBIDDEN.items() if _in(module, pkg) for bad in bads]
        if module in SHARED:
            rules += ["producer.frontend", "producer.jobs", "producer.cli", "worker", "devstack"]
        reach = _reach(ours, module)
        if _in(module, "producer.frontend"):
            # The Batch API routes serve the batch job model (producer.jobs.batch, no web
            # framework) and reach the job client only through it.
            via = {m for m in reach if _in(m, BATCH_MODEL)}
            reach -= via | {r for m in via for r in _reach(ours, m)}
        wrong += [f"{module} -> {m}" for m in reach if any(_in(m, b) for b in rules)]
    assert not wrong, "\n".join(sorted(wrong))


def test_job_client_imports_no_web_framework() -> None:
    ours, theirs = _graph()
    jobs = [m for m in ours if _in(m, "producer.jobs") or m == "producer.cli.jobs"]
    web = {
        f"{m} -> {root}"
        for m in jobs
        for reached in {m} | _reach(ours, m)
        for root in theirs[reached] & {"fastapi", "starlette", "uvicorn"}
    }
    assert not web, sorted(web)


def test_job_client_loads_no_web_framework() -> None:
    code = (
        "import sys, producer.jobs, producer.cli.jobs; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'fastapi', 'starlette', 'uvicorn'} or m.startswith('producer.frontend')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_package_is_installed() -> None:
    # A subpackage missing from this list is missing from a non-editable install (the image).
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(setuptools["packages"])
    on_disk = {m for m, path in _modules().items() if path.name == "__init__.py"}
    assert on_disk == packages
