"""The package's layers, read from the source: every import, the ones inside functions too."""

import ast
from pathlib import Path

import bsmamba

SRC = Path(bsmamba.__file__).parent
LOWER = ("data", "metrics", "model", "scan", "norms", "frontend", "units", "losses", "checkpoint")
HIGHER = ("train", "memory", "study", "cli", "enhance", "export", "stream")
INFERENCE = ("enhance", "stream", "export", "memory")


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
