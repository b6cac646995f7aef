"""A memory-lean, cache-tiled selective scan in pure PyTorch: what the CUDA kernel does, on any
device.

Autograd through a step loop keeps (batch, d_inner, L, d_state) tensors alive for backward: at
the study shape that is hundreds of MB per block. Here a custom autograd Function saves only the
inputs plus the state h at the start of every chunk of K ~ sqrt(L) steps. Backward walks the
chunks last to first, recomputes the chunk's K states from its saved start, runs the adjoint
recurrence over them, and turns it into input gradients with a few chunk-wide reductions.

Adjoint of h_t = a_t * h_{t-1} + b_t (a_t = exp(delta_t A), b_t = delta_t B_t u_t), y_t = C_t.h_t:

    g_t = dy_t C_t + a_{t+1} g_{t+1}             (g_t = dLoss/dh_t; g_L-1 starts from the last
                                                  state's gradient)
    dLoss/da_t = g_t h_{t-1},   dLoss/db_t = g_t,   dLoss/dC_t = sum_d dy_t h_t

Layout, which decides the speed on CPU (every pass over the states is memory-bound):
- time runs along dim 0 (tensors are (L, batch, ...)), so each step's slice is contiguous, and
  step loops iterate over ``unbind`` views (indexing ``x[:, t]`` in a loop is very slow);
- states are stored (d_state, d_inner), d_inner innermost: broadcasting delta over states and B
  over channels then runs along contiguous 128-wide rows (~2x faster than d_state innermost);
- the work is cut into tiles of K steps x ``rows`` batch rows whose (K, rows, n, d) block of
  decays and states is about ``TILE_ELEMENTS``, so every pass over a tile (exp, input, state
  update, readout, and the adjoint's passes) reads what the previous one left in cache.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# K: chunk length of the training path; the saved states are L/K per row, the recomputed ones K.
MAX_CHUNK = 16

# One tile's (K, rows, d_state, d_inner) block. Ad-hoc timings (script not kept) on the 2-core
# development machine, 2 threads, forward + backward of one scan call at the study's band pass
# (L 30, 1506 rows) / time pass (L 251, 180 rows), d_inner 128, d_state 12: 64k elements
# 0.52 / 0.67 s, 256k 0.32 / 0.34 s, 1M-2M 0.26 / 0.26 s, 6-9M slower again (0.37 / 0.66 s).
# Untiled (the previous training path): 1.22 / 0.30 s.
TILE_ELEMENTS = 1 << 20
# On GPUs a tile is one kernel launch per op: small tiles would be launch-bound. 2**24 elements
# (64 MiB) make the study's shapes one tile each, as before tiling, while still bounding the
# temporaries at large batches (reasoned, not measured: no GPU in development). The meta device
# traces CPU steps (``bsmamba plan``), so it tiles as the CPU does.
TILE_ELEMENTS_GPU = 1 << 24


def default_chunk(L: int) -> int:
    """K = ceil(sqrt(L)) balances saved states (L/K) against recomputed ones (K), capped."""
    return max(1, min(math.ceil(math.sqrt(L)), MAX_CHUNK))


def _tile_rows(b: int, K: int, d: int, n: int, device: torch.device) -> int:
    budget = TILE_ELEMENTS if device.type in ("cpu", "meta") else TILE_ELEMENTS_GPU
    return max(1, min(b, budget // (K * d * n)))


# Inference (no gradient recorded) saves no chunk starts, so K only shapes the tile: the number of
# ops is about L * b * n * d / tile either way, and each step's update is one op over the tile's
# rows. So: as many rows as fit (all of them when they do, and the readout then writes straight
# into y), then as many steps as the budget leaves, at most INFER_MAX_CHUNK; tiles half the size
# of training's. A/B in one process, time.thread_time, one thread, min of 4 (scan_time_major
# with softplus, n 12, d 128, the sweep script not kept): time pass (L 1251, b 30) 86 -> 82 ms,
# band pass (L 30, b 1251) 73 -> 59 ms, both directions of a time pass (b 60) 195 -> 159 ms.
INFER_TILE_ELEMENTS = 1 << 19
INFER_MAX_CHUNK = 8


def _infer_tile(L: int, b: int, d: int, n: int, device: torch.device) -> tuple[int, int]:
    """(K, rows) of the no-grad scan's tiles."""
    if device.type not in ("cpu", "meta"):
        return default_chunk(L), _tile_rows(b, default_chunk(L), d, n, device)
    rows = max(1, min(b, INFER_TILE_ELEMENTS // (n * d)))
    return max(1, min(L, INFER_MAX_CHUNK, INFER_TILE_ELEMENTS // (rows * n * d))), rows


# exp(x) as exp2(x log2(e)): torch's exp2 ran ~4x faster than its exp on this CPU (an ad-hoc
# timing, 1.9M float32 elements, one thread: 0.28 ms against 1.25 ms); decays are most exps.
LOG2E = math.log2(math.e)


def _states(h0, delta, du, At2, B, a=None, H=None):
    """Decays a (k, r, n, d) and states H (k, r, n, d) of one tile from its start h0 (r, n, d).

    delta, du (k, r, d) are delta_t and delta_t u_t; At2 (n, d) is A^T log2(e); B (k, r, n).
    ``a`` and ``H``, when given, are (k, r, n, d) buffers to write them into.
    """
    a = torch.mul(delta[:, :, None, :], At2, out=a).exp2_()  # exp(delta_t A)
    H = torch.mul(du[:, :, None, :], B[:, :, :, None], out=H)  # inputs b_t, states below
    h = h0
    for a_t, H_t in zip(a.unbind(0), H.unbind(0), strict=True):
        H_t.addcmul_(a_t, h)
        h = H_t
    return a, H


def _bmm(x, y, k, r):
    """Batched (k*r) matrix product of two per-(step, row) operands, viewed back as (k, r, .)."""
    return torch.bmm(x, y).view(k, r, -1)


def _scan(u, delta, At, B, C, K, starts=None, rows=None):
    """y (L, b, d) and the last state (b, n, d) of the scan; shapes as ``_ScanCore``.

    When ``starts`` (L/K chunks, b, n, d) is given, each chunk's start state is stored in it.
    Tiles are K steps x ``rows`` rows (default: training's ``_tile_rows``).
    """
    L, b, d = u.shape
    n = At.shape[0]
    rows = rows or _tile_rows(b, K, d, n, u.device)
    du, At2 = delta * u, At * LOG2E
    y, last = u.new_empty(L, b, d), u.new_empty(b, n, d)
    # Every tile reuses three buffers: decays, and states in two that alternate (the next tile
    # starts from the last one's final state). A fresh tile each time cost page faults: a tile
    # is ~2 MB, beyond what malloc recycles, and CPU tensors have no caching allocator.
    abuf, Hbuf, Hnext = u.new_empty(3, min(K, L) * min(rows, b) * n * d).unbind(0)
    for i in range(0, b, rows):
        j = min(i + rows, b)
        h = u.new_zeros(j - i, n, d)
        for c, s in enumerate(range(0, L, K)):
            e = min(s + K, L)
            if starts is not None:
                starts[c, i:j] = h
            a, H = (x[: (e - s) * (j - i) * n * d].view(e - s, j - i, n, d) for x in (abuf, Hbuf))
            _states(h, delta[s:e, i:j], du[s:e, i:j], At2, B[s:e, i:j], a, H)
            h, Hbuf, Hnext = H[-1], Hnext, Hbuf
            # readout C_t . h_t: one (1, n) @ (n, d) product per (step, row); straight into y
            # when the tile's part of it is contiguous (all rows, or one step: the no-grad band
            # pass's tiles), where a product and a copy cost abl3's 10 s forward ~480 copies
            Ct, Hs, dst = C[s:e, i:j].reshape(-1, 1, n), H.view(-1, n, d), y[s:e, i:j]
            if dst.is_contiguous():
                torch.bmm(Ct, Hs, out=dst.view(-1, 1, d))
            else:
                dst.copy_(_bmm(Ct, Hs, e - s, j - i))
        last[i:j] = h
    return y, last


def _no_autocast(device: torch.device):
    if device.type in ("cpu", "cuda", "mps", "xpu") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class _ScanCore(torch.autograd.Function):
    """y (L, b, d), h_last (b, n, d) = scan(u, delta (L, b, d), At (n, d), B, C (L, b, n)).

    ``At`` is A transposed; delta already carries its bias and softplus. All contiguous.
    """

    @staticmethod
    def forward(ctx, u, delta, At, B, C, chunk):
        L, b, d = u.shape
        starts = u.new_empty(-(-L // chunk), b, At.shape[0], d)
        with _no_autocast(u.device):  # the recurrence stays in u's dtype
            y, last = _scan(u, delta, At, B, C, chunk, starts)
        ctx.chunk = chunk
        ctx.save_for_backward(u, delta, At, B, C, starts)
        return y, last

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dlast):
        saved = ctx.saved_tensors  # unpack once: activation checkpointing insists
        u = saved[0]
        with _no_autocast(u.device):
            dlast = None if dlast is None else dlast.to(u.dtype)
            return (*_backward(*saved, ctx.chunk, dy.to(u.dtype).contiguous(), dlast), None)


def _backward(u, delta, At, B, C, starts, K, dy, dlast):
    """du, ddelta (L, b, d), dAt (n, d), dB, dC (L, b, n) from dy (L, b, d), dlast (b, n, d)."""
    L, b, d = u.shape
    n = At.shape[0]
    rows = _tile_rows(b, K, d, n, u.device)
    du_in, At2 = delta * u, At * LOG2E
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dB, dC = torch.empty_like(B), torch.empty_like(C)
    dAt = torch.zeros_like(At)
    for i in range(0, b, rows):
        j = min(i + rows, b)
        r = j - i
        carry = None if dlast is None else dlast[i:j]  # a_{t+1} g_{t+1} from the chunk after
        for c in reversed(range(starts.shape[0])):
            s = c * K
            e = min(s + K, L)
            k = e - s
            h0, dl, uc, dyc = starts[c, i:j], delta[s:e, i:j], u[s:e, i:j], dy[s:e, i:j]
            a, H = _states(h0, dl, du_in[s:e, i:j], At2, B[s:e, i:j])  # recompute from h0
            torch.linalg.vecdot(H, dyc[:, :, None, :], out=dC[s:e, i:j])  # sum_d dy_t h_t
            # adjoint g_t = dy_t C_t + a_{t+1} g_{t+1}, last step of the chunk first
            G = torch.mul(C[s:e, i:j, :, None], dyc[:, :, None, :])
            if carry is not None:
                G[-1] += carry
            Gs, As = G.unbind(0), a.unbind(0)
            for t in range(k - 2, -1, -1):
                Gs[t].addcmul_(As[t + 1], Gs[t + 1])
            carry = As[0] * Gs[0]
            GB = _bmm(B[s:e, i:j].reshape(-1, 1, n), G.view(-1, n, d), k, r)  # dLoss/d(delta u)
            torch.linalg.vecdot(G, du_in[s:e, i:j, None, :], out=dB[s:e, i:j])
            X = G.mul_(a)  # g_t a_t h_{t-1}: the gradient through the decay, in place of G
            X[1:] *= H[:-1]
            X[0] *= h0
            torch.sum(torch.mul(X, At), 2, out=ddelta[s:e, i:j]).addcmul_(GB, uc)
            torch.mul(GB, dl, out=du[s:e, i:j])
            dAt += X.mul_(dl[:, :, None, :]).sum((0, 1))
    return du, ddelta, dAt, dB, dC


def selective_scan_fused(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False, chunk_size=None,
):  # fmt: skip
    """Same signature and result as ``selective_scan_reference`` (see there for shapes), with
    backward memory O(L/K + K) states instead of O(L). ``chunk_size`` (K) defaults to
    min(ceil(sqrt(L)), 16)."""
    out, last = scan_time_major(
        *(t.permute(2, 0, 1) for t in (u, delta, B, C)),  # (L, b, .) views
        A, D, None if z is None else z.permute(2, 0, 1), delta_bias, delta_softplus, chunk_size
    )  # fmt: skip
    out = out.permute(1, 2, 0)  # (b, d, L)
    return (out, last) if return_last_state else out


def scan_time_major(
    u, delta, B, C, A, D=None, z=None, delta_bias=None, delta_softplus=False, chunk_size=None
):  # fmt: skip
    """The selective scan on time-major inputs: u, delta, z (L, b, d); B, C (L, b, n); A (d, n);
    D, delta_bias (d,). Returns y (L, b, d) contiguous, last (b, d, n).

    For callers that hold time-major activations (the Mamba block): no transposes. Differentiable
    in every input; when no gradient is recorded nothing is saved and the bias add, D u and the
    gate run in place.
    """
    dtype = u.dtype
    if dtype in (torch.float16, torch.bfloat16):  # accumulate the recurrence in float32
        u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    u = u.contiguous()
    if delta_bias is not None:
        delta = delta + delta_bias.to(u.dtype)  # a new tensor: the caller's delta is untouched
    if delta_softplus:
        delta = F.softplus(delta)
    delta = delta.contiguous()
    B, C = (x.to(u.dtype).contiguous() for x in (B, C))
    At = A.to(u.dtype).t().contiguous()
    L, b, d = u.shape
    if grad:
        y, last = _ScanCore.apply(u, delta, At, B, C, int(chunk_size or default_chunk(L)))
    else:
        n = At.shape[0]
        K, rows = (int(chunk_size), None) if chunk_size else _infer_tile(L, b, d, n, u.device)
        with _no_autocast(u.device):  # the recurrence and its readout stay in u's dtype
            y, last = _scan(u, delta, At, B, C, K, rows=rows)
    if D is not None:
        y = torch.addcmul(y, u, D.to(u.dtype)) if grad else y.addcmul_(u, D.to(u.dtype))
    if z is not None:
        gate = F.silu(z.to(y.dtype))
        y = y * gate if grad else y.mul_(gate)
    return y.to(dtype), last.transpose(1, 2)
