"""The layers of argen import downward only: no import cycle, and the rules of docs/architecture.md.

The graph counts every import, at module level or inside a function (a lazy import is still a
dependency), resolved to the argen module it names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "argen"

# Modules below the models: they may import each other only (and never a model, sampler or tool).
LOW = ("argen.errors", "argen.version", "argen.config", "argen.registry", "argen.checkpoint", "argen.tokens",
       "argen.device", "argen.torch_files", "argen.images")
# The networks: architectures and their building blocks know nothing of sampling loops, files or tools.
NETWORKS = ("argen.nn", "argen.schedulers", "argen.tokenizers", "argen.generators")
ABOVE_NETWORKS = ("argen.sampling", "argen.presets", "argen.models", "argen.pipeline", "argen.pretrained",
                  "argen.training", "argen.evaluation", "argen.convert", "argen.demo", "argen.cli")


def _modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for f in root.rglob("*.py"):
        parts = f.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the argen modules it imports, each name resolved to the deepest module it names."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                # ``from a import b`` runs a's __init__ as well: it depends on a and on a.b
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m:
                    graph[m].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def forbidden_edges(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, targets in graph.items():
        for t in sorted(targets):
            if _under(m, LOW) and not _under(t, LOW):
                bad.append(f"{m} -> {t} (a low-layer module imports {t})")
            if _under(m, NETWORKS) and _under(t, ABOVE_NETWORKS):
                bad.append(f"{m} -> {t} (a network imports a layer above it)")
    return bad


def test_argen_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_layer_imports_upward():
    assert forbidden_edges(import_graph()) == []


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    # The checks themselves can fail: a package with a cycle and a generator importing a sampler.
    pkg = tmp_path / "argen"
    for sub in ("generators", "sampling"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "registry.py").write_text("import argen.checkpoint\n")
    (pkg / "checkpoint.py").write_text("def f():\n    import argen.registry\n")
    (pkg / "generators" / "toy.py").write_text("from argen.sampling.toy import sample\n")
    (pkg / "sampling" / "toy.py").write_text("def sample(): ...\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["argen.checkpoint", "argen.registry"]]
    assert forbidden_edges(graph) == ["argen.generators.toy -> argen.sampling.toy (a network imports a layer above it)"]


@pytest.mark.parametrize("low", LOW)
def test_low_layer_modules_exist(low):
    # A renamed module would silently drop out of the rule above.
    assert low in _modules()
