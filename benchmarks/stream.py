"""Streaming compute per 8 ms hop of every causal configuration, on one thread; JSON.

    python benchmarks/stream.py            # the full-size models, 10 s of audio hop by hop
    python benchmarks/stream.py --quick    # tiny models and 1 s: check that the script runs

Per hop = wall time of one ``Streamer.process`` call given one hop (128 samples) of input: the
framing, the model on that frame with its carried states, the overlap-add. Median and 99th
percentile over the hops after ``--warmup`` of them, all configurations in one process. Each
stream's output is also checked against the offline ``model(wav)`` of the same audio.
Goal (issue 13): median <= 2 ms for the causal Mamba configuration (a quarter of the hop).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bsmamba import env, files, schema
from bsmamba.model import build_model
from bsmamba.stream import Streamer, latency_samples

# every causal configuration of the presets: the causal preset (modified with per-frame norms)
# and the BSRNN baseline with per-frame norms
CONFIGS = {"causal": ("causal", {}), "bsrnn+layernorm": ("bsrnn", {"norm": "layernorm"})}
GOAL_MS = 2.0


def hop_times(model, wav: np.ndarray) -> tuple[list[float], float]:
    """Seconds of each ``process`` call, one hop each, and the max abs difference to offline."""
    streamer = Streamer(model)
    hop = streamer.hop
    times, out = [], []
    for i in range(0, len(wav) - hop + 1, hop):
        chunk = wav[i : i + hop]
        t0 = time.perf_counter()
        out.append(streamer.process(chunk))
        times.append(time.perf_counter() - t0)
    out.append(streamer.process(wav[len(wav) // hop * hop :]))
    out.append(streamer.flush())
    with torch.inference_mode():
        offline = model(torch.from_numpy(wav)[None])[0].numpy()
    return times, float(np.abs(np.concatenate(out) - offline).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models: check the script runs")
    p.add_argument("--seconds", type=float, default=10.0, help="audio streamed per config")
    p.add_argument("--warmup", type=int, default=50, help="hops left out of the statistics")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    tiny = {"dim": 8, "num_layers": 1, "d_state": 4} if a.quick else {}
    if a.quick:
        a.seconds, a.warmup = 1.0, 5
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(a.seconds * 16000))).astype(np.float32)
    by_config = {}
    for name, (preset, over) in CONFIGS.items():
        torch.manual_seed(0)
        model = build_model(preset, **over, **tiny).eval()
        times, diff = hop_times(model, wav)
        ms = np.array(times[a.warmup :]) * 1e3
        hop_ms = 1e3 * model.frontend.hop_length / model.sample_rate
        by_config[name] = {
            "preset": preset,
            "overrides": over,
            "params": sum(p.numel() for p in model.parameters()),
            "hops": len(ms),
            "hop_ms": hop_ms,
            "compute_ms_median": float(np.median(ms)),
            "compute_ms_p99": float(np.percentile(ms, 99)),
            "compute_ms_max": float(ms.max()),
            "real_time_fraction": float(np.median(ms)) / hop_ms,
            "latency_ms": 1e3 * latency_samples(model.config) / model.sample_rate,
            "max_abs_diff_offline": diff,
        }
    doc = schema.document(
        "benchmark",
        name="stream",
        quick=a.quick,
        shape={"audio_s": a.seconds, "threads": 1, "warmup_hops": a.warmup},
        goal={"config": "causal", "compute_ms_median_max": GOAL_MS},
        within_goal=by_config["causal"]["compute_ms_median"] <= GOAL_MS,
        by_config=by_config,
        environment=env.environment(),
    )
    text = json.dumps(doc, indent=2)
    if a.out:
        files.write_text(a.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
