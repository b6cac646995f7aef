"""What a run ran on: versions, device, threads, git revision. Saved beside every result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def git_revision(path: str | Path | None = None) -> str | None:
    """The git commit of the bsmamba source tree (with ``+dirty``), or None outside a checkout."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions of the stack, the device and thread count; JSON-ready."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "bsmamba": _version("bsmamba"),
        "lightning": _version("lightning"),
        "mamba_ssm": _version("mamba-ssm"),
        "numpy": _version("numpy"),
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "mps_available": bool(getattr(torch.backends, "mps", None))
        and torch.backends.mps.is_available(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git_revision": git_revision(),
    }


DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str, key: str = "device") -> str:
    """The device a run uses: ``auto`` is cuda, then mps, then cpu; a named device must exist.

    Raises ``ValueError`` (one line naming ``key``, the value and the fix) for an unknown name or
    an accelerator torch does not see. One place for train, enhance, stream, export and doctor.
    """
    import torch

    if name not in DEVICES:
        raise ValueError(f"unknown {key} {name!r}; valid: {', '.join(DEVICES)}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps) and mps.is_available()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}=cuda but torch sees no CUDA device; use cpu or auto")
    if name == "mps" and not has_mps:
        raise ValueError(f"{key}=mps but torch sees no MPS device; use cpu or auto")
    return name
