"""BSRNN's recurrent mixer: an LSTM of hidden 2N, then Linear back to N."""

from __future__ import annotations

import torch
from torch import nn


class LSTMMixer(nn.Module):
    """(B, L, dim) -> (B, L, dim): LSTM(dim -> 2*dim, optionally both ways) + Linear to dim.

    BSRNN runs it unidirectional over time (causal) and bidirectional across bands.
    """

    def __init__(self, dim: int, bidirectional: bool = False):
        super().__init__()
        self.lstm = nn.LSTM(dim, 2 * dim, batch_first=True, bidirectional=bidirectional)
        self.proj = nn.Linear(2 * dim * (2 if bidirectional else 1), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.lstm(x)[0])
