"""Peak training memory of the five presets, side by side, and the memory targets of issue 5.

    python benchmarks/memory.py [--quick] [--out FILE] [--threads N]

1. Every preset at batch 6 x 2 s: measured (a real CPU step, allocator events) and predicted
   (meta trace) peak, and ratios to bsrnn. Targets: abl3 <= bsrnn, abl1/abl2 <= 1.3 x bsrnn.
2. The Mamba presets' activation bytes (predicted: the trace matches a real CPU step to the
   byte for Mamba models) at 1, 2, 4, 8 s: linear in length, and no (L x d_inner x d_state)
   term (doubling d_state must add less than one such tensor per scan).
3. Activation checkpointing on abl3: peak cut >= 40% at < 40% extra step time (real steps).

Prints one JSON document (schema kind "benchmark"). ``--quick`` runs everything at a tiny shape
to prove the script works; its numbers say nothing about the targets.
"""

from __future__ import annotations

import argparse
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

MAMBA = [name for name, args in PRESETS.items() if args["mixer"] != "lstm"]


def kwargs(preset: str, **over) -> dict:
    return {**config.model_kwargs(config.load(overrides=[f"model.preset={preset}"])), **over}


def side_by_side(batch: int, segment: float) -> dict:
    rows = {}
    for name in PRESETS:
        r = P.plan(kwargs(name), batch, segment, measure=True)
        rows[name] = {
            "measured_peak_bytes": r["measured_peak_bytes"],
            "predicted_peak_bytes": r["predicted_peak_bytes"],
            "prediction_error": r["prediction_error"],
            "breakdown": r["breakdown"],
        }
        print(
            f"# {name}: measured {units.fmt_bytes(r['measured_peak_bytes'])}",
            file=sys.stderr,
            flush=True,
        )
    base = rows["bsrnn"]["measured_peak_bytes"]
    for row in rows.values():
        row["ratio_to_bsrnn"] = row["measured_peak_bytes"] / base
    ratio = {n: rows[n]["ratio_to_bsrnn"] for n in rows}
    targets = {
        "abl3_at_most_bsrnn": ratio["abl3"] <= 1.0,
        "abl1_at_most_1_3x_bsrnn": ratio["abl1"] <= 1.3,
        "abl2_at_most_1_3x_bsrnn": ratio["abl2"] <= 1.3,
    }
    return {"batch_size": batch, "segment_s": segment, "per_preset": rows, "targets": targets}


def growth(batch: int, segments: list[float]) -> dict:
    """Activation bytes vs length; the (L x d_inner x d_state) check by doubling d_state."""
    out = {}
    for name in MAMBA:
        kw = kwargs(name)
        act = [Pr.predict(kw, batch, s)["breakdown"]["activations_bytes"] for s in segments]
        # Linear: the line through the first and last points predicts the middle ones.
        slope = (act[-1] - act[0]) / (segments[-1] - segments[0])
        line = [act[0] + slope * (s - segments[0]) for s in segments]
        worst = max(abs(a / b - 1) for a, b in zip(act, line, strict=True))
        # A naive scan stores (rows, L, d_inner, d_state) tensors for backward: doubling d_state
        # adds at least one such tensor (at the old d_state) per scan call. The fused scan keeps
        # chunk-start states (L/K) and one chunk's recompute (K steps): a fraction of one, larger
        # for the band pass, whose L is only the 30 bands.
        s_mid = segments[1]
        wide = Pr.predict({**kw, "d_state": 2 * kw["d_state"]}, batch, s_mid)
        added = wide["breakdown"]["activations_bytes"] - act[1]
        one_term = _one_state_tensor_bytes(kw, batch, s_mid)
        per_scan = added / _scan_calls(kw) / one_term
        out[name] = {
            "segments_s": segments,
            "activations_bytes": act,
            "bytes_per_s": slope,
            "max_deviation_from_line": worst,
            "linear": worst < 0.05,
            "added_bytes_when_d_state_doubles": added,
            "one_l_dinner_dstate_tensor_bytes": one_term,
            "added_per_scan_over_one_tensor": per_scan,
            # below one: no per-step state is stored (the naive scan keeps two or more)
            "no_l_dinner_dstate_term": per_scan < 1.0,
        }
        print(
            f"# {name}: {units.fmt_bytes(slope)}/s, deviation {worst:.1%}, "
            f"d_state bytes per scan {per_scan:.2f} x one (rows, L, d_inner, d_state) tensor",
            file=sys.stderr,
            flush=True,
        )
    return out


def _scan_calls(kw: dict) -> int:
    """Selective scans one forward runs: one per Mamba block (BiMamba holds two)."""
    from bsmamba.sequence.mamba import Mamba

    return sum(isinstance(m, Mamba) for m in S.build(kw).modules())


def _one_state_tensor_bytes(kw: dict, batch: int, segment: float) -> int:
    """Bytes of one (rows, L, d_inner, d_state) float32 tensor for the time pass of ``kw``."""
    from bsmamba.bands import band_widths

    stft = kw["stft"]
    frames = int(segment * stft["sample_rate"]) // stft["hop_length"] + 1
    bands = len(band_widths(kw["band_plan"], stft["n_fft"] // 2 + 1))
    return batch * bands * frames * kw["expand"] * kw["dim"] * kw["d_state"] * 4


def step_times(kws: list[dict], batch: int, segment: float, steps: int) -> list[float]:
    """Median wall time (s) of ``steps`` real training steps per config, after one warm-up each.

    Steps of the configs alternate, so a load change on a shared machine hits all of them alike.
    """
    models = [S.build(kw) for kw in kws]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    noisy, clean = S.make_batch(models[0], batch, segment, "cpu")
    times: list[list[float]] = [[] for _ in kws]
    for i in range(steps + 1):
        for model, opt, out in zip(models, opts, times, strict=True):
            t0 = time.perf_counter()
            S.step_loss(model, noisy, clean).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:
                out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def checkpointing(batch: int, segment: float, steps: int) -> dict:
    off, on = kwargs("abl3"), kwargs("abl3", checkpointing=True)
    peak_off = M.measure(off, batch, segment)["peak_bytes"]
    peak_on = M.measure(on, batch, segment)["peak_bytes"]
    t_off, t_on = step_times([off, on], batch, segment, steps)
    cut, extra = 1 - peak_on / peak_off, t_on / t_off - 1
    print(f"# abl3 checkpointing: peak -{cut:.0%}, time {extra:+.0%}", file=sys.stderr, flush=True)
    return {
        "peak_bytes_off": peak_off,
        "peak_bytes_on": peak_on,
        "step_time_s_off": t_off,
        "step_time_s_on": t_on,
        "peak_cut": cut,
        "extra_step_time": extra,
        "targets": {
            "peak_cut_at_least_40_percent": cut >= 0.4,
            "extra_time_under_40_percent": extra < 0.4,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes: prove the script runs")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument(
        "--only",
        default="side_by_side,growth,checkpointing",
        help="comma-separated sections to run (default: all)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        batch, segment, segments, steps = 2, 0.25, [0.125, 0.25, 0.5, 1.0], 1
    else:
        batch, segment, segments, steps = 6, 2.0, [1.0, 2.0, 4.0, 8.0], 3
    sections = {
        "side_by_side": lambda: side_by_side(batch, segment),
        "growth": lambda: growth(batch, segments),
        "checkpointing": lambda: checkpointing(batch, segment, steps),
    }
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    for bad in set(only) - set(sections):
        raise SystemExit(f"unknown section {bad!r}; valid: {', '.join(sections)}")
    t0 = time.perf_counter()
    results = {name: sections[name]() for name in only}
    doc = schema.document(
        "benchmark",
        name="memory",
        quick=args.quick,
        device="cpu",
        method="measured: torch.profiler allocator events; predicted: meta-tensor trace",
        **results,
        wall_time_s=time.perf_counter() - t0,
        environment=environment(),
    )
    text = json.dumps(doc, indent=2)
    if args.out:
        from bsmamba.files import write_text

        write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
