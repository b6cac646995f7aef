"""Training step time of every preset beside ``bsrnn``, and enhancement real-time factor; JSON.

    python benchmarks/speed.py            # batch 6 x 2 s on 2 threads; RTF on 1 thread, 10 s
    python benchmarks/speed.py --quick    # a tiny shape, to check that the script runs

Training step = what ``bsmamba train`` does per batch without Lightning's bookkeeping: the
recipe loss (``bsmamba.losses.enhancement_loss``), backward, grad-norm clip 5 and an Adam step, on
a fixed batch. Time: median wall-clock seconds over ``--steps`` steps after one warm-up step,
all presets in the same process so that the ratios to ``bsrnn`` compare like with like.
RTF = seconds of compute per second of audio for ``Enhancer.enhance`` on one thread (the
inference path of ``bsmamba enhance``; chunking off at this length), median of 3.
Targets (issue 4): Mamba presets' step time <= 1.5x bsrnn's (goal 1.0x); abl3 RTF <= 0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bsmamba import env, files, schema
from bsmamba.enhance import Enhancer
from bsmamba.losses import enhancement_loss
from bsmamba.model import build_model
from bsmamba.presets import PRESETS

TARGETS = {"step_ratio_max": 1.5, "step_ratio_goal": 1.0, "abl3_rtf_max": 0.1}


def _batch(batch: int, seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = int(seconds * 16000)
    clean = 0.1 * torch.randn(batch, n, generator=g)
    return clean + 0.05 * torch.randn(batch, n, generator=g), clean


def train_step_times(preset: str, batch: int, seconds: float, steps: int) -> list[float]:
    """Seconds per training step (after one warm-up step) of ``preset`` at batch x seconds."""
    torch.manual_seed(0)
    model = build_model(preset)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    noisy, clean = _batch(batch, seconds)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        enhancement_loss(model, noisy, clean).total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t0)
    return times


def enhance_rtf(preset: str, seconds: float, repeats: int = 3) -> float:
    """Median real-time factor of ``Enhancer.enhance`` on ``seconds`` of audio."""
    torch.manual_seed(0)
    enhancer = Enhancer(build_model(preset), chunk_s=max(10.0, seconds + 1))
    wav = _batch(1, seconds)[0][0].numpy()
    enhancer.enhance(wav, 16000)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        enhancer.enhance(wav, 16000)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shape: check the script runs")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--seconds", type=float, default=2.0, help="training crop length (s)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per preset")
    p.add_argument("--threads", type=int, default=2, help="threads for the training steps")
    p.add_argument("--rtf-seconds", type=float, default=10.0, help="audio length for the RTF")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    if a.quick:
        # one thread: two threads on a busy 2-core machine can run many times slower (spinning)
        a.batch, a.seconds, a.steps, a.rtf_seconds, a.threads = 1, 0.5, 1, 1.0, 1
    presets = [s.strip() for s in a.presets.split(",") if s.strip()]
    unknown = set(presets) - set(PRESETS)
    if unknown:
        raise SystemExit(f"unknown presets {sorted(unknown)}; valid: {', '.join(PRESETS)}")
    if "bsrnn" not in presets:
        presets.insert(0, "bsrnn")  # the reference every ratio is taken against

    by_preset: dict[str, dict] = {}
    for name in presets:
        torch.set_num_threads(a.threads)
        times = train_step_times(name, a.batch, a.seconds, a.steps)
        torch.set_num_threads(1)
        rtf = enhance_rtf(name, a.rtf_seconds)
        by_preset[name] = {
            "params": sum(p.numel() for p in build_model(name).parameters()),
            "train_step_time_s": statistics.median(times),
            "train_step_times_s": times,
            "train_steps_per_s": 1.0 / statistics.median(times),
            "enhance_rtf": rtf,
        }
    base = by_preset["bsrnn"]["train_step_time_s"]
    for r in by_preset.values():
        r["step_ratio_to_bsrnn"] = r["train_step_time_s"] / base
        r["within_step_target"] = r["step_ratio_to_bsrnn"] <= TARGETS["step_ratio_max"]
    doc = schema.document(
        "benchmark",
        name="speed",
        quick=a.quick,
        train_shape={"batch_size": a.batch, "segment_s": a.seconds, "threads": a.threads},
        rtf_shape={"audio_s": a.rtf_seconds, "threads": 1},
        targets=TARGETS,
        abl3_within_rtf_target=(
            by_preset["abl3"]["enhance_rtf"] <= TARGETS["abl3_rtf_max"]
            if "abl3" in by_preset
            else None
        ),
        by_preset=by_preset,
        environment=env.environment(),
    )
    text = json.dumps(doc, indent=2)
    if a.out:
        files.write_text(a.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
