"""Peak memory of one training step, predicted without running it.

The step runs on ``meta`` tensors (no data, no compute) under a ``LiveBytes`` dispatch tracker,
which also tells which layers hold the bytes at the peak. The meta LSTM is the unfused per-step
loop, not oneDNN's kernel, so each LSTM call gets a correction measured on small real probes,
scaled with its rows x frames and kept alive in the trace exactly as long as the LSTM's saved
tensors (a "ghost" meta tensor). A CUDA figure on a CPU-only torch is an estimate with its
assumptions listed, never "traced".
"""

from __future__ import annotations

import math
import time
from functools import cache
from typing import Any

import torch
from torch import nn

from bsmamba.memory.measure import _cpu_held
from bsmamba.memory.step import StepOptions, build, check_device, extras, make_batch, step_loss
from bsmamba.memory.tracker import LiveBytes
from bsmamba.units import fmt_bytes

# CUDA estimate assumptions (printed with every CUDA estimate made without a GPU).
CUDA_CONTEXT_BYTES = 500 * 2**20  # driver + kernels: outside the allocator, but on the card
CUBLAS_WORKSPACE_BYTES = 8 * 2**20 + 8 * 2**20  # one handle's workspace, cuBLAS and cuBLASLt
CUDA_BLOCK = 512  # the caching allocator rounds every request up to 512 bytes


def predict(
    model_kwargs: dict[str, Any],
    batch_size: int,
    segment_s: float,
    device: str = "cpu",
    top: int = 8,
    options: StepOptions | None = None,
) -> dict[str, Any]:
    """Trace one training step on meta tensors and account every tensor alive at its peak.

    ``options``: what the run trains beside the generator (``StepOptions``). Returns
    ``peak_bytes`` (CPU: traced + LSTM correction; CUDA: that, rounded as the caching
    allocator does, + cuBLAS workspace), the ``breakdown`` by category in bytes, the ``top``
    layers by activation bytes at the peak, ``lstm_correction_bytes`` and ``assumptions``.
    """
    device = check_device(device)
    model = build(model_kwargs).to("meta")
    lstms = [m for m in model.modules() if isinstance(m, nn.LSTM)]
    rates = {m: _lstm_bytes_per_row_frame(_lstm_key(m)) for m in lstms}  # real probes, untraced
    disc, average = extras(model, options)
    params = [*model.parameters(), *(disc.parameters() if disc is not None else ())]
    # Adam's two moments per parameter, as a steady-state step finds them. The Adam step itself
    # is not traced (slow on meta, and never the peak: activations are gone by then); its
    # transient is added below as one parameter-sized temporary (the largest single tensor on
    # CPU; CUDA's multi-tensor Adam makes one for all parameters at once).
    moments = [torch.zeros_like(p) for p in params for _ in range(2)]
    noisy, clean = make_batch(model, batch_size, segment_s, "meta")
    tracker = LiveBytes()
    ghosts: list[int] = []  # tracker records of the LSTM corrections
    t0 = time.perf_counter()
    with tracker:
        buffers = [*model.buffers(), *(disc.buffers() if disc is not None else ())]
        tracker.track([*params, *buffers, *average], "parameters")
        tracker.track(moments, "optimizer_state")
        tracker.track([noisy, clean], "batch")
        tracker.watch(model)  # before the ghost hooks, so ghosts are owned by their LSTM
        if disc is not None:
            tracker.watch(disc, "discriminator.")
        hooks = [m.register_forward_pre_hook(_ghost_hook(rates[m], tracker, ghosts)) for m in lstms]
        tracker.phase = "loss"
        loss = step_loss(model, noisy, clean, disc)
        tracker.phase = "backward"
        loss.backward()
        tracker.label([p.grad for p in params], "gradients")
        for h in hooks:
            h.remove()
    trace_s = time.perf_counter() - t0
    sizes = [p.numel() * p.element_size() for p in params]
    adam_temp = sum(sizes) if device == "cuda" else max(sizes, default=0)
    at_step = tracker.live_bytes + adam_temp  # params + moments + grads + batch + temporary

    breakdown = {f"{k}_bytes": v for k, v in tracker.breakdown().items()}
    top_layers = tracker.by_owner(top)
    traced = tracker.peak_bytes
    at_peak = [tracker.records[i] for i in ghosts]
    correction = sum(r.nbytes for r in at_peak if r.t_alloc <= tracker.peak_clock < r.t_free)
    if at_step > traced:  # tiny activations: the optimizer step is the peak
        breakdown = {f"{k}_bytes": v for k, v in tracker.breakdown(tracker.clock).items()}
        breakdown["activations_bytes"] += adam_temp
        traced, correction = at_step, 0
    assumptions: list[str] = []
    if correction:
        assumptions.append(
            f"LSTM: +{fmt_bytes(correction)} alive at the peak from a measured correction "
            "(oneDNN keeps gate workspaces the meta trace does not see)"
        )
    peak = traced
    if device == "cuda":
        peak, more = _cuda_estimate(tracker, traced, has_lstm=bool(lstms))
        assumptions = more + assumptions
    return {
        "peak_bytes": int(peak),
        "traced_bytes": int(tracker.peak_bytes - correction),
        "lstm_correction_bytes": int(correction),
        "breakdown": breakdown,
        "top_layers": [{"layer": n, "bytes": b} for n, b in top_layers],
        "trace_time_s": trace_s,
        "assumptions": assumptions,
        "estimate": device == "cuda" and not torch.cuda.is_available(),
    }


class _Hold(torch.autograd.Function):
    """Identity on ``x`` that keeps ``ghost`` saved until the backward pass reaches it."""

    @staticmethod
    def forward(ctx, x, ghost):
        ctx.save_for_backward(ghost)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _ghost_hook(rate: float, tracker: LiveBytes, ghosts: list[int]):
    """A forward pre-hook that gives an LSTM call its measured extra bytes as a meta tensor.

    The ghost is saved for backward on the LSTM's input, so it lives exactly as long as the
    LSTM's own saved tensors: through the forward, until the LSTM's backward is done; under
    activation checkpointing it is dropped and re-made on recompute, like the real workspace.
    """

    def hook(module: nn.LSTM, args):
        x = args[0]
        if not (torch.is_grad_enabled() and x.requires_grad):
            return None  # inference: oneDNN keeps no workspace either
        rows, frames = _rows_frames(module, x)
        ghost = torch.empty(int(rate * rows * frames), dtype=torch.uint8, device=x.device)
        ghosts.append(tracker.index_of(ghost))
        return (_Hold.apply(x, ghost), *args[1:])

    return hook


def _cuda_estimate(tracker: LiveBytes, traced: int, has_lstm: bool) -> tuple[int, list[str]]:
    alive = tracker._at_peak()
    rounding = sum(math.ceil(r.nbytes / CUDA_BLOCK) * CUDA_BLOCK - r.nbytes for r in alive)
    peak = traced + rounding + CUBLAS_WORKSPACE_BYTES
    return peak, [
        "CUDA figure is an estimate from a meta trace, not a CUDA run",
        f"allocator: every block rounded up to {CUDA_BLOCK} B (allocated, not reserved: "
        "fragmentation can reserve 5-20% more)",
        f"+ {fmt_bytes(CUBLAS_WORKSPACE_BYTES)} cuBLAS/cuBLASLt workspace",
        f"the peak excludes the CUDA context (about {fmt_bytes(CUDA_CONTEXT_BYTES)}, outside "
        "the allocator); the verdict adds it",
        "scan kernel: the traced backend (model.scan_backend); mamba-ssm's CUDA kernel "
        "keeps about as much (inputs + chunk states), the reference loop far more; the fused "
        "scan traces CPU-sized tiles (4 MiB), on a GPU its tiles reach 64 MiB",
    ] + (["LSTM: cuDNN's reserve space assumed equal to oneDNN's workspace"] if has_lstm else [])


def _rows_frames(lstm: nn.LSTM, x: torch.Tensor) -> tuple[int, int]:
    if x.dim() == 2:
        return 1, x.shape[0]
    return (x.shape[0], x.shape[1]) if lstm.batch_first else (x.shape[1], x.shape[0])


def _lstm_key(m: nn.LSTM) -> tuple:
    return (m.input_size, m.hidden_size, m.num_layers, m.bidirectional, m.proj_size, m.bias)


@cache
def _lstm_bytes_per_row_frame(key: tuple) -> float:
    """Bytes per (row x frame) a real CPU LSTM keeps for backward beyond what meta tracing sees.

    Measured on two small real probes (the slope removes per-call constants such as weight
    reordering), forward only: what stays alive after forward is what every layer holds at the
    step's peak.
    """
    input_size, hidden, layers, bidir, proj, bias = key

    def held(device: str, frames: int) -> int:
        torch.manual_seed(0)
        lstm = nn.LSTM(
            input_size, hidden, layers, bias, True, 0.0, bidir, proj_size=proj, device=device
        )
        x = torch.randn(8, frames, input_size, device=device, requires_grad=True)
        if device == "meta":
            tracker = LiveBytes()
            with tracker:
                out = lstm(x)  # keep the graph (and what it saves) alive while we read
                held = tracker.live_bytes
            del out
            return held
        return _cpu_held(lambda: lstm(x))

    short, long = 32, 96
    extra = [held("cpu", f) - held("meta", f) for f in (short, long)]
    return max(0.0, (extra[1] - extra[0]) / (8 * (long - short)))
