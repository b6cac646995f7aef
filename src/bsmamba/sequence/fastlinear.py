"""``F.linear`` for CPU inference through oneDNN's matmul instead of MKL's sgemm.

On the development machine (AMD EPYC, torch 2.13 CPU, one thread) MKL's sgemm ran the Mamba
blocks' skinny products well below what oneDNN's JIT kernels reach. Ad-hoc timing (script not
kept; time.thread_time, min of 9) of ``F.linear`` against ``torch.ops.mkldnn._linear_pointwise``
at the shapes of a 10 s abl3 forward: (37530 x 64) @ (64 x 128) 9.8 -> 7.0 ms, (37530 x 128) @
(128 x 28) 7.1 -> 5.1 ms, dt_proj (37530 x 4) @ (4 x 128) + bias 3.8 -> 2.0 ms, (37530 x 256) @
(256 x 64) + bias 19.1 -> 13.8 ms; equal results (the same products, summed in another order).

The op is the one torch's inductor uses for its oneDNN linears: internal, so it is used only
where it exists and only without gradients (training keeps ``F.linear`` and its backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _has_op() -> bool:
    """Whether this torch has the op and it gives F.linear's numbers (a tiny probe, once)."""
    try:
        if not (
            torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        ):
            return False
        x, w, b = torch.ones(2, 3), torch.ones(4, 3), torch.ones(4)
        with torch.no_grad():
            y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        return bool(torch.equal(y, F.linear(x, w, b)))
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        return False


_ONEDNN = _has_op()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """``F.linear(x, weight, bias)``: x (..., in), weight (out, in), bias (out,) -> (..., out);
    through oneDNN for float32 CPU tensors when no gradient is recorded and nothing traces."""
    if (
        _ONEDNN
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()  # torch.export (ONNX) has no translation of it
    ):
        return torch.ops.mkldnn._linear_pointwise(
            x.contiguous(), weight.contiguous(), bias, "none", [], ""
        )
    return F.linear(x, weight, bias)
