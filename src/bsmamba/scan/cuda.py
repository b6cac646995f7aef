"""Adapter over mamba-ssm's fused CUDA kernel, used only on CUDA tensors when it imports.

The import is guarded: a missing or broken mamba-ssm (a common state: it needs a matching CUDA
build) only makes this backend unavailable, and ``IMPORT_ERROR`` says why.
"""

from __future__ import annotations

try:  # any failure (ImportError, OSError from a bad .so, RuntimeError) disables the backend
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _kernel

    IMPORT_ERROR: str | None = None
except Exception as e:  # noqa: BLE001
    _kernel = None
    IMPORT_ERROR = f"{type(e).__name__}: {e}".splitlines()[0]


def available() -> bool:
    return _kernel is not None


def selective_scan_cuda(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False,
):  # fmt: skip
    """mamba-ssm's ``selective_scan_fn`` (same signature as the reference); CUDA tensors only."""
    if _kernel is None:
        raise RuntimeError(f"scan backend 'cuda' is unavailable: mamba-ssm does not import "
                           f"({IMPORT_ERROR}); use backend='fused'")  # fmt: skip
    if not u.is_cuda:
        raise ValueError("scan backend 'cuda' needs CUDA tensors; use backend='fused' on "
                         f"{u.device.type}")  # fmt: skip
    return _kernel(
        u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
        D, z if z is None else z.contiguous(), delta_bias, delta_softplus, return_last_state,
    )  # fmt: skip
