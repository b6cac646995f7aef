"""BSRNN's recurrent mixer: an LSTM of hidden 2N, then Linear back to N."""

from __future__ import annotations

import torch
from torch import nn

from bsmamba.sequence.fastlinear import linear
from bsmamba.sequence.hooks import watched

# Without gradients a long batch (a band pass: one row per frame) runs in chunks of at most this
# many rows, whose gates stay in cache: torch's LSTM (64 -> 128, both ways) over 30 steps x 1251
# rows, one thread, ad-hoc timing (min of 5, script not kept): 249 ms whole, 203 / 197 / 191 /
# 255 ms in chunks of 64 / 128 / 256 / 512 rows. A time pass (30 rows an utterance) is one chunk.
CHUNK_ROWS = 256


class LSTMMixer(nn.Module):
    """(B, L, dim) -> (B, L, dim): LSTM(dim -> 2*dim, optionally both ways) + Linear to dim.

    BSRNN runs it unidirectional over time (causal) and bidirectional across bands.
    """

    def __init__(self, dim: int, bidirectional: bool = False):
        super().__init__()
        self.lstm = nn.LSTM(dim, 2 * dim, batch_first=True, bidirectional=bidirectional)
        self.proj = nn.Linear(2 * dim * (2 if bidirectional else 1), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.proj(self.lstm(x)[0])
        return self.time_major(x.transpose(0, 1)).transpose(0, 1)

    def time_major(self, x: torch.Tensor) -> torch.Tensor:
        """(L, batch, dim) -> (L, batch, dim) without gradients: the layout's inference path.

        The batch-first LSTM transposes its input to time-major for oneDNN, so handing it
        ``x.transpose(0, 1)`` costs no copy, and a band pass's (K, B*T, N) is a view of the
        features: no transpose on either side (bsrnn, 10 s, one thread: ~3 % less time than the
        batch-first path, ad-hoc A/B not kept). A long batch runs in chunks of at most
        ``CHUNK_ROWS`` rows."""
        B = x.shape[1]
        if B <= CHUNK_ROWS:
            return self._mix(x)
        c = -(-B // CHUNK_ROWS)  # c chunks of about equal size
        return torch.cat([self._mix(part) for part in x.split(-(-B // c), dim=1)], dim=1)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:  # time-major (L, batch, dim)
        out = self.lstm(x.transpose(0, 1))[0].transpose(0, 1)
        p = self.proj
        if watched(p):
            return p(out)  # hooks (MAC counting) see the layer called
        return linear(out, p.weight, p.bias)  # oneDNN without gradients (fastlinear)

    def init_state(self, batch: int, device=None, dtype=torch.float32):
        """Zero states h, c (1, batch, 2*dim) for ``step``: where ``forward`` starts."""
        h = torch.zeros(1, batch, self.lstm.hidden_size, device=device, dtype=dtype)
        return h, h.clone()

    def step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """The next L steps of a unidirectional sequence (streaming): x (B, L, dim), the LSTM
        states h, c (1, B, 2*dim) after the previous steps (zeros at the start) -> (y (B, L,
        dim), h, c). Chained calls equal ``forward`` on the whole sequence."""
        if self.lstm.bidirectional:
            raise ValueError("a bidirectional LSTM reads the future: it cannot step")
        out, (h, c) = self.lstm(x, (h, c))
        return self.proj(out), h, c
