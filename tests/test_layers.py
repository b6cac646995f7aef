"""The package's layers, read from the source: every import, the ones inside functions too."""

import ast
from pathlib import Path

import bsmamba

SRC = Path(bsmamba.__file__).parent
LOWER = ("data", "metrics", "model", "scan", "norms", "frontend", "units", "losses", "checkpoint",
         "heap")  # fmt: skip
INFERENCE = ("enhance", "enhance_cli", "stream", "stream_core", "stream_export", "causal",
             "export", "export_graph", "export_scan", "onnx_engine", "memory")  # fmt: skip
HIGHER = ("train", "study", "cli", *INFERENCE)


def _imports(path: Path) -> set[str]:
    """Top-level bsmamba subpackage/module names imported anywhere in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "bsmamba":
                names |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "bsmamba" and len(parts) > 1:
                    names.add(parts[1])
    return names


def _files(name: str) -> list[Path]:
    return sorted((SRC / name).rglob("*.py")) if (SRC / name).is_dir() else [SRC / f"{name}.py"]


def test_lower_layers_never_import_higher_ones():
    for name in LOWER:
        for f in _files(name):
            assert not _imports(f) & set(HIGHER), f"{f.relative_to(SRC)} imports a higher layer"


def test_memory_and_inference_never_import_train():
    for name in INFERENCE:
        for f in _files(name):
            assert "train" not in _imports(f), f"{f.relative_to(SRC)} imports bsmamba.train"


def _module_graph() -> dict[str, set[str]]:
    """Dotted module name -> the bsmamba modules it imports (anywhere in the file).

    ``from bsmamba.data import audio`` is an edge to the module ``bsmamba.data.audio``; a name
    that is not a module (``from bsmamba.data import resolve``) is an edge to the package's
    ``__init__``. Importing a submodule is not counted as importing its package: a package's
    ``__init__`` runs first whatever imports what, and may load its own submodules lazily.
    """
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = p
    graph = {}
    for name, p in mods.items():
        package = name if p.name == "__init__.py" else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, one level up per extra dot
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:
                    out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circle_between_any_two_modules():
    graph = _module_graph()
    assert "bsmamba.data.audio" in graph["bsmamba.evaluate"]  # a module-level import
    assert "bsmamba.dnsmos" in graph["bsmamba.evaluate"]  # one inside a function
    circle = _cycle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_check_finds_circles():
    assert _cycle({"a": {"b"}, "b": {"a"}, "c": set()}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
