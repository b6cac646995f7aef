"""The selective scan as a plain sequential loop: the specification every backend must match.

Per batch b, channel d and state n (shapes of mamba-ssm's ``selective_scan_fn``):

    delta_t = softplus(delta_t + delta_bias)          (bias and softplus optional)
    h_t     = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B_t[n] * u_t,     h_{-1} = 0
    y_t     = sum_n C_t[n] * h_t[n]  +  D[d] * u_t
    out_t   = y_t * silu(z_t)                         (gate optional)

u, delta, z: (batch, d_inner, L); A: (d_inner, d_state); B, C: (batch, d_state, L);
D, delta_bias: (d_inner,). Returns out (batch, d_inner, L) [, last state (batch, d_inner, d_state)].
It stores (batch, d_inner, L, d_state) tensors for backward: correct, simple and memory-hungry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False,
):  # fmt: skip
    dtype = u.dtype
    u, delta, A, B, C = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
                         for t in (u, delta, A, B, C))  # fmt: skip
    if delta_bias is not None:
        delta = delta + delta_bias[:, None].to(delta.dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (b, d, L, n) decay per step
    dBu = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # (b, d, L, n) input per step
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (b, d, n)
    ys = []
    for dA_t, dBu_t, C_t in zip(dA.unbind(2), dBu.unbind(2), C.unbind(2), strict=True):
        h = dA_t * h + dBu_t
        ys.append(torch.einsum("bdn,bn->bd", h, C_t))
    y = torch.stack(ys, dim=2)  # (b, d, L)
    out = y if D is None else y + u * D[:, None].to(u.dtype)
    if z is not None:
        out = out * F.silu(z.to(out.dtype))
    out = out.to(dtype)
    return (out, h) if return_last_state else out
