"""A memory-lean selective scan in pure PyTorch: what the CUDA kernel does, on any device.

Autograd through a step loop keeps (batch, d_inner, L, d_state) tensors alive for backward: at
the study shape that is hundreds of MB per block. Here a custom autograd Function saves only the
inputs plus the state h at the start of every chunk of K ~ sqrt(L) steps. Backward walks the
chunks last to first, recomputes the chunk's K states from its saved start, runs the adjoint
recurrence over them, and turns it into input gradients with a few chunk-wide einsums. Peak extra
memory is a handful of (K, batch, d_inner, d_state) tensors instead of (L, ...).

Adjoint of h_t = a_t * h_{t-1} + b_t (a_t = exp(delta_t A), b_t = delta_t B_t u_t), y_t = C_t.h_t:

    g_t = dy_t C_t + a_{t+1} g_{t+1}             (g_t = dLoss/dh_t; g_L-1 starts from the last
                                                  state's gradient)
    dLoss/da_t = g_t h_{t-1},   dLoss/db_t = g_t,   dLoss/dC_t = sum_d dy_t h_t

Time runs along dim 0 inside (tensors are (L, batch, ...)) so each step's slice is contiguous.
Step loops iterate over ``unbind`` views: indexing ``x[:, t]`` in a loop is very slow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def default_chunk(L: int) -> int:
    return max(1, math.ceil(math.sqrt(L)))


def _chunk_states(h0, u, delta, A, B):
    """States of one chunk. h0 (b, d, n); u, delta (k, b, d); B (k, b, n); A (d, n).

    Returns H (k, b, d, n) with H[t] = h at step t, and the decays a (k, b, d, n).
    """
    a = torch.exp(delta[..., None] * A)  # (k, b, d, n)
    H = (delta * u)[..., None] * B[:, :, None, :]  # b_t, overwritten in place by h_t
    h = h0
    for a_t, H_t in zip(a.unbind(0), H.unbind(0), strict=True):
        H_t.addcmul_(a_t, h)  # h_t = b_t + a_t * h_{t-1}
        h = H_t
    return H, a


class _ScanCore(torch.autograd.Function):
    """y (L, b, d), h_last (b, d, n) = scan(u, delta (L, b, d), A (d, n), B, C (L, b, n))."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        L, b, d = u.shape
        h = u.new_zeros(b, d, A.shape[1])
        starts, ys = [], []
        for s in range(0, L, chunk):
            e = min(s + chunk, L)
            starts.append(h)
            H, _ = _chunk_states(h, u[s:e], delta[s:e], A, B[s:e])
            ys.append(torch.einsum("kbdn,kbn->kbd", H, C[s:e]))
            h = H[-1].clone()  # a clone, so the chunk's H can be freed
        ctx.chunk = chunk
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts))
        return torch.cat(ys), h

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, starts = ctx.saved_tensors
        chunk, L = ctx.chunk, u.shape[0]
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(A)
        carry = dlast if dlast is not None else torch.zeros_like(starts[0])  # a_{t+1} g_{t+1}
        for c in reversed(range(len(starts))):
            s = c * chunk
            e = min(s + chunk, L)
            u_c, delta_c, B_c, C_c, dy_c = u[s:e], delta[s:e], B[s:e], C[s:e], dy[s:e]
            H, a = _chunk_states(starts[c], u_c, delta_c, A, B_c)
            dC[s:e] = torch.einsum("kbdn,kbd->kbn", H, dy_c)
            # adjoint recurrence, last step of the chunk first
            G = dy_c[..., None] * C_c[:, :, None, :]  # (k, b, d, n): dy_t C_t
            G[-1] += carry
            Gs, As = G.unbind(0), a.unbind(0)
            for t in range(e - s - 2, -1, -1):
                Gs[t].addcmul_(As[t + 1], Gs[t + 1])
            carry = As[0] * Gs[0]
            # dLoss/d(a_t) * a_t * h_{t-1}: the part of the gradient that flows through the decay
            X = G * a
            X[1:] *= H[:-1]
            X[0] *= starts[c]
            ddelta_c = torch.einsum("kbdn,dn->kbd", X, A)
            dA += torch.einsum("kbdn,kbd->dn", X, delta_c)
            GB = torch.einsum("kbdn,kbn->kbd", G, B_c)  # dLoss/d(delta_t u_t)
            ddelta[s:e] = ddelta_c + GB * u_c
            du[s:e] = GB * delta_c
            dB[s:e] = torch.einsum("kbdn,kbd->kbn", G, delta_c * u_c)
        return du, ddelta, dA, dB, dC, None


def selective_scan_fused(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False, chunk_size=None,
):  # fmt: skip
    """Same signature and result as ``selective_scan_reference`` (see there for shapes), with
    backward memory O(L/K + K) states instead of O(L). ``chunk_size`` defaults to ceil(sqrt(L))."""
    dtype = u.dtype
    if dtype in (torch.float16, torch.bfloat16):  # accumulate the recurrence in float32
        u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias[:, None].to(delta.dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    L = u.shape[-1]
    chunk = int(chunk_size or default_chunk(L))
    y, last = _ScanCore.apply(
        u.permute(2, 0, 1).contiguous(),  # (L, b, d)
        delta.permute(2, 0, 1).contiguous(),
        A.to(u.dtype).contiguous(),
        B.permute(2, 0, 1).to(u.dtype).contiguous(),  # (L, b, n)
        C.permute(2, 0, 1).to(u.dtype).contiguous(),
        chunk,
    )
    out = y.permute(1, 2, 0)  # (b, d, L)
    if D is not None:
        out = out + u * D[:, None].to(u.dtype)
    if z is not None:
        out = out * F.silu(z.to(out.dtype))
    out = out.to(dtype)
    return (out, last) if return_last_state else out
