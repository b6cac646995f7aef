"""Peak memory of one training step, measured by running it.

CUDA: the caching allocator's ``max_memory_allocated``. CPU: the allocator events of
``torch.profiler(profile_memory=True)`` summed in order (every c10 allocation, kernel scratch
included; process RSS would not see freed-and-reused memory).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

import torch

from bsmamba.memory.step import (
    StepOptions,
    adam_with_state,
    build,
    check_device,
    extras,
    make_batch,
    static_bytes,
    step_loss,
    tensor_bytes,
)


def measure(
    model_kwargs: dict[str, Any],
    batch_size: int,
    segment_s: float,
    device: str = "cpu",
    warmup: bool = True,
    options: StepOptions | None = None,
) -> dict[str, Any]:
    """Run a real training step on ``device``; peak live bytes from the allocator.

    ``options``: what the run trains beside the generator (``StepOptions``). ``warmup`` runs
    one untracked step first, so lazy one-off allocations (kernel caches) and
    first-call slowness stay out. Returns ``peak_bytes``, ``step_time_s`` (of the tracked step;
    the CPU profiler slows it by a few tens of %), ``method`` and the static parts
    (``parameters_bytes``, ``optimizer_state_bytes``).
    """
    device = check_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda needs a CUDA build of torch and a GPU; this torch has none")
    model = build(model_kwargs).to(device)
    disc, average = extras(model, options)
    opt = adam_with_state(model, disc)
    noisy, clean = make_batch(model, batch_size, segment_s, device)

    def step():
        step_loss(model, noisy, clean, disc).backward()
        opt.step()

    if warmup:
        step()
        opt.zero_grad(set_to_none=True)
    static = static_bytes(model, opt, disc, average)
    before = static["parameters_bytes"] + static["optimizer_state_bytes"]
    before += tensor_bytes([noisy, clean])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        peak, method = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        t0 = time.perf_counter()
        rise = _cpu_peak_rise(step)
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
