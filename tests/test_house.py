"""The house rules of ../shared/DESIGN.md, checked on the package's source: imports
run one way (no circle, no private name imported from another module), and no
function, class or module grows past what one reader holds at once."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxgauss"
MAX_FUNCTION, MAX_CLASS, MAX_MODULE = 60, 250, 800


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _trees():
    return {name: ast.parse(path.read_text()) for name, path in SOURCES.items()}


def _imports(name: str, tree: ast.Module):
    """(module imported, names taken from it) for every import anywhere in a module,
    function-level ones included: a lazy import is still an edge of the graph."""
    package = name if SOURCES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            yield base, [alias.name for alias in node.names]


def _edges(trees) -> dict[str, set[str]]:
    """The package's import graph: a ``from pkg import mod`` is an edge to the
    module ``pkg.mod`` (not to the package), a name from a package an edge to it."""
    graph = {name: set() for name in trees}
    for name, tree in trees.items():
        for base, names in _imports(name, tree):
            if not base.startswith("jaxgauss"):
                continue
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in SOURCES]
            graph[name].update(submodules)
            if len(submodules) < len(names) or not names:
                graph[name].add(base)
    for name in graph:
        graph[name].discard(name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (a list of modules, first = last), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_circle():
    graph = _edges(_trees())
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_circle_finder_finds_a_circle():
    # The check above could pass by finding nothing: a planted circle is found.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _private_imports(trees) -> list[str]:
    found = []
    for name, tree in trees.items():
        for base, names in _imports(name, tree):
            if not base.startswith("jaxgauss"):
                continue
            for n in names:
                private = n.startswith("_") and not n.startswith("__")
                if private and f"{base}.{n}" not in SOURCES:  # a private module is fine
                    found.append(f"{name} imports {n} from {base}")
    return found


def test_no_private_name_crosses_a_module_line():
    """Names shared inside the package have no underscore; privacy is the module's
    name and ``__all__`` (optax's ``_src``). Importing a private module is fine."""
    assert _private_imports(_trees()) == []


def test_the_private_import_check_sees_one():
    tree = ast.parse("from jaxgauss._engine import _UNROLL\nfrom jaxgauss import _engine\n")
    assert _private_imports({"jaxgauss._fit": tree}) == [
        "jaxgauss._fit imports _UNROLL from jaxgauss._engine"
    ]


def _body_lines(node) -> int:
    """Lines of a function or class body, its docstring excluded."""
    body = node.body
    first = body[0]
    is_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
    if is_doc and isinstance(first.value.value, str):
        if len(body) == 1:
            return 0
        first = body[1]
    return node.end_lineno - first.lineno + 1


def _too_long(trees) -> list[str]:
    found = []
    for name, tree in trees.items():
        lines = len(SOURCES[name].read_text().splitlines())
        if lines > MAX_MODULE:
            found.append(f"module {name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
                if _body_lines(node) > limit:
                    found.append(f"{name}.{node.name}: {_body_lines(node)} lines")
    return found


def test_no_function_class_or_module_is_too_long():
    assert _too_long(_trees()) == []


@pytest.mark.parametrize("n, flagged", [(MAX_FUNCTION, False), (MAX_FUNCTION + 1, True)])
def test_the_length_check_counts_the_body_after_the_docstring(n, flagged):
    body = "".join(f"    x{i} = {i}\n" for i in range(n))
    tree = ast.parse(f'def f():\n    """doc\n    more"""\n{body}')
    node = tree.body[0]
    assert (_body_lines(node) > MAX_FUNCTION) is flagged
