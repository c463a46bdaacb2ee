"""Layering: imports flow down the data path. The package's folders (sub-packages, and top-level modules)
import each other in one direction only, counting imports inside functions, and the benchmarks under
``eval/`` are a package that uses llmrank's public names only."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "llmrank"


def _imports(f: Path, module: str) -> list[tuple[str, int]]:
    """``(imported module or name, line)`` for every import in ``f``, at module level or in a function."""
    is_pkg = f.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_pkg else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            out += [(base, node.lineno)] + [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return out


def _module_name(f: Path, root: Path = REPO) -> str:
    rel = f.relative_to(root).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def layer_graph(package: Path = PACKAGE) -> dict[str, dict[str, str]]:
    """``{layer: {layer it imports: "file:line" of the first such import}}``; a layer is a direct child of
    the package (a sub-package with all its modules, or a top-level module)."""
    root = package.parent
    mods = {_module_name(f, root): f for f in package.rglob("*.py")}
    layers = {m.split(".")[1] for m in mods if m.count(".") >= 1}
    edges: dict[str, dict[str, str]] = {}
    for m, f in sorted(mods.items()):
        if "." not in m:
            continue
        src = m.split(".")[1]
        for target, line in _imports(f, m):
            parts = target.split(".")
            if parts[0] != package.name or len(parts) < 2 or parts[1] not in layers or parts[1] == src:
                continue
            edges.setdefault(src, {}).setdefault(parts[1], f"{f.relative_to(root)}:{line}")
    return edges


def loops(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected groups of more than one layer (Tarjan)."""
    nodes = sorted({*edges, *(d for e in edges.values() for d in e)})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def test_the_loop_finder_finds_loops_through_function_imports(tmp_path):
    """A toy package whose ``a`` imports ``b`` at module level and ``b`` imports ``a`` inside a function is
    one loop; a third layer importing both is not in it."""
    pkg = tmp_path / "toy"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from toy.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from toy.a import x\n    return x\n")
    (pkg / "c.py").write_text("from . import b\nfrom .a import y\n")
    edges = layer_graph(pkg)
    assert edges == {"a": {"b": "toy/a/__init__.py:1"}, "b": {"a": "toy/b.py:2"}, "c": {"b": "toy/c.py:1", "a": "toy/c.py:2"}}
    assert loops(edges) == [["a", "b"]]
    (pkg / "b.py").write_text("def thing():\n    return 1\n")
    assert loops(layer_graph(pkg)) == []


def test_no_two_layers_of_the_package_import_each_other():
    """No two folders (or top-level modules) of llmrank import each other, counting imports inside functions."""
    edges = layer_graph()
    assert {"students", "training", "serve", "backends", "runner", "cli"} <= set(edges)  # the graph is read
    pairs = sorted(f"{a} <-> {b} ({edges[a][b]}, {edges[b][a]})" for a in edges for b in edges[a]
                   if a < b and a in edges.get(b, {}))
    assert pairs == []
    assert loops(edges) == [], {name: {d: where for d, where in edges[name].items()} for loop in loops(edges)
                                for name in loop}


def test_the_data_path_runs_down():
    """Where the layers of the data path stand: none below imports one above it."""
    edges = layer_graph()
    order = ["data", "backends", "rerankers", "losses", "students", "training", "eval", "recipe", "stages", "runner",
             "commands", "cli"]
    for i, low in enumerate(order):
        for high in order[i + 1:]:
            assert high not in edges.get(low, {}), f"{low} imports {high} at {edges[low][high]}"


def test_the_benchmarks_are_a_package_on_the_public_api():
    """``eval/`` runs with ``python -m eval.<script>``: no ``sys.path`` edits, nothing from ``tests/``, and no
    private name of llmrank (``_x``) imported or reached as an attribute of an llmrank module."""
    bench = REPO / "eval"
    assert (bench / "__init__.py").is_file()
    problems = []
    for f in sorted(bench.glob("*.py")):
        text = f.read_text()
        tree = ast.parse(text, str(f))
        llmrank_names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "llmrank":
                for a in node.names:
                    llmrank_names.add(a.asname or a.name)
                    if a.name.startswith("_"):
                        problems.append(f"{f.name}:{node.lineno} imports llmrank's private {a.name}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("tests", "test_reliability"):
                problems.append(f"{f.name}:{node.lineno} imports from tests")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in ("tests",) or a.name.startswith("test_"):
                        problems.append(f"{f.name}:{node.lineno} imports {a.name} from tests")
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id in llmrank_names:
                    problems.append(f"{f.name}:{node.lineno} uses llmrank's private {node.value.id}.{node.attr}")
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("sys.path.insert", "sys.path.append"):
                problems.append(f"{f.name}:{node.lineno} edits sys.path")
    assert problems == []
