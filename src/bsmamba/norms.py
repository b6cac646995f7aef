"""The two normalisations of the framework, behind one name: ``groupnorm`` | ``layernorm``.

Every norm acts on a channels-last tensor (B, ..., C) and has a per-channel affine (C,):

    groupnorm: GroupNorm(1, C) as the published BSRNN uses it: statistics over everything of one
               utterance (all frames, bands and channels), so the output at frame t depends on
               the whole utterance: not causal, but level-invariant per utterance.
    layernorm: LayerNorm(C): statistics over the C channels of each frame (and band) alone:
               causal, what a streaming configuration needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("groupnorm", "layernorm")


class UtteranceNorm(nn.Module):
    """GroupNorm(1, C) on channels-last input: (B, ..., C) -> (B, ..., C).

    Equal to ``nn.GroupNorm(1, C)`` applied to the channels-first view (same statistics, biased
    variance, eps 1e-5, parameters ``weight`` and ``bias`` of shape (C,)), without the transposes:
    a layer norm over all non-batch dims, then the per-channel affine.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[1:], eps=self.eps) * self.weight + self.bias


def build_norm(name: str, channels: int) -> nn.Module:
    """A norm over channels-last (B, ..., channels) input by name (groupnorm | layernorm)."""
    if name not in NORMS:
        raise ValueError(f"unknown norm {name!r}; valid norms: {', '.join(NORMS)}")
    return UtteranceNorm(channels) if name == "groupnorm" else nn.LayerNorm(channels)
