"""A memory-lean selective scan in pure PyTorch: what the CUDA kernel does, on any device.

Autograd through a step loop keeps (batch, d_inner, L, d_state) tensors alive for backward: at
the study shape that is hundreds of MB per block. Here a custom autograd Function saves only the
inputs plus the state h at the start of every chunk of K ~ sqrt(L) steps. Backward walks the
chunks last to first, recomputes the chunk's K states from its saved start, runs the adjoint
recurrence over them, and turns it into input gradients with a few chunk-wide reductions. Peak
extra memory is a handful of (K, batch, d_inner, d_state) tensors instead of (L, ...).

Adjoint of h_t = a_t * h_{t-1} + b_t (a_t = exp(delta_t A), b_t = delta_t B_t u_t), y_t = C_t.h_t:

    g_t = dy_t C_t + a_{t+1} g_{t+1}             (g_t = dLoss/dh_t; g_L-1 starts from the last
                                                  state's gradient)
    dLoss/da_t = g_t h_{t-1},   dLoss/db_t = g_t,   dLoss/dC_t = sum_d dy_t h_t

Time runs along dim 0 inside (tensors are (L, batch, ...)) so each step's slice is contiguous.
Step loops iterate over ``unbind`` views: indexing ``x[:, t]`` in a loop is very slow.
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Cap on K, chosen on a busy 2-core machine where 24 steps ran ~2x slower than 16 (cache spill);
# a later rerun there (benchmarks/scan.py --threads 1 --variants fused, load ~3.5) put 24 and 16
# within run-to-run noise, so the cap is not shown to matter much either way.
MAX_CHUNK = 16


def default_chunk(L: int) -> int:
    """K = ceil(sqrt(L)) balances saved states (L/K) against chunk buffers (K), capped."""
    return max(1, min(math.ceil(math.sqrt(L)), MAX_CHUNK))


def _prologue(u, delta, A, B):
    """Decays a_t = exp(delta_t A) and inputs b_t = delta_t u_t B_t of one chunk.

    u, delta (k, b, d); A (d, n); B (k, b, n) -> a, b (k, b, d, n).
    """
    return torch.exp(delta[..., None] * A), (delta * u)[..., None] * B[:, :, None, :]


def _run_states(h0, a, H):
    """h_t = a_t h_{t-1} + b_t in place: H holds b_t on entry and h_t on return."""
    h = h0
    for a_t, H_t in zip(a.unbind(0), H.unbind(0), strict=True):
        H_t.addcmul_(a_t, h)
        h = H_t
    return H


def _epilogue(G, a, H, h0, u, delta, A, B):
    """Input gradients of one chunk from the adjoint g_t (G) and the states h_t (H).

    Returns du, ddelta (k, b, d), dA (d, n), dB (k, b, n). In place on G's product; matmul and
    vecdot reductions (einsum picks slow permute + bmm paths for these on CPU).
    """
    X = G * a  # g_t a_t h_{t-1}: the part of the gradient that flows through the decay
    X[1:] *= H[:-1]
    X[0] *= h0
    dA = (X.flatten(0, 1) * delta.flatten(0, 1)[..., None]).sum(0)
    GB = torch.linalg.vecdot(G, B[:, :, None, :])  # dLoss/d(delta_t u_t)
    ddelta = torch.linalg.vecdot(X, A) + GB * u
    dB = ((delta * u).unsqueeze(-2) @ G).squeeze(-2)
    return GB * delta, ddelta, dA, dB


def _epilogue_fusable(G, a, H, h0, u, delta, A, B):
    """``_epilogue`` as plain elementwise ops and sums, which torch.compile fuses."""
    X = G * a * torch.cat([h0[None], H[:-1]])
    GB = (G * B[:, :, None, :]).sum(-1)
    ddelta = (X * A).sum(-1) + GB * u
    dB = ((delta * u)[..., None] * G).sum(2)
    return GB * delta, ddelta, (X * delta[..., None]).sum((0, 1)), dB


def _chunk_backward(h0, u, delta, A, B, C, dy, carry, kernels):
    """Gradients of one chunk (shapes as ``_prologue``; h0, carry (b, d, n); dy (k, b, d)).

    ``carry`` is a_{t+1} g_{t+1} flowing in from the chunk after. Returns du, ddelta, dA, dB,
    dC and the carry for the chunk before.
    """
    prologue, epilogue = kernels
    a, H = prologue(u, delta, A, B)
    H = _run_states(h0, a, H)  # recompute the chunk's states from its saved start
    dC = (dy.unsqueeze(-2) @ H).squeeze(-2)  # sum_d dy_t h_t: (k, b, n)
    # adjoint recurrence g_t = dy_t C_t + a_{t+1} g_{t+1}, last step of the chunk first
    G = dy[..., None] * C[:, :, None, :]
    G[-1] += carry
    Gs, As = G.unbind(0), a.unbind(0)
    for t in range(len(Gs) - 2, -1, -1):
        Gs[t].addcmul_(As[t + 1], Gs[t + 1])
    carry = As[0] * Gs[0]
    return (*epilogue(G, a, H, h0, u, delta, A, B), dC, carry)


def _no_autocast(device: torch.device):
    if device.type in ("cpu", "cuda", "mps", "xpu") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class _ScanCore(torch.autograd.Function):
    """y (L, b, d), h_last (b, d, n) = scan(u, delta (L, b, d), A (d, n), B, C (L, b, n))."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        with _no_autocast(u.device):  # the recurrence stays in u's dtype
            return _ScanCore._forward(ctx, u, delta, A, B, C, chunk)

    @staticmethod
    def _forward(ctx, u, delta, A, B, C, chunk):
        L, b, d = u.shape
        prologue, _ = _kernels()
        h = u.new_zeros(b, d, A.shape[1])
        starts, ys = [], []
        for s in range(0, L, chunk):
            e = min(s + chunk, L)
            starts.append(h)
            H = _run_states(h, *prologue(u[s:e], delta[s:e], A, B[s:e]))
            ys.append(torch.linalg.vecdot(H, C[s:e, :, None, :]))  # C_t . h_t: (k, b, d)
            h = H[-1].clone()  # a clone, so the chunk's H can be freed
        ctx.chunk = chunk
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts))
        return torch.cat(ys), h

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dlast):
        saved = ctx.saved_tensors  # unpack once: activation checkpointing insists
        u = saved[0]
        with _no_autocast(u.device):
            dlast = None if dlast is None else dlast.to(u.dtype)
            return _ScanCore._backward(ctx, saved, dy.to(u.dtype), dlast)

    @staticmethod
    def _backward(ctx, saved, dy, dlast):
        u, delta, A, B, C, starts = saved
        chunk, L = ctx.chunk, u.shape[0]
        kernels = _kernels()
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(A)
        carry = dlast if dlast is not None else torch.zeros_like(starts[0])
        for c in reversed(range(len(starts))):
            s = c * chunk
            e = min(s + chunk, L)
            du[s:e], ddelta[s:e], dA_c, dB[s:e], dC[s:e], carry = _chunk_backward(
                starts[c], u[s:e], delta[s:e], A, B[s:e], C[s:e], dy[s:e], carry, kernels
            )
            dA += dA_c
        return du, ddelta, dA, dB, dC, None


# Inference (no input needs a gradient) skips the autograd Function: nothing is saved, so the
# scan can be tiled over batch as well as time. One tile's working set is a (K, batch tile, n, d)
# block of decays and states; ~256k elements (1 MiB in float32) keeps it in cache, and then every
# pass (exp, input, state update, readout) runs at cache speed. Measured on one thread at
# (30 x 128 x 12, L 501) and (501 x 128 x 12, L 30): 1.8x and 8x faster than the training path
# (ad-hoc timing on a busy 2-core machine; see docs/inference.md).
# A chunked "parallel" form (K x K decay matrices per (d, n)) costs K times more exp than this
# loop when A differs per state, as in Mamba-1, so it does not pay on CPU.
TILE_ELEMENTS = 1 << 18


def _scan_inference(u, delta, A, B, C, chunk=None):
    """y (L, b, d), h_last (b, d, n) as ``_ScanCore`` (shapes there), without autograd.

    The batch is cut into tiles of ``bt`` rows and time into chunks of ``K`` steps so that one
    (K, bt, n, d) block fits ``TILE_ELEMENTS``; ``chunk`` fixes K instead. States are kept
    (n, d), d innermost: broadcasting delta over n and B over d then runs along contiguous
    128-wide rows (with n = 12 innermost the broadcasts ran ~2x slower).
    """
    L, b, d = u.shape
    n = A.shape[1]
    bt = max(1, min(b, TILE_ELEMENTS // (d * n)))
    K = int(chunk) if chunk else max(1, min(L, TILE_ELEMENTS // (bt * d * n)))
    du = delta * u  # (L, b, d): the input's scale, delta_t u_t
    At = A.t().contiguous()  # (n, d)
    y, lasts = u.new_empty(L, b, d), []
    for i in range(0, b, bt):
        j = min(i + bt, b)
        h = u.new_zeros(j - i, n, d)
        for s in range(0, L, K):
            e = min(s + K, L)
            a = torch.mul(delta[s:e, i:j, None, :], At).exp_()  # decays (k, bt, n, d)
            H = torch.mul(du[s:e, i:j, None, :], B[s:e, i:j, :, None])  # inputs, then states
            for a_t, H_t in zip(a.unbind(0), H.unbind(0), strict=True):
                H_t.addcmul_(a_t, h)
                h = H_t
            # readout C_t . h_t as one batched (1, n) @ (n, d) product per (step, row)
            C_k = C[s:e, i:j].reshape(-1, 1, n)
            if bt == b:  # one tile: y[s:e] is contiguous, the product lands there directly
                torch.bmm(C_k, H.view(-1, n, d), out=y[s:e].view(-1, 1, d))
            else:
                y[s:e, i:j] = torch.bmm(C_k, H.view(-1, n, d)).view(e - s, j - i, d)
        lasts.append(h.transpose(1, 2).contiguous())  # (bt, d, n), a copy: frees the chunk buffer
    return y, lasts[0] if len(lasts) == 1 else torch.cat(lasts, 0)


# Optional torch.compile of the chunk-wide prologue and epilogue (fuses their elementwise passes;
# the step loops stay eager). Off unless BSMAMBA_SCAN_COMPILE=1; any failure falls back to eager
# for the rest of the process and is recorded for `bsmamba doctor`.
COMPILE_ENV = "BSMAMBA_SCAN_COMPILE"
_COMPILED: dict[str, object] = {}


def compile_requested() -> bool:
    return os.environ.get(COMPILE_ENV, "0").lower() in ("1", "true", "yes", "on")


def compile_status() -> tuple[bool, str]:
    """(active, why): whether the chunk kernels run under torch.compile in this process."""
    if not compile_requested():
        return False, f"off ({COMPILE_ENV} is not set to 1)"
    if "error" in _COMPILED:
        return False, f"requested but fell back to eager: {_COMPILED['error']}"
    if not _COMPILED:
        return True, "requested; compiles on the first scan (seconds)"
    return True, "on (torch.compile of the per-chunk prologue and epilogue)"


def _kernels():
    """(prologue, epilogue) to use: compiled when requested and working, else eager."""
    if not compile_requested() or "error" in _COMPILED:
        return _prologue, _epilogue
    if not _COMPILED:
        _COMPILED["prologue"] = _Guarded(torch.compile(_prologue, dynamic=False), _prologue)
        _COMPILED["epilogue"] = _Guarded(torch.compile(_epilogue_fusable, dynamic=False), _epilogue)
    return _COMPILED["prologue"], _COMPILED["epilogue"]


class _Guarded:
    """Call the compiled kernel; on its first failure switch this process to eager for good."""

    def __init__(self, compiled, eager):
        self.compiled, self.eager = compiled, eager

    def __call__(self, *args):
        if "error" not in _COMPILED:
            try:
                return self.compiled(*args)
            except Exception as e:  # noqa: BLE001
                _COMPILED["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        return self.eager(*args)


def selective_scan_fused(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False, chunk_size=None,
):  # fmt: skip
    """Same signature and result as ``selective_scan_reference`` (see there for shapes), with
    backward memory O(L/K + K) states instead of O(L). ``chunk_size`` defaults to
    min(ceil(sqrt(L)), 16). When no input needs a gradient the scan runs ``_scan_inference``
    (same numbers up to rounding order, 2x+ faster on CPU)."""
    dtype = u.dtype
    if dtype in (torch.float16, torch.bfloat16):  # accumulate the recurrence in float32
        u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    extras = (t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in extras)):
        out, last = _fused_inference(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size
        )
        out = out.to(dtype)
        return (out, last) if return_last_state else out
    if delta_bias is not None:
        delta = delta + delta_bias[:, None].to(delta.dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    L = u.shape[-1]
    chunk = int(chunk_size or default_chunk(L))
    core = (
        u.permute(2, 0, 1).contiguous(),  # (L, b, d)
        delta.permute(2, 0, 1).contiguous(),
        A.to(u.dtype).contiguous(),
        B.permute(2, 0, 1).to(u.dtype).contiguous(),  # (L, b, n)
        C.permute(2, 0, 1).to(u.dtype).contiguous(),
    )
    y, last = _ScanCore.apply(*core, chunk)
    out = y.permute(1, 2, 0)  # (b, d, L)
    if D is not None:
        out = out + u * D[:, None].to(u.dtype)
    if z is not None:
        out = out * F.silu(z.to(out.dtype))
    out = out.to(dtype)
    return (out, last) if return_last_state else out


def _fused_inference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size):
    """``selective_scan_fused`` without autograd: out (b, d, L), last (b, d, n)."""
    y, last = scan_time_major(
        *(t.permute(2, 0, 1) for t in (u, delta, B, C)),  # (L, b, .) views
        A, D, None if z is None else z.permute(2, 0, 1), delta_bias, delta_softplus, chunk_size
    )  # fmt: skip
    return y.permute(1, 2, 0), last


def scan_time_major(
    u, delta, B, C, A, D=None, z=None, delta_bias=None, delta_softplus=False, chunk_size=None
):  # fmt: skip
    """The selective scan without autograd on time-major inputs: u, delta, z (L, b, d); B, C
    (L, b, n); A (d, n); D, delta_bias (d,). Returns y (L, b, d) contiguous, last (b, d, n).

    For inference callers that already hold time-major activations (the Mamba block): no
    transposes. In place where nothing else can see the tensor: the bias is added in the copy
    that makes delta contiguous, D u and the gate fold into the scan's output.
    """
    u = u.contiguous()
    delta_c = torch.empty_like(u)
    if delta_bias is not None:
        torch.add(delta, delta_bias.to(u.dtype), out=delta_c)
    else:
        delta_c.copy_(delta)
    if delta_softplus:
        delta_c = F.softplus(delta_c)
    B, C = (x.to(u.dtype).contiguous() for x in (B, C))
    with _no_autocast(u.device):  # the recurrence and its readout stay in u's dtype
        y, last = _scan_inference(u, delta_c, A.to(u.dtype), B, C, chunk_size)
    if D is not None:
        y.addcmul_(u, D.to(u.dtype))
    if z is not None:
        y.mul_(F.silu(z.to(y.dtype)))
    return y, last
