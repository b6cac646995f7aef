"""Bidirectional Mamba: a forward block and a backward block on the flipped sequence.

    y_fwd = Mamba_f(x);  y_bwd = flip(Mamba_b(flip(x)))      (flip along L)
    merge="concat": Linear(2*dim -> dim)([y_fwd, y_bwd])    (as SEMamba's 1x1 merge)
    merge="add":    y_fwd + y_bwd                           (no extra parameters)

The backward block makes every output depend on the whole sequence, past and future.
"""

from __future__ import annotations

import torch
from torch import nn

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
