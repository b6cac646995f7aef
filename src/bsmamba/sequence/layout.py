"""How mixers are arranged over the (bands, frames) grid of features (B, K, T, N).

    stacked: the published BSRNN order: num_layers time passes, then num_layers band passes
    dual:    per block, a pass over time, then a pass across the K bands
    intra:   per block, one pass over time T within each band (no band pass)

A time pass folds the bands into the batch and runs the mixer along T; a band pass folds the
frames into the batch and runs it along K. Every pass is pre-norm and residual:
x = x + mixer(norm(x)), with the norm of ``bsmamba.norms`` (published: GroupNorm(1, N) over the
whole utterance's (K, T, N)).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from bsmamba.norms import build_norm
from bsmamba.sequence import get_mixer

LAYOUTS = ("stacked", "dual", "intra")


def _blocks(layout: str, num_layers: int) -> list[list[str]]:
    """The axes of each block, in order (a block is also the unit of activation checkpointing)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    if layout == "stacked":
        return [["time"]] * num_layers + [["band"]] * num_layers
    return [["time", "band"] if layout == "dual" else ["time"]] * num_layers


class _Pass(nn.Module):
    """One residual, pre-norm mixer pass along ``axis`` of (B, K, T, N)."""

    def __init__(self, mixer: str, dim: int, axis: str, norm: str, **options):
        super().__init__()
        self.axis = axis
        self.norm = build_norm(norm, dim)
        self.mixer = get_mixer(mixer, dim, axis=axis, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        y = self.norm(x)
        inference = not (torch.is_grad_enabled() or torch.compiler.is_compiling())
        if inference and hasattr(self.mixer, "time_major"):
            return x + self._time_major(y, B)
        if self.axis == "time":
            out = self.mixer(rearrange(y, "b k t n -> (b k) t n"))
            return x + rearrange(out, "(b k) t n -> b k t n", b=B)
        out = self.mixer(rearrange(y, "b k t n -> (b t) k n"))
        return x + rearrange(out, "(b t) k n -> b k t n", b=B)

    def _time_major(self, y: torch.Tensor, B: int) -> torch.Tensor:
        """The mixer on time-major (L, batch, N), what Mamba's scan and oneDNN's LSTM want: one
        copy in, and a band pass's (K, B*T, N) is a plain view for one utterance. Inference
        only: training and the exporter's trace (``export_graph`` has its own passes) keep the
        module path."""
        if self.axis == "time":
            out = self.mixer.time_major(rearrange(y, "b k t n -> t (b k) n"))
            return rearrange(out, "t (b k) n -> b k t n", b=B)
        out = self.mixer.time_major(rearrange(y, "b k t n -> k (b t) n"))
        return rearrange(out, "k (b t) n -> b k t n", b=B)


class Layout(nn.Module):
    """The mixer passes of ``layout`` over (B, K, T, N) -> (B, K, T, N).

    ``checkpointing=True`` recomputes each block's activations in backward (less memory, ~1/3
    more compute); it only acts while gradients are being recorded.
    """

    def __init__(
        self,
        layout: str,
        mixer: str,
        dim: int,
        num_layers: int,
        norm: str = "groupnorm",
        checkpointing: bool = False,
        **options,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.checkpointing = checkpointing
        self.blocks = nn.ModuleList(
            nn.Sequential(*[_Pass(mixer, dim, axis, norm, **options) for axis in axes])
            for axes in _blocks(layout, num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x
