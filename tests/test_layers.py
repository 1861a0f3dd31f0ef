"""The house, drawn from imports: the ``aanbench`` package's import graph,
read statically (``ast`` over every module, nothing imported), has no
circle, the engine never imports the command line or a plugin, and the
command line (``aanbench/cli*``, whatever its shape) imports only the
application layer and presentation helpers.

Edges: every ``import`` / ``from ... import`` anywhere in a module (inside
functions too: a lazy import still closes a circle when it runs), except
under ``if TYPE_CHECKING:``; importing ``a.b.c`` also runs the packages
``a.b`` (unless the importer lives inside it); and targets named by string:
``"aanbench.x:Name"`` values (the lazy tables such as
``aanbench.backends.BACKENDS``) and ``importlib.import_module("aanbench...")``
with a constant name. The root package ``aanbench`` (its ``__version__``
and ``hookimpl``, run before any submodule) is not a node.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "aanbench"
PACKAGE = "aanbench"
PLUGINS = "aanbench_plugins"
STRING_TARGET = re.compile(r"^(aanbench(?:\.\w+)+):\w+$")

# The presentation layer: the command line (``aanbench/cli*``: today cli.py and
# cli_weights.py, after the move the ``aanbench.cli`` package) and the
# program's entry points. Everything else in ``aanbench`` is the engine.
PRESENTATION_PREFIXES = ("aanbench.cli", "aanbench.entry", "aanbench.__main__")

# What the command line may import once it only parses, calls, prints and draws
# progress (issue 22, item 1): the application layer, the notebook API, the
# console helpers and the typed objects/errors it prints. LEAD: adjust this list
# to the final shape of the CLI move (e.g. a registry listing for `experiments`).
CLI_MAY_IMPORT = ("aanbench.cli", "aanbench.workflows", "aanbench.app", "aanbench.api", "aanbench.output",
                  "aanbench.contracts")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk_runtime(tree: ast.AST):
    """``ast.walk`` that skips the bodies of ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The dotted names ``name`` imports (modules, or the packages names come from)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _walk_runtime(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            out.update(subs)
            if len(subs) < len(node.names):
                out.add(target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = STRING_TARGET.match(node.value)
            if m:
                out.add(m.group(1))
        elif isinstance(node, ast.Call):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if called == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                out.add(node.args[0].value)
    return out


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(edges, plugin_imports)``: module -> the ``aanbench`` modules it imports
    (see the module's docstring), and module -> the ``aanbench_plugins`` names
    it imports."""
    mods = _modules()
    names = set(mods)
    edges: dict[str, set[str]] = {}
    plugins: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = _imports(name, path, names)
        plugins[name] = {t for t in targets if t == PLUGINS or t.startswith(PLUGINS + ".")}
        own: set[str] = set()
        for t in targets:
            if not t.startswith(PACKAGE + "."):
                continue
            parts = t.split(".")
            for i in range(2, len(parts) + 1):  # the target and the packages it runs on the way
                dotted = ".".join(parts[:i])
                if dotted in names and dotted != name and not (name + ".").startswith(dotted + "."):
                    own.add(dotted)
        edges[name] = own
    return edges, plugins


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan),
    each sorted; a module that imports itself is one too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _path(edges: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One circle inside a component, for the failure message."""
    inside = set(comp)
    start = comp[0]
    seen, todo = {start: [start]}, [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(edges[v] & inside):
            if w == start:
                return seen[v] + [start]
            if w not in seen:
                seen[w] = seen[v] + [w]
                todo.append(w)
    return comp


def _presentation(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") or name.startswith(p + "_") for p in PRESENTATION_PREFIXES)


# ---------------------------------------------------------------------------
# The reader itself: it must see what the rules are about, or they pass vacuously.


def test_the_reader_sees_lazy_string_and_relative_imports(tmp_path: Path) -> None:
    edges, _ = import_graph()
    # a string table: backends/__init__.py names its backends as "module:Class"
    assert {"aanbench.backends.local", "aanbench.backends.ray"} <= edges["aanbench.backends"]
    # a lazy import inside a function (extraction's driver picks a backend when it runs)
    assert "aanbench.backends" in edges["aanbench.extraction"]
    # a package run on the way to its submodule, unless the importer lives inside it
    assert "aanbench.batched" in edges["aanbench.runner"]
    assert "aanbench.batched" not in edges["aanbench.batched.loop"]
    pkg = tmp_path / "aanbench" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nimport importlib\n"
                              "if TYPE_CHECKING:\n    from aanbench.cli import app\n"
                              "def f():\n    from ..x import y\n    importlib.import_module('aanbench.z')\n")
    names = {"aanbench.sub", "aanbench.sub.a", "aanbench.x", "aanbench.z"}
    assert _imports("aanbench.sub", pkg / "__init__.py", names) == {"aanbench.sub.a"}
    assert _imports("aanbench.sub.a", pkg / "a.py", names) == {"typing", "importlib", "aanbench.x", "aanbench.z"}


def test_the_cycle_finder_finds_circles() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


# ---------------------------------------------------------------------------
# The rules.


def test_no_import_circle() -> None:
    edges, _ = import_graph()
    cycles = find_cycles(edges)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(_path(edges, c)) for c in cycles)


def test_the_engine_imports_neither_the_cli_nor_a_plugin() -> None:
    edges, plugins = import_graph()
    engine = [m for m in edges if not _presentation(m)]
    assert "aanbench.batched.loop" in engine and "aanbench.extraction" in engine
    wrong = {m: sorted(t for t in edges[m] if _presentation(t)) for m in engine}
    wrong = {m: t for m, t in wrong.items() if t}
    assert not wrong, f"engine modules that import the command line: {wrong}"
    wrong_plugins = {m: sorted(plugins[m]) for m in engine if plugins[m]}
    assert not wrong_plugins, f"engine modules that import a plugin: {wrong_plugins}"


def _cli_moved() -> bool:
    """Whether the application layer exists (issue 22, item 1: the CLI only
    parses, calls, prints): until then ``cli.py`` holds the application and
    the rule below cannot hold."""
    return (ROOT / "workflows.py").exists() or (ROOT / "workflows").is_dir() or (ROOT / "app").is_dir()


@pytest.mark.xfail(not _cli_moved(), reason="the CLI still holds the application (issue 22, item 1); "
                   "enforced once aanbench/workflows* or aanbench/app/ exists. LEAD: check CLI_MAY_IMPORT",
                   strict=True)
def test_the_cli_imports_only_the_application_layer_and_presentation() -> None:
    edges, _ = import_graph()
    cli = [m for m in edges if m == "aanbench.cli" or m.startswith(("aanbench.cli.", "aanbench.cli_"))]
    assert cli
    wrong = {m: sorted(t for t in edges[m]
                       if not any(t == p or t.startswith(p + ".") or t.startswith(p + "_") for p in CLI_MAY_IMPORT))
             for m in cli}
    wrong = {m: t for m, t in wrong.items() if t}
    assert not wrong, f"command-line modules that reach past the application layer: {wrong}"
