"""Peak memory of one training step, measured and predicted: ``bsmamba plan``.

One step = forward_spectral, L1 loss on the spectrum, backward, Adam step, in steady state (the
Adam moments already exist; gradients are freed between steps). Its peak is the live tensor
bytes: parameters + gradients + optimizer state + activations + the batch.

- ``measure``: runs the step for real. CUDA: the caching allocator's ``max_memory_allocated``.
  CPU: the allocator events of ``torch.profiler(profile_memory=True)`` summed in order (every
  c10 allocation, kernel scratch included; process RSS would not see freed-and-reused memory).
- ``predict``: runs the same step on ``meta`` tensors (no data, no compute) under a
  ``LiveBytes`` dispatch tracker, which also tells which layers hold the bytes at the peak. The
  meta LSTM is the unfused per-step loop, not oneDNN's kernel, so each LSTM call gets a
  correction measured on small real probes, scaled with its rows x frames and kept alive in the
  trace exactly as long as the LSTM's saved tensors (a "ghost" meta tensor).
- A CUDA figure on a CPU-only torch is an estimate with its assumptions listed, never "traced".
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from functools import cache
from typing import Any

import torch
from torch import nn

from bsmamba import schema
from bsmamba.memory.tracker import LiveBytes
from bsmamba.units import fmt_bytes, parse_bytes

DEVICES = ("cpu", "cuda")

# CUDA estimate assumptions (printed with every CUDA estimate made without a GPU).
CUDA_CONTEXT_BYTES = 500 * 2**20  # driver + kernels: outside the allocator, but on the card
CUBLAS_WORKSPACE_BYTES = 8 * 2**20 + 8 * 2**20  # one handle's workspace, cuBLAS and cuBLASLt
CUDA_BLOCK = 512  # the caching allocator rounds every request up to 512 bytes


# ---------------------------------------------------------------------------------------------
# The step both paths run
# ---------------------------------------------------------------------------------------------
def _build(model_kwargs: dict[str, Any]) -> nn.Module:
    from bsmamba.model import BandSplitEnhancer

    return BandSplitEnhancer(**model_kwargs)


def _batch(model: nn.Module, batch_size: int, segment_s: float, device) -> tuple:
    """(noisy, clean), each (batch_size, segment_s * sample_rate) float32."""
    samples = int(round(segment_s * model.sample_rate))
    if batch_size < 1 or samples < 1:
        raise ValueError(f"batch size {batch_size} and segment {segment_s} s must be positive")
    noisy = torch.randn(batch_size, samples, device=device)
    return noisy, noisy * 0.5


def _loss(model: nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The training loss with its default weights (compressed RI + magnitude L1)."""
    from bsmamba.losses import enhancement_loss

    return enhancement_loss(model, noisy, clean).total


def _adam_with_state(model: nn.Module) -> torch.optim.Optimizer:
    """Adam whose moments exist already (steady state): one step with zero gradients."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: moments are created, parameters unchanged
    opt.zero_grad(set_to_none=True)
    return opt


def _nbytes(tensors) -> int:
    """Bytes of distinct storages among ``tensors``."""
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            seen[id(t.untyped_storage())] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _static(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, int]:
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {
        "parameters_bytes": _nbytes([*model.parameters(), *model.buffers()]),
        "optimizer_state_bytes": _nbytes(state),
    }


# ---------------------------------------------------------------------------------------------
# Measured
# ---------------------------------------------------------------------------------------------
def measure(
    model_kwargs: dict[str, Any],
    batch_size: int,
    segment_s: float,
    device: str = "cpu",
    warmup: bool = True,
) -> dict[str, Any]:
    """Run a real training step on ``device``; peak live bytes from the allocator.

    ``warmup`` runs one untracked step first, so lazy one-off allocations (kernel caches) and
    first-call slowness stay out. Returns ``peak_bytes``, ``step_time_s`` (of the tracked step;
    the CPU profiler slows it by a few tens of %), ``method`` and the static parts
    (``parameters_bytes``, ``optimizer_state_bytes``).
    """
    device = _check_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda needs a CUDA build of torch and a GPU; this torch has none")
    model = _build(model_kwargs).to(device)
    opt = _adam_with_state(model)
    noisy, clean = _batch(model, batch_size, segment_s, device)
    if warmup:
        _loss(model, noisy, clean).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    static = _static(model, opt)
    before = static["parameters_bytes"] + static["optimizer_state_bytes"]
    before += _nbytes([noisy, clean])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        _loss(model, noisy, clean).backward()
        opt.step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        peak, method = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        t0 = time.perf_counter()
        rise = _cpu_peak_rise(lambda: (_loss(model, noisy, clean).backward(), opt.step()))
        dt = time.perf_counter() - t0
        peak, method = before + rise, "torch.profiler allocator events (CPU)"
    return {"peak_bytes": int(peak), "step_time_s": dt, "method": method, **static}


def _cpu_peak_rise(fn) -> int:
    """Highest rise of allocated CPU bytes above the start while ``fn()`` runs."""
    events = _memory_events(fn)[1]
    events.sort(key=lambda e: e.start_ns())  # stable: same-time events keep their order
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


# ---------------------------------------------------------------------------------------------
# Predicted
# ---------------------------------------------------------------------------------------------
def predict(
    model_kwargs: dict[str, Any],
    batch_size: int,
    segment_s: float,
    device: str = "cpu",
    top: int = 8,
) -> dict[str, Any]:
    """Trace one training step on meta tensors and account every tensor alive at its peak.

    Returns ``peak_bytes`` (CPU: traced + LSTM correction; CUDA: that, rounded as the caching
    allocator does, + cuBLAS workspace), the ``breakdown`` by category in bytes, the ``top``
    layers by activation bytes at the peak, ``lstm_correction_bytes`` and ``assumptions``.
    """
    device = _check_device(device)
    model = _build(model_kwargs).to("meta")
    lstms = [m for m in model.modules() if isinstance(m, nn.LSTM)]
    rates = {m: _lstm_bytes_per_row_frame(_lstm_key(m)) for m in lstms}  # real probes, untraced
    params = list(model.parameters())
    # Adam's two moments per parameter, as a steady-state step finds them. The Adam step itself
    # is not traced (slow on meta, and never the peak: activations are gone by then); its
    # transient is added below as one parameter-sized temporary (the largest single tensor on
    # CPU; CUDA's multi-tensor Adam makes one for all parameters at once).
    moments = [torch.zeros_like(p) for p in params for _ in range(2)]
    noisy, clean = _batch(model, batch_size, segment_s, "meta")
    tracker = LiveBytes()
    ghosts: list[int] = []  # tracker records of the LSTM corrections
    t0 = time.perf_counter()
    with tracker:
        tracker.track([*params, *model.buffers()], "parameters")
        tracker.track(moments, "optimizer_state")
        tracker.track([noisy, clean], "batch")
        tracker.watch(model)  # before the ghost hooks, so ghosts are owned by their LSTM
        hooks = [m.register_forward_pre_hook(_ghost_hook(rates[m], tracker, ghosts)) for m in lstms]
        tracker.phase = "loss"
        loss = _loss(model, noisy, clean)
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


def _cpu_held(fn) -> int:
    """Bytes allocated and still alive (net) after ``fn()``, while its result is kept."""
    out, events = _memory_events(fn)
    del out
    return sum(e.nbytes() for e in events)


def _memory_events(fn) -> tuple[Any, list]:
    """Run ``fn()`` under the CPU profiler; its result and the allocator's ``[memory]`` events."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # kineto prints two "USDT ... profiler_start/stop" lines to fd 2
        prof.start()
    try:
        out = fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    return out, [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]


@contextlib.contextmanager
def _quiet_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    return device


# ---------------------------------------------------------------------------------------------
# The plan: both numbers and a verdict
# ---------------------------------------------------------------------------------------------
def plan(
    model_kwargs: dict[str, Any],
    batch_size: int,
    segment_s: float,
    budget: str | int = "24GiB",
    device: str = "cpu",
    measure: bool = True,
) -> dict[str, Any]:
    """Predict (and on a present device, measure) one training step's peak; judge the budget.

    The verdict uses the measured peak when there is one, else the prediction; on CUDA it adds
    the CUDA context, since the card must hold it too. Returns a JSON-ready dict:
    ``measured_peak_bytes`` (None when not measured), ``predicted_peak_bytes``, ``breakdown``,
    ``top_layers``, ``budget_bytes``, ``verdict`` ("fits" | "does_not_fit") and more.
    """
    device = _check_device(device)
    budget_bytes = parse_bytes(budget)
    pred = predict(model_kwargs, batch_size, segment_s, device)
    can_run = device == "cpu" or torch.cuda.is_available()
    meas = _measure(model_kwargs, batch_size, segment_s, device) if measure and can_run else None
    peak = meas["peak_bytes"] if meas else pred["peak_bytes"]
    needed = peak + (CUDA_CONTEXT_BYTES if device == "cuda" else 0)
    return {
        "preset": model_kwargs.get("preset"),
        "batch_size": batch_size,
        "segment_s": segment_s,
        "device": device,
        "measured_peak_bytes": meas["peak_bytes"] if meas else None,
        "predicted_peak_bytes": pred["peak_bytes"],
        "prediction_error": (pred["peak_bytes"] / meas["peak_bytes"] - 1) if meas else None,
        "needed_bytes": needed,
        "budget_bytes": budget_bytes,
        "verdict": "fits" if needed <= budget_bytes else "does_not_fit",
        "verdict_basis": "measured" if meas else "predicted",
        "estimate": pred["estimate"],
        "step_time_s": meas["step_time_s"] if meas else None,
        "measure_method": meas["method"] if meas else None,
        "breakdown": pred["breakdown"],
        "lstm_correction_bytes": pred["lstm_correction_bytes"],
        "top_layers": pred["top_layers"],
        "assumptions": pred["assumptions"],
    }


_measure = measure  # plan()'s ``measure`` flag shadows the function inside it


def max_batch(
    model_kwargs: dict[str, Any],
    segment_s: float,
    budget: str | int = "24GiB",
    device: str = "cpu",
    limit: int = 4096,
) -> dict[str, Any]:
    """Largest batch whose predicted step fits ``budget``: two predictions give the per-item
    slope; the candidate is then verified by predictions at exactly that batch (it fits) and
    one more (it does not), walking down or up as needed.

    Returns ``max_batch_size`` (0 when even batch 1 does not fit) and ``by_batch``: the
    predicted bytes (verdict basis, so with the CUDA context on CUDA) of every batch tried.
    """
    tried: dict[int, int] = {}
    best = _largest(model_kwargs, segment_s, parse_bytes(budget), device, limit, tried)
    return {"max_batch_size": best, "by_batch": {str(k): v for k, v in sorted(tried.items())}}


def _largest(kwargs, segment_s, budget_bytes: int, device: str, limit: int, tried: dict) -> int:
    """Largest batch fitting ``budget_bytes``; ``tried`` caches predictions (batch -> bytes)."""
    extra = CUDA_CONTEXT_BYTES if device == "cuda" else 0

    def fits(b: int) -> bool:
        if b not in tried:
            tried[b] = predict(kwargs, b, segment_s, device)["peak_bytes"] + extra
        return tried[b] <= budget_bytes

    if not fits(1):
        return 0
    fits(2)
    slope = max(1, tried[2] - tried[1])
    b = max(1, min(limit, 1 + (budget_bytes - tried[1]) // slope))
    while b > 1 and not fits(b):  # activations are nearly, not exactly, linear in the batch
        b = max(1, min(b - 1, int(b * budget_bytes / tried[b])))
    while b < limit and fits(b + 1):
        b += 1
    return int(b)


# Common GPU memory sizes (GiB): 11 (1080 Ti, 2080 Ti), 16 (V100, T4), 24 (3090, 4090, A10,
# L4), 40 (A100-40G), 80 (A100-80G, H100).
CARDS_GIB = (11, 16, 24, 40, 80)


def card_table(
    configs: dict[str, dict[str, Any]],
    segment_s: float,
    cards_gib: tuple[float, ...] = CARDS_GIB,
    device: str = "cuda",
) -> dict[str, dict[str, Any]]:
    """The largest training batch of every config (name -> model kwargs) on every card size.

    A trace costs time in proportion to the batch (about 1.3 s per item for abl3 at 2 s on one
    core), so large batches are not traced one by one: the peak is affine in the batch size
    (activations grow with it, parameters and optimizer state do not), and traces at batch 1
    and 4 give the line; batch 2 checks it (``line_error``: its relative distance from the
    line). On CUDA the context is added, an estimate without a GPU. Returns ``{name:
    {"by_card": {"24GiB": {"max_batch_size", "predicted_bytes"}}, "bytes_per_item",
    "fixed_bytes", "line_error", "device", "segment_s", "verdict_basis", "estimate"}}``.
    """
    device = _check_device(device)
    extra = CUDA_CONTEXT_BYTES if device == "cuda" else 0
    out: dict[str, dict[str, Any]] = {}
    for name, kwargs in configs.items():
        p = {b: predict(kwargs, b, segment_s, device)["peak_bytes"] + extra for b in (1, 2, 4)}
        slope = (p[4] - p[1]) / 3
        fixed = p[1] - slope
        by_card = {}
        for gib in cards_gib:
            b = max(0, int((gib * 2**30 - fixed) // slope)) if slope > 0 else 0
            by_card[f"{gib:g}GiB"] = {
                "max_batch_size": b,
                "predicted_bytes": int(fixed + slope * b) if b else None,
            }
        out[name] = {
            "by_card": by_card,
            "bytes_per_item": int(slope),
            "fixed_bytes": int(fixed),
            "line_error": abs(p[2] - (fixed + 2 * slope)) / p[2],
            "device": device,
            "segment_s": segment_s,
            "verdict_basis": "predicted",
            "estimate": device == "cuda" and not torch.cuda.is_available(),
        }
    return out


def card_configs(cfg) -> dict[str, dict[str, Any]]:
    """Every preset's model kwargs, and each Mamba one again at the plan's earlier settings (4
    layers, d_state 16: the ones that ran out of memory at batch 5), each with the model
    overrides of config ``cfg`` carried over (``config.with_preset``: stft, scan backend ...)."""
    from bsmamba import config
    from bsmamba.presets import EARLIER, PRESETS

    configs = {}
    for name in PRESETS:
        kwargs = config.model_kwargs(config.with_preset(cfg, name))
        configs[name] = kwargs
        if kwargs["mixer"] != "lstm":
            configs[_earlier_name(name)] = {**kwargs, **EARLIER}
    return configs


def _earlier_name(preset: str) -> str:
    from bsmamba.presets import EARLIER

    return f"{preset} earlier ({', '.join(f'{k}={v}' for k, v in EARLIER.items())})"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bsmamba import config

    config.add_config_arguments(parser, ["preset", "batch_size", "segment", "budget", "threads"])
    parser.add_argument("--device", choices=DEVICES, default=None, help="device the plan is for")
    parser.add_argument("--all", action="store_true", help="plan every preset in one table")
    parser.add_argument(
        "--max-batch", action="store_true", help="find the largest batch that fits the budget"
    )
    parser.add_argument(
        "--no-measure", action="store_true", help="predict only (skip the real step)"
    )
    parser.add_argument(
        "--cards",
        nargs="?",
        const=",".join(str(c) for c in CARDS_GIB),
        default=None,
        metavar="GIB,GIB,...",
        help="largest batch of --preset (every preset with --all), and at the plan's earlier "
        "settings, per card size in GiB (default "
        f"{','.join(str(c) for c in CARDS_GIB)}); predicted, on cuda unless --device",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (schema kind 'plan')")


def main(args: argparse.Namespace) -> int:
    import json

    from bsmamba import config
    from bsmamba.presets import PRESETS

    cfg = config.from_args(args)
    if args.print_config:
        print(config.to_yaml(cfg))
        return 0
    if cfg.train.threads > 0:
        torch.set_num_threads(int(cfg.train.threads))
    base = config.model_kwargs(cfg)
    if args.cards is not None:
        cards = tuple(_card_sizes(args.cards))
        from bsmamba.presets import EARLIER

        if args.all:
            configs = card_configs(cfg)
        else:  # --preset with its own overrides (e.g. model.d_state=8)
            configs = {cfg.model.preset: base}
            if base["mixer"] != "lstm" and any(base[k] != v for k, v in EARLIER.items()):
                configs[_earlier_name(cfg.model.preset)] = {**base, **EARLIER}
        table = card_table(configs, cfg.data.segment_s, cards, args.device or "cuda")
        if args.json:
            print(json.dumps(schema.document("plan", by_preset=table), indent=2))
        else:
            print(_render_cards(table, cards))
        return 0
    device = args.device or cfg.memory.device or "cpu"
    presets = list(PRESETS) if args.all else [cfg.model.preset]
    results: dict[str, Any] = {}
    for name in presets:
        kwargs = config.model_kwargs(config.with_preset(cfg, name))
        res = plan(
            kwargs,
            cfg.train.batch_size,
            cfg.data.segment_s,
            cfg.memory.budget,
            device,
            measure=not args.no_measure,
        )
        if args.max_batch:
            res["max_batch"] = max_batch(kwargs, cfg.data.segment_s, cfg.memory.budget, device)
        results[name] = res
    if args.json:
        print(json.dumps(schema.document("plan", by_preset=results), indent=2))
    else:
        print(_render(results))
    return 0


def _card_sizes(text: str) -> list[float]:
    try:
        sizes = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(x <= 0 for x in sizes):
        raise ValueError(f"--cards {text!r}: write card sizes in GiB, e.g. --cards 11,16,24,40,80")
    return sizes


def _render_cards(table: dict[str, dict], cards: tuple[float, ...]) -> str:
    first = next(iter(table.values()))
    device = first["device"]
    lines = [
        f"largest training batch per card (predicted on {device}"
        + (", an estimate: no CUDA here" if first["estimate"] else "")
        + (", CUDA context included" if device == "cuda" else "")
        + f"; {first['segment_s']} s segments; one step: forward, loss, backward, Adam; "
        "the peak's line in the batch from traces at batch 1 and 4)"
    ]
    width = max(len(n) for n in table) + 2
    head = f"{'preset':<{width}}" + "".join(f"{f'{c:g} GiB':>9}" for c in cards)
    lines.append(head + f"{'per item':>11}{'off line':>10}")
    for name, r in table.items():
        cells = [r["by_card"][f"{c:g}GiB"]["max_batch_size"] for c in cards]
        lines.append(
            f"{name:<{width}}"
            + "".join(f"{b:>9}" for b in cells)
            + f"{fmt_bytes(r['bytes_per_item']):>11}{100 * r['line_error']:>9.2f}%"
        )
    return "\n".join(lines)


def verdict_text(r: dict[str, Any]) -> str:
    """'fits on cuda (predicted 3.1 GiB, an estimate, vs budget 24.00 GiB)': the verdict with
    its device, budget and basis, as every place that prints a verdict should say it."""
    basis = r["verdict_basis"] + (", an estimate," if r.get("estimate") else "")
    return (
        f"{r['verdict'].replace('_', ' ')} on {r['device']} ({basis} "
        f"{fmt_bytes(r['needed_bytes'])} vs budget {fmt_bytes(r['budget_bytes'])})"
    )


def _render(results: dict[str, dict]) -> str:
    lines = []
    first = next(iter(results.values()))
    device = first["device"]
    lines.append(
        f"peak memory of one training step (forward, loss, backward, Adam) at batch "
        f"{first['batch_size']} x {first['segment_s']} s on {device}"
        + (" (estimate: no CUDA here)" if first["estimate"] else "")
    )
    head = f"{'preset':<9}{'measured':>12}{'predicted':>12}{'err':>7}"
    head += f"{'params':>11}{'grads':>11}{'adam':>11}{'activ.':>11}{'batch':>10}  verdict"
    lines.append(head)
    for name, r in results.items():
        b = r["breakdown"]
        err = f"{100 * r['prediction_error']:+.0f}%" if r["prediction_error"] is not None else "-"
        lines.append(
            f"{name:<9}{fmt_bytes(r['measured_peak_bytes']):>12}"
            f"{fmt_bytes(r['predicted_peak_bytes']):>12}{err:>7}"
            f"{fmt_bytes(b['parameters_bytes']):>11}{fmt_bytes(b['gradients_bytes']):>11}"
            f"{fmt_bytes(b['optimizer_state_bytes']):>11}{fmt_bytes(b['activations_bytes']):>11}"
            f"{fmt_bytes(b['batch_bytes']):>10}  "
            f"{verdict_text(r)}"
        )
        if "max_batch" in r:
            lines.append(
                f"{'':<9}largest batch within the budget: {r['max_batch']['max_batch_size']}"
            )
    for name, r in results.items():
        lines.append(f"largest activation holders at the peak ({name}):")
        for t in r["top_layers"][:5]:
            lines.append(f"  {fmt_bytes(t['bytes']):>11}  {t['layer']}")
    notes = dict.fromkeys(a for r in results.values() for a in r["assumptions"])  # ordered set
    if notes:
        lines.append("assumptions:")
        lines += [f"  - {a}" for a in notes]
    return "\n".join(lines)
