"""How mixers are arranged over the (bands, frames) grid of features (B, K, T, N).

    intra: per block, one pass over time T within each band (bands folded into the batch)
    dual:  per block, a pass over time, then a pass across the K bands (frames into the batch)

Every pass is pre-norm and residual: x = x + mixer(LayerNorm(x)).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from bsmamba.sequence import get_mixer

LAYOUTS = ("intra", "dual")


class _Pass(nn.Module):
    """One residual, pre-norm mixer pass along ``axis`` of (B, K, T, N)."""

    def __init__(self, mixer: str, dim: int, axis: str, **options):
        super().__init__()
        self.axis = axis
        self.norm = nn.LayerNorm(dim)
        self.mixer = get_mixer(mixer, dim, axis=axis, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if self.axis == "time":
            seq = rearrange(x, "b k t n -> (b k) t n")
            out = self.mixer(self.norm(seq))
            return x + rearrange(out, "(b k) t n -> b k t n", b=B)
        seq = rearrange(x, "b k t n -> (b t) k n")
        out = self.mixer(self.norm(seq))
        return x + rearrange(out, "(b t) k n -> b k t n", b=B)


class Block(nn.Module):
    """One layout block: a time pass (intra), or a time pass then a band pass (dual)."""

    def __init__(self, layout: str, mixer: str, dim: int, **options):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
        axes = ["time"] if layout == "intra" else ["time", "band"]
        self.passes = nn.Sequential(*[_Pass(mixer, dim, a, **options) for a in axes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.passes(x)


class Layout(nn.Module):
    """``num_layers`` blocks over (B, K, T, N) -> (B, K, T, N).

    ``checkpointing=True`` recomputes each block's activations in backward (less memory, ~1/3
    more compute); it only acts while gradients are being recorded.
    """

    def __init__(
        self,
        layout: str,
        mixer: str,
        dim: int,
        num_layers: int,
        checkpointing: bool = False,
        **options,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.checkpointing = checkpointing
        self.blocks = nn.ModuleList(Block(layout, mixer, dim, **options) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x
