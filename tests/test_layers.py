"""The layers of the house, read from the source with ``ast``: every import, including those inside functions.

    core (ppl/)  ←  grammar/, backends/, algorithms/  ←  the application (app/)

The core imports none of the others; grammar, backends and algorithms import only the core
(never one another, never the application); and no module of the package takes part in an
import cycle. Imports under ``if TYPE_CHECKING:`` are ignored (they never run). Docstring
examples are text, not imports, and are not read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"ppl": "ppl", "grammar": "ppl.grammar", "backends": "ppl.backends", "algorithms": "ppl.algorithms"}
FOLDERS["app"] = "ppl.app"
MIDDLE = ("ppl.grammar", "ppl.backends", "ppl.algorithms")
UPPER = (*MIDDLE, "ppl.app")


def package_modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name (``grammar/x.py`` is ``ppl.grammar.x``)."""
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


MODULES = package_modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST):
    """Every node, skipping the bodies of ``if TYPE_CHECKING:`` (their ``else`` still counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in the module ``name``; relative imports resolved.

    ``from X import y`` imports ``X.y`` when that is a module of the package, else ``X``.
    """
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = []
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, node.lineno))
    return found


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _layer(module: str) -> str:
    for package in UPPER:
        if _within(module, (package,)):
            return package
    return "ppl"


def test_the_scan_sees_every_folder_and_resolves_relative_imports():
    assert {
        "ppl.scheduler",
        "ppl.grammar.checker",
        "ppl.backends.vllm",
        "ppl.algorithms.smc",
        "ppl.app.cli",
    } <= set(MODULES)
    found = dict(imports("ppl.app.cli", MODULES["ppl.app.cli"]))
    assert "ppl.app.evaluate" in found and "ppl.app.records" in found and "ppl.grammar" in found
    assert "ppl.grammar.ast" in dict(imports("ppl.grammar.checker", MODULES["ppl.grammar.checker"]))


def test_imports_inside_functions_and_type_checking_blocks(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import ppl.app\n"
        "def f():\n    from .. import grammar\n    import ppl.backends.vllm\n"
    )
    found = [m for m, _ in imports("ppl.x.probe", source)]
    assert "ppl.grammar" in found and "ppl.backends.vllm" in found and "ppl.app" not in found


@pytest.mark.parametrize("name", [m for m in MODULES if _layer(m) == "ppl"])
def test_the_core_imports_no_upper_layer(name):
    upward = [(m, line) for m, line in imports(name, MODULES[name]) if _within(m, UPPER)]
    assert not upward, f"{MODULES[name].relative_to(ROOT)} imports {upward}"


@pytest.mark.parametrize("name", [m for m in MODULES if _layer(m) in MIDDLE])
def test_grammar_backends_and_algorithms_import_only_the_core(name):
    own = _layer(name)
    others = [(m, line) for m, line in imports(name, MODULES[name]) if _within(m, UPPER) and _layer(m) != own]
    assert not others, f"{MODULES[name].relative_to(ROOT)} imports {others}"


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of ``graph`` (node → successors) as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for successor in graph.get(node, ()):
            if state.get(successor) == "open":
                return [*path[path.index(successor) :], successor]
            if successor not in state:
                cycle = visit(successor, [*path, successor])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in graph:
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    graph = {
        name: sorted({m for m, _ in imports(name, path) if m in MODULES and m != name})
        for name, path in MODULES.items()
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    """The mutant: a cycle like the old cli ↔ evaluate one (the back edge inside a function) is found."""
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("from . import c\ndef f():\n    from .a import y\n")
    (tmp_path / "c.py").write_text("")
    graph = {f"ppl.app.{n}": [m for m, _ in imports(f"ppl.app.{n}", tmp_path / f"{n}.py")] for n in "abc"}
    assert graph["ppl.app.a"] == ["ppl.app.b"] and "ppl.app.a" in graph["ppl.app.b"]
    assert find_cycle(graph) == ["ppl.app.a", "ppl.app.b", "ppl.app.a"]
    assert find_cycle({"x": ["y"], "y": ["z"], "z": []}) is None
