"""The CUDA path in one prepared run: scan backends, memory prediction vs measurement, bf16.

    python benchmarks/gpu.py [--out FILE] [--budget 24GiB]     # one GPU, under 8 minutes
    python benchmarks/gpu.py --dry [--out FILE]               # CPU, tiny sizes: same code paths

Prints one JSON document (schema kind "benchmark", name "gpu"):

1. ``scan``: every scan backend that runs here (``fused``; ``cuda`` when mamba-ssm imports)
   against ``reference`` on the device: outputs and the gradients of every input, in float32
   and with bf16 inputs (the reference then runs in float32 on the same bf16-rounded values).
   Error = max |got - ref| / max |ref| per tensor; tolerances in ``SCAN_TOLERANCE``.
2. ``presets``: every preset at batch 6 x 2 s: the measured peak of one training step
   (``torch.cuda.max_memory_allocated``) beside ``bsmamba plan``'s prediction for the device,
   their error (over 10%: a bug in the CUDA estimate), and the step time in float32 and
   bf16-mixed (autocast), median of 3 after one warm-up.
3. ``max_batch``: the largest batch of each preset at 2 s in ``--budget`` (24 GiB): the plan's
   card-table prediction, and the measured answer: real steps with the allocator capped to the
   budget less the CUDA context (``torch.cuda.set_per_process_memory_fraction``), from the
   prediction up until a step runs out of memory.

``--dry`` runs the same functions on the CPU at tiny sizes (batch 1 x 0.1 s, budget 64 MiB,
CPU peak from the allocator's events instead of an allocator cap), so that a test can prove the
script before a GPU is at hand. Its numbers are not results.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

import torch

from bsmamba import config, schema, units
from bsmamba.env import environment
from bsmamba.memory import measure as M
from bsmamba.memory import plan as P
from bsmamba.memory import predict as Pr
from bsmamba.memory import step as S
from bsmamba.presets import PRESETS

# Relative error (max |got - ref| / max |ref|) allowed against the float32 reference.
SCAN_TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}
PREDICTION_TOLERANCE = 0.10  # a CUDA prediction further off than this is a bug to fix


def kwargs(preset: str) -> dict:
    return config.model_kwargs(config.load(overrides=[f"model.preset={preset}"]))


def _say(line: str) -> None:
    print(f"# {line}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- 1. scan
def _scan_inputs(batch: int, d: int, n: int, L: int, device: str, dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = {
        "u": r(batch, d, L),
        "delta": r(batch, d, L) * 0.5,
        "A": -torch.exp(r(d, n)),  # trained-like decays over two decades
        "B": r(batch, n, L),
        "C": r(batch, n, L),
        "D": r(d),
        "z": r(batch, d, L),
        "delta_bias": r(d) * 0.1,
    }
    # A, D and delta_bias stay float32 (as mamba-ssm's module keeps them); activations in dtype.
    keep = ("A", "D", "delta_bias")
    return {k: v.to(device, torch.float32 if k in keep else dtype) for k, v in x.items()}


def _run_scan(backend: str, x: dict) -> tuple[torch.Tensor, dict]:
    from bsmamba.scan import selective_scan

    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    out = selective_scan(**leaves, delta_softplus=True, backend=backend)
    weight = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out).to(out.dtype)
    (out * weight).sum().backward()
    return out.detach(), {k: v.grad for k, v in leaves.items()}


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.float(), ref.float()
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def scan_section(device: str, dry: bool) -> dict:
    from bsmamba.scan import available_backends
    from bsmamba.scan import cuda as scan_cuda

    shape = (1, 16, 12, 32) if dry else (4, 128, 12, 251)  # batch, d_inner, d_state, L
    out: dict = {"shape": dict(zip(("batch", "d_inner", "d_state", "length"), shape, strict=True))}
    out["tolerance"] = SCAN_TOLERANCE
    backends = [b for b in available_backends() if b != "reference"]
    if device == "cuda" and "cuda" not in backends:
        out["cuda_skipped"] = f"mamba-ssm does not import ({scan_cuda.IMPORT_ERROR})"
    by_backend: dict = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        x = _scan_inputs(*shape, device, dtype)
        ref_y, ref_g = _run_scan("reference", {k: v.float() for k, v in x.items()})
        for backend in backends:
            y, g = _run_scan(backend, x)
            errors = {"output": _rel(y, ref_y)} | {f"grad_{k}": _rel(g[k], ref_g[k]) for k in g}
            worst = max(errors.values())
            by_backend.setdefault(backend, {})[name] = {
                "by_tensor": errors,  # relative error of the output and each gradient
                "max_error": worst,
                "within_tolerance": worst <= SCAN_TOLERANCE[name],
            }
            _say(f"scan {backend} {name}: max relative error {worst:.2e}")
    out["by_backend"] = by_backend
    return out


# ----------------------------------------------------------------------------- 2. presets
def _step_time(kw: dict, batch: int, segment: float, device: str, bf16: bool, repeats=3) -> float:
    model = S.build(kw).to(device)
    opt = S.adam_with_state(model)
    noisy, clean = S.make_batch(model, batch, segment, device)
    times = []
    for i in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = S.step_loss(model, noisy, clean)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i:  # the first is the warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def presets_section(device: str, batch: int, segment: float, presets: list[str]) -> dict:
    rows = {}
    for name in presets:
        kw = kwargs(name)
        r = P.plan(kw, batch, segment, budget="1TiB", device=device, measure=True)
        err = r["prediction_error"]
        rows[name] = {
            "measured_peak_bytes": r["measured_peak_bytes"],
            "predicted_peak_bytes": r["predicted_peak_bytes"],
            "prediction_error": err,
            "within_tolerance": err is not None and abs(err) <= PREDICTION_TOLERANCE,
            "measure_method": r["measure_method"],
            "step_time_float32_s": _step_time(kw, batch, segment, device, bf16=False),
            "step_time_bf16_mixed_s": _step_time(kw, batch, segment, device, bf16=True),
        }
        _say(
            f"{name}: measured {units.fmt_bytes(r['measured_peak_bytes'])}, predicted "
            f"{units.fmt_bytes(r['predicted_peak_bytes'])} ({100 * err:+.1f}%)"
        )
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"batch_size": batch, "segment_s": segment, "by_preset": rows}


# ----------------------------------------------------------------------------- 3. max batch
def _fits_for_real(kw: dict, batch: int, segment: float, device: str, budget: int) -> bool:
    """Does a training step at ``batch`` fit ``budget`` bytes? CUDA: run it with the allocator
    capped (less the context); CPU: the measured peak against the budget."""
    if device != "cuda":
        return M.measure(kw, batch, segment, "cpu")["peak_bytes"] <= budget
    try:
        M.measure(kw, batch, segment, "cuda", warmup=True)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        gc.collect()  # the failed step's tensors, held by the traceback until now
        torch.cuda.empty_cache()


def largest_batch(fits, start: int, deadline: float) -> int:
    """The largest n with ``fits(n)``, searched from ``start`` (the prediction): galloping away
    from it (1, 2, 4, ... steps) until the answer is bracketed, then bisecting; few real steps
    even when the prediction is far off. ``fits(0)`` is True; past ``deadline``, the best so far.
    """
    if fits(start):
        lo, step = start, 1
        while time.monotonic() < deadline and fits(lo + step):
            lo, step = lo + step, step * 2
        hi = lo + step
    else:
        hi, step = start, 1
        while hi - step > 0 and not fits(hi - step):
            hi, step = hi - step, step * 2
        lo = max(0, hi - step)
    while hi - lo > 1 and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def max_batch_section(
    device: str, segment: float, budget: int, deadline: float, presets: list[str]
) -> dict:
    rows = {}
    cap = None
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        cap = (budget - Pr.CUDA_CONTEXT_BYTES) / total
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap))
    try:
        for name in presets:
            if time.monotonic() > deadline:
                rows[name] = {"skipped": "out of time (the script must fit in 8 minutes)"}
                continue
            kw = kwargs(name)
            gib = budget / 2**30
            pred = P.card_table({name: kw}, segment, (gib,), device)[name]
            b = predicted = pred["by_card"][f"{gib:g}GiB"]["max_batch_size"]
            tries: dict[int, bool] = {}

            def fits(n: int, kw=kw, tries=tries) -> bool:
                if n not in tries:
                    tries[n] = n == 0 or _fits_for_real(kw, n, segment, device, budget)
                return tries[n]

            b = largest_batch(fits, predicted, deadline)
            rows[name] = {
                "predicted_max_batch_size": predicted,
                "measured_max_batch_size": b,
                "prediction_safe": predicted <= b,
                "by_batch_fits": {str(k): v for k, v in sorted(tries.items())},
            }
            _say(f"{name}: largest batch in {units.fmt_bytes(budget)}: {b}, predicted {predicted}")
    finally:
        if device == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0)
    return {"budget_bytes": budget, "segment_s": segment, "allocator_cap": cap, "by_preset": rows}


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="CPU, tiny sizes: proves the script")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--budget", default="24GiB", help="card size for the largest-batch search")
    ap.add_argument("--time-limit-s", type=float, default=420.0, help="stop searching after this")
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated (default all)")
    args = ap.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for name in presets:
        if name not in PRESETS:
            print(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}", file=sys.stderr)
            return 2
    t0 = time.monotonic()
    if args.dry:
        device, batch, segment, budget = "cpu", 1, 0.1, units.parse_bytes("64MiB")
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("benchmarks/gpu.py needs a CUDA GPU; use --dry on a CPU", file=sys.stderr)
            return 2
        device, batch, segment, budget = "cuda", 6, 2.0, units.parse_bytes(args.budget)
    torch.manual_seed(0)
    doc = schema.document(
        "benchmark",
        name="gpu",
        dry=args.dry,
        device=device,
        gpu=torch.cuda.get_device_name(0) if device == "cuda" else None,
        environment=environment(),
        scan=scan_section(device, args.dry),
        presets=presets_section(device, batch, segment, presets),
        max_batch=max_batch_section(device, segment, budget, t0 + args.time_limit_s, presets),
        wall_s=round(time.monotonic() - t0, 1),
    )
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        from bsmamba import files

        files.write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
