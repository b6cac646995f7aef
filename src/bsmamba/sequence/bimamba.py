"""Bidirectional Mamba: a forward block and a backward block on the flipped sequence.

    y_fwd = Mamba_f(x);  y_bwd = flip(Mamba_b(flip(x)))      (flip along L)
    merge="concat": Linear(2*dim -> dim)([y_fwd, y_bwd])    (as SEMamba's 1x1 merge)
    merge="add":    y_fwd + y_bwd                           (no extra parameters)

The backward block makes every output depend on the whole sequence, past and future.
"""

from __future__ import annotations

import torch
from torch import nn

from bsmamba.sequence.fastlinear import linear
from bsmamba.sequence.hooks import watched
from bsmamba.sequence.mamba import Mamba

MERGES = ("concat", "add")


class BiMamba(nn.Module):
    """(B, L, dim) -> (B, L, dim); the two directions have separate weights."""

    def __init__(self, dim: int, merge: str = "concat", **mamba_kwargs):
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"unknown bimamba merge {merge!r}; valid merges: {', '.join(MERGES)}")
        self.merge = merge
        self.fwd = Mamba(dim, **mamba_kwargs)
        self.bwd = Mamba(dim, **mamba_kwargs)
        self.proj = nn.Linear(2 * dim, dim) if merge == "concat" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y_fwd = self.fwd(x)
        y_bwd = self.bwd(x.flip(1)).flip(1)
        if self.proj is None:
            return y_fwd + y_bwd
        return self.proj(torch.cat([y_fwd, y_bwd], dim=-1))

    def time_major(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` on time-major input: x (L, B, dim) -> (L, B, dim).

        Without gradients (and on the fused path), each direction's out_proj is folded into the
        merge: proj(cat(W_f g_f, W_b g_b)) = (P_f W_f) g_f + (P_b W_b) g_b + bias, two
        (d_inner -> dim) products instead of three, and no concatenation.
        """
        fwd, bwd = self.fwd, self.bwd
        if torch.is_grad_enabled() or not (fwd._fused() and bwd._fused()) or watched(self.proj):
            y_fwd, y_bwd = fwd.time_major(x), bwd.time_major(x.flip(0)).flip(0)
            if self.proj is None:
                return y_fwd + y_bwd
            return self.proj(torch.cat([y_fwd, y_bwd], dim=-1))
        w_fwd, w_bwd, bias = fwd.out_proj.weight, bwd.out_proj.weight, None
        if self.proj is not None:
            p_fwd, p_bwd = self.proj.weight.chunk(2, dim=1)
            w_fwd, w_bwd, bias = p_fwd @ w_fwd, p_bwd @ w_bwd, self.proj.bias
        y = linear(fwd._gated(x.contiguous()).to(x.dtype), w_fwd, bias)
        return y.add_(linear(bwd._gated(x.flip(0)).to(x.dtype), w_bwd).flip(0))
