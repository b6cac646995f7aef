"""Band-split encoder: each band's complex bins -> one N-dim feature per frame."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from bsmamba.norms import build_norm


class BandSplit(nn.Module):
    """Per band: a norm over its 2*width real values, then Linear(2*width -> dim).

    spec: complex (B, F, T) with F = sum(widths) -> features (B, K, T, dim), K = len(widths).
    ``norm="groupnorm"`` (published BSRNN): GroupNorm(1, 2*width) over the band's values and all
    frames of the utterance; ``"layernorm"``: over each frame's values alone.
    """

    def __init__(self, widths: list[int], dim: int, norm: str = "groupnorm"):
        super().__init__()
        self.widths = list(widths)
        self.norms = nn.ModuleList(build_norm(norm, 2 * w) for w in self.widths)
        self.projs = nn.ModuleList(nn.Linear(2 * w, dim) for w in self.widths)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = torch.view_as_real(spec)  # (B, F, T, 2): real and imaginary parts
        out = []
        for band, norm, proj in zip(
            x.split(self.widths, dim=1), self.norms, self.projs, strict=True
        ):
            band = rearrange(band, "b w t c -> b t (w c)")  # w: bins of the band, c: re/im
            out.append(proj(norm(band)))  # (B, T, dim)
        return torch.stack(out, dim=1)  # (B, K, T, dim)
