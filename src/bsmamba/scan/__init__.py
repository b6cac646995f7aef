"""The selective scan of Mamba with interchangeable backends, one signature.

    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto")

Shapes as mamba-ssm's ``selective_scan_fn``: u, delta, z (batch, d_inner, L); A (d_inner,
d_state); B, C (batch, d_state, L); D, delta_bias (d_inner,). Backends:

    reference  a plain sequential loop: the spec (stores (batch, d_inner, L, d_state) for backward)
    fused      memory-lean pure PyTorch: recomputes states chunk by chunk in backward
    cuda       mamba-ssm's kernel (CUDA tensors, when mamba-ssm imports)
    auto       cuda for CUDA tensors when available, else fused; ``choose_backend`` says why
"""

from __future__ import annotations

import torch

from bsmamba.scan import cuda as _cuda
from bsmamba.scan.fused import selective_scan_fused
from bsmamba.scan.reference import selective_scan_reference

BACKENDS = ("reference", "fused", "cuda", "auto")
_IMPLS = {"reference": selective_scan_reference, "fused": selective_scan_fused}


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return name


def available_backends() -> list[str]:
    """Backends that can run in this process (``cuda`` only if mamba-ssm imports and CUDA is up)."""
    names = ["reference", "fused"]
    if _cuda.available() and torch.cuda.is_available():
        names.append("cuda")
    return names


def choose_backend(device: str | torch.device = "cpu", backend: str = "auto") -> tuple[str, str]:
    """The backend ``backend`` resolves to for tensors on ``device``, and a one-line reason."""
    check_backend(backend)
    device = torch.device(device)
    if backend != "auto":
        return backend, "asked for explicitly"
    if device.type != "cuda":
        return "fused", f"tensors on {device.type}: the mamba-ssm kernel runs on CUDA only"
    if not _cuda.available():
        return "fused", f"mamba-ssm does not import ({_cuda.IMPORT_ERROR})"
    return "cuda", "CUDA tensors and mamba-ssm's kernel imports"


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False, backend="auto",
):  # fmt: skip
    """out (batch, d_inner, L) [, last state (batch, d_inner, d_state)]; see the module doc."""
    name, _ = choose_backend(u.device, backend)
    if name == "cuda":
        fn = _cuda.selective_scan_cuda
    else:
        fn = _IMPLS[name]
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


__all__ = ["BACKENDS", "available_backends", "check_backend", "choose_backend", "selective_scan"]
