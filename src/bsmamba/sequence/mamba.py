"""The Mamba block (Gu & Dao, 2023) over a (B, L, dim) sequence, on any device.

    x -> in_proj -> [xs, z]                      each (B, d_inner, L), d_inner = expand * dim
    xs -> depthwise causal conv1d -> SiLU
    xs -> x_proj -> [dt (dt_rank), B (d_state), C (d_state)];  delta = softplus(dt_proj(dt))
    y = selective_scan(xs, delta, A = -exp(A_log), B, C, D) * SiLU(z)
    y -> out_proj -> (B, L, dim)

The scan is causal, so the block is too. The scan backend is chosen by ``bsmamba.scan``.
``step`` continues a sequence from carried states (streaming): the conv state holds the last
d_conv - 1 inputs of the conv, the SSM state the h of the recurrence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from bsmamba.scan import check_backend, choose_backend, selective_scan
from bsmamba.scan.fused import scan_time_major
from bsmamba.sequence.fastlinear import linear
from bsmamba.sequence.hooks import watched


class Mamba(nn.Module):
    """(B, L, dim) -> (B, L, dim). ``dt_rank=0`` means ceil(dim / 16)."""

    # With the fused scan, forward uses the layers' weights without calling the layers, unless
    # hooks watch them (MAC counting); memory tracers watch the block whole instead.
    bypasses_children = True

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int = 0,
        scan_backend: str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ):
        super().__init__()
        self.d_inner = expand * dim
        self.d_state, self.d_conv = d_state, d_conv
        self.dt_rank = dt_rank or math.ceil(dim / 16)
        self.scan_backend = check_backend(scan_backend)
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)

        # Standard Mamba initialisation: dt_proj keeps the variance of dt_rank inputs, and its
        # bias is softplus^-1 of dt ~ logUniform[dt_min, dt_max] so initial steps span 2 decades.
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real: A_n = -(n + 1), stored as its log so A stays negative (a stable decay).
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # (d_inner, d_state)
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused():
            return self._forward_time_major(x)
        # the module-by-module path, (B, d_inner, L) as mamba-ssm's kernel and the reference want
        L = x.shape[1]
        xs, z = rearrange(self.in_proj(x), "b l d -> b d l").chunk(2, dim=1)  # (B, d_inner, L)
        xs = F.silu(self.conv1d(xs)[..., :L])  # keep the first L outputs: causal
        dt, Bm, Cm = self.x_proj(rearrange(xs, "b d l -> b l d")).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        delta = rearrange(dt @ self.dt_proj.weight.T, "b l d -> b d l")  # bias added in the scan
        y = selective_scan(
            xs,
            delta,
            -torch.exp(self.A_log.float()),
            rearrange(Bm, "b l n -> b n l"),
            rearrange(Cm, "b l n -> b n l"),
            D=self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        return self.out_proj(rearrange(y, "b d l -> b l d"))

    def init_state(self, batch: int, device=None, dtype=torch.float32):
        """Zero states for ``step``: conv (batch, d_conv - 1, d_inner), ssm (batch, d_inner,
        d_state): what ``forward`` starts from (the conv's zero padding, h_-1 = 0)."""
        conv = torch.zeros(batch, self.d_conv - 1, self.d_inner, device=device, dtype=dtype)
        return conv, torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype)

    def step(self, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor):
        """The next L steps of a sequence: x (B, L, dim) and the states after the previous
        steps -> (y (B, L, dim), conv, ssm). Chained calls equal ``forward`` on the whole
        sequence (float rounding aside). The recurrence is the reference scan's, one step at a
        time: h = exp(delta A) h + delta B u, y = (C h + D u) * SiLU(z)."""
        L = x.shape[1]
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, d_inner)
        xp = torch.cat([conv, xs], dim=1)  # the carried inputs first: (B, d_conv - 1 + L, d)
        w = self.conv1d.weight[:, 0, :]  # (d_inner, d_conv); out_t = b + sum_j w_j xp_{t+j}
        xc = self.conv1d.bias + sum(xp[:, j : j + L] * w[:, j] for j in range(self.d_conv))
        xc = F.silu(xc)
        dt, Bm, Cm = self.x_proj(xc).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # (B, L, d_inner)
        A = -torch.exp(self.A_log.float())  # (d_inner, d_state)
        ys = []
        for t in range(L):
            h_in = (delta[:, t] * xc[:, t])[:, :, None] * Bm[:, t, None, :]  # (B, d, n)
            ssm = torch.exp(delta[:, t, :, None] * A) * ssm + h_in
            ys.append(torch.einsum("bdn,bn->bd", ssm, Cm[:, t]))
        y = (torch.stack(ys, dim=1) + xc * self.D) * F.silu(z)
        return self.out_proj(y), xp[:, L:], ssm

    def time_major(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` on time-major input: x (L, B, dim) -> (L, B, dim)."""
        if self._fused():
            return linear(self._gated(x.contiguous()).to(x.dtype), self.out_proj.weight)
        return self(x.transpose(0, 1)).transpose(0, 1)  # through __call__: hooks see it

    def _fused(self) -> bool:
        """Whether the time-major path runs: the fused scan, and no hooks on the layers (MAC
        counting, tracers), which the path bypasses (it calls in_proj and conv1d's weights)."""
        fused = choose_backend(self.A_log.device, self.scan_backend)[0] == "fused"
        return fused and not watched(*self.children())

    def _forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` for the fused scan, time-major throughout: the scan wants (L, B, d), and
        every (B, d, L) transpose of the module path is a full copy of a d_inner-wide tensor."""
        y = self._gated(x.transpose(0, 1).contiguous())  # (L, B, d_inner)
        return linear(y.to(x.dtype), self.out_proj.weight).transpose(0, 1)  # (B, L, dim)

    def _gated(self, xt: torch.Tensor) -> torch.Tensor:
        """The block before out_proj: contiguous xt (L, B, dim) -> y (L, B, d_inner), in the
        scan's dtype."""
        L, d = xt.shape[0], self.d_inner
        # two half-width products instead of one split: xs and z come out contiguous, and the
        # taps and SiLU below run ~3x faster on contiguous rows than on strided halves
        xs, z = (linear(xt, w) for w in self.in_proj.weight.split(d))  # (L, B, d_inner)
        # depthwise causal conv as d_conv shifted taps: out_t = b + sum_j w[-1-j] * xs_{t-j}
        w = self.conv1d.weight[:, 0, :]  # (d_inner, d_conv)
        xc = torch.addcmul(self.conv1d.bias, xs, w[:, -1])  # (L, B, d_inner)
        for j in range(1, min(self.d_conv, L)):
            xc[j:].addcmul_(xs[:-j], w[:, -1 - j])
        grad = torch.is_grad_enabled()
        xc = F.silu(xc, inplace=not grad)  # backward needs the input
        dt, Bm, Cm = linear(xc, self.x_proj.weight).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        if grad:
            delta, bias, gate = dt @ self.dt_proj.weight.T, self.dt_proj.bias.float(), z
        else:  # the bias inside the product, and the gate in place: fewer full-size temporaries
            delta, bias, gate = linear(dt, self.dt_proj.weight, self.dt_proj.bias), None, None
        y, _ = scan_time_major(
            xc,
            delta,
            Bm,
            Cm,
            -torch.exp(self.A_log.float()),
            D=self.D.float(),
            z=gate,
            delta_bias=bias,
            delta_softplus=True,
        )
        if gate is None:
            y = y.mul_(F.silu(z.to(y.dtype), inplace=True))
        return y
