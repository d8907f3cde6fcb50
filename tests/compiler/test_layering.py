"""The import graph of flowdsl: one way, no cycles, and a compiler that imports neither torch,
nor onnx, nor anything under flowdsl.runtime.

Every ``import`` statement of every module counts, function-level ones included (read from the
source with ``ast``, so nothing is imported). An edge goes from a module to the module it names
(``from a.b import c`` names ``a.b``, or ``a.b.c`` when that is a module); parent packages that
Python imports implicitly are not edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_COMPILER = ("torch", "onnx", "onnxruntime", "onnxscript", "flowdsl.runtime", "numpy", "matplotlib")


def _modules() -> dict[str, Path]:
    """Module name -> file, from the package-dir mapping of pyproject.toml."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    out = {}
    for pkg in cfg["packages"]:
        root_pkg = max((p for p in cfg["package-dir"] if pkg == p or pkg.startswith(p + ".")), key=len)
        folder = (
            ROOT
            / cfg["package-dir"][root_pkg]
            / Path(*pkg[len(root_pkg) :].strip(".").split(".") if pkg != root_pkg else ())
        )
        for f in folder.glob("*.py"):
            out[pkg if f.name == "__init__.py" else f"{pkg}.{f.stem}"] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return out


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_node(name)
        for imp in _imports(name, path, set(mods)):
            g.add_edge(name, imp)
    return g


def test_the_module_table_is_complete(graph):
    names = set(graph)
    for must in ("flowdsl.api", "flowdsl.compiler.ir", "flowdsl.compiler.kinds.coupling", "flowdsl.runtime.model"):
        assert must in names


def test_no_import_cycles(graph):
    internal = graph.subgraph(n for n in graph if n.startswith("flowdsl"))
    cycles = list(nx.simple_cycles(internal))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in cycles[:20])


def test_the_compiler_imports_no_torch_onnx_or_runtime(graph):
    bad = []
    for mod in graph:
        if not mod.startswith("flowdsl.compiler"):
            continue
        for imp in graph.successors(mod):
            if any(imp == f or imp.startswith(f + ".") for f in FORBIDDEN_IN_COMPILER):
                bad.append(f"{mod} imports {imp}")
    assert not bad, "\n".join(bad)


def test_the_front_end_reaches_the_runtime_only_inside_functions():
    """flowdsl/*.py may call into the runtime (compile, export, the CLI), but only from inside a
    function, so that parsing and checking never import torch."""
    bad = []
    for name, path in _modules().items():
        if name.startswith(("flowdsl.compiler", "flowdsl.runtime")):
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for n in names:
                    if n.startswith(("torch", "onnx", "flowdsl.runtime")):
                        bad.append(f"{name}: {n}")
    assert not bad, bad


def test_the_detector_sees_a_function_level_cycle(tmp_path):
    """The walk reads imports inside functions too (a cycle hidden in a function is found)."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pkg import b\n")
    assert _imports("pkg.a", a, {"pkg.a", "pkg.b"}) == {"pkg.b"}
