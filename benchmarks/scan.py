"""One Mamba block, forward + backward, with each selective-scan implementation; prints JSON.

    python benchmarks/scan.py            # the study shape: 180 sequences x 251 frames, 2 threads
    python benchmarks/scan.py --quick    # a tiny shape, to check that the script runs

Compared in the same run: bsmamba's ``fused`` and ``reference`` backends inside bsmamba's Mamba
block, and mambapy's block with its parallel scan (``pscan=True``; same layer sizes, checked by
parameter count). Time: wall-clock seconds of forward + backward, min and median over repeats
after one warm-up. Peak: the most tensor bytes alive at once during one forward + backward
(parameters, gradients, activations, temporaries), tracked per allocation by bsmamba's
``LiveBytes`` dispatch mode (it sees every tensor storage; not process RSS). It installs no
module hooks, so the block runs the same path as when timed (hooks would switch bsmamba's block
to its module-by-module path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bsmamba import env, schema
from bsmamba.sequence.mamba import Mamba

TARGETS = {"speedup_vs_reference": 3.0, "speedup_vs_mambapy": 4.0, "peak_fraction_of_mambapy": 0.25}


def _block(variant: str, dim: int, d_state: int, expand: int) -> torch.nn.Module:
    if variant == "mambapy":
        from mambapy.mamba import MambaBlock, MambaConfig

        cfg = MambaConfig(
            d_model=dim, n_layers=1, d_state=d_state, expand_factor=expand, pscan=True
        )
        return MambaBlock(cfg)
    return Mamba(dim, d_state=d_state, expand=expand, scan_backend=variant)


def _step(block: torch.nn.Module, x: torch.Tensor) -> None:
    block.zero_grad(set_to_none=True)
    block(x).pow(2).mean().backward()


def _time(block, x, repeats: int) -> tuple[float, list[float]]:
    t = time.perf_counter()
    _step(block, x)  # warm-up: allocator, oneDNN kernels, compilation
    warmup, out = time.perf_counter() - t, []
    for _ in range(repeats):
        t = time.perf_counter()
        _step(block, x)
        out.append(time.perf_counter() - t)
    return warmup, out


def _peak_bytes(block, x) -> int:
    from bsmamba.memory.tracker import LiveBytes

    block.zero_grad(set_to_none=True)
    tracker = LiveBytes()
    with tracker:
        tracker.track(list(block.parameters()) + [x], "parameters")
        if isinstance(block, Mamba):  # the path that was timed, not the hooked module path
            assert not block._hooked()
        _step(block, x)
    return int(tracker.peak_bytes)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny shape (12 x 40) to check it runs")
    p.add_argument("--batch", type=int, default=180, help="sequences (batch 6 x 30 bands)")
    p.add_argument("--length", type=int, default=251, help="frames (2 s at 16 kHz, hop 128)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--d-state", type=int, default=12)
    p.add_argument("--expand", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--variants",
        default="fused,reference,mambapy",
        help="comma list of fused, reference, mambapy",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.length, args.repeats = 12, 40, 1
    torch.set_num_threads(args.threads)

    results = {}
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        block = _block(variant, args.dim, args.d_state, args.expand)
        x = torch.randn(args.batch, args.length, args.dim, requires_grad=True)
        warmup, times = _time(block, x, args.repeats)
        results[variant] = {
            "params": sum(q.numel() for q in block.parameters()),
            "step_time_s": min(times),
            "step_time_median_s": statistics.median(times),
            "first_step_time_s": warmup,
            "peak_bytes": _peak_bytes(block, x),
        }
        print(f"{variant}: {results[variant]}", flush=True)

    ratios = {}
    fused = results.get("fused")
    if fused and "reference" in results:
        ratios["speedup_vs_reference"] = results["reference"]["step_time_s"] / fused["step_time_s"]
    if fused and "mambapy" in results:
        ratios["speedup_vs_mambapy"] = results["mambapy"]["step_time_s"] / fused["step_time_s"]
        ratios["peak_fraction_of_mambapy"] = fused["peak_bytes"] / results["mambapy"]["peak_bytes"]
    met = {
        k: (v <= TARGETS[k] if k.startswith("peak") else v >= TARGETS[k])
        for k, v in ratios.items()
        if k in TARGETS
    }
    doc = schema.document(
        "benchmark",
        name="scan",
        shape={
            "batch": args.batch,
            "length": args.length,
            "d_model": args.dim,
            "d_state": args.d_state,
            "expand": args.expand,
        },
        threads=args.threads,
        repeats=args.repeats,
        by_variant=results,
        ratios=ratios,
        targets=TARGETS,
        targets_met=met,
        environment=env.environment(),
    )
    print(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
