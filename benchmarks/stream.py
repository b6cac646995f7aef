"""Streaming compute per 8 ms hop of every causal configuration, on one thread; JSON.

    python benchmarks/stream.py            # the full-size models, 10 s of audio hop by hop
    python benchmarks/stream.py --quick    # tiny models and 1 s: check that the script runs
    python benchmarks/stream.py --engines torch   # without onnxruntime

Per hop = wall time of one ``process`` call given one hop (128 samples) of input: the framing,
the model on that frame with its carried states, the overlap-add. Engines: ``torch``
(``bsmamba.stream.Streamer``) and ``onnxruntime`` (``bsmamba.onnx_engine.OnnxStreamer`` on the
model exported with ``export --stream``, one intra-op thread), called alternately hop by hop on
the same audio so that both see the same machine load. Median and 99th percentile over the hops
after ``--warmup`` of them, the ratio onnxruntime / torch of the medians, all configurations in
one process. Each stream's output is also checked against the offline ``model(wav)`` of the
same audio. Goal (issue 13): median <= 2 ms for the causal Mamba configuration (a quarter of the
hop), in either engine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from bsmamba import env, files, schema
from bsmamba.causal import latency_samples
from bsmamba.model import build_model
from bsmamba.stream import Streamer

# every causal configuration of the presets: the causal preset (modified with per-frame norms)
# and the BSRNN baseline with per-frame norms
CONFIGS = {"causal": ("causal", {}), "bsrnn+layernorm": ("bsrnn", {"norm": "layernorm"})}
GOAL_MS = 2.0
ENGINES = ("torch", "onnxruntime")


def hop_times(streamers: dict, wav: np.ndarray) -> dict[str, tuple[list[float], np.ndarray]]:
    """Seconds of each ``process`` call, one hop each, per engine (called in turn hop by hop),
    and each engine's whole output."""
    hop = next(iter(streamers.values())).hop
    times = {name: [] for name in streamers}
    outs = {name: [] for name in streamers}
    for i in range(0, len(wav) - hop + 1, hop):
        chunk = wav[i : i + hop]
        for name, streamer in streamers.items():
            t0 = time.perf_counter()
            outs[name].append(streamer.process(chunk))
            times[name].append(time.perf_counter() - t0)
    for name, streamer in streamers.items():
        outs[name] += [streamer.process(wav[len(wav) // hop * hop :]), streamer.flush()]
    return {name: (times[name], np.concatenate(outs[name])) for name in streamers}


def _onnx_streamer(model, folder: str):
    """An OnnxStreamer on ``model`` exported with ``export --stream`` into ``folder``."""
    from pathlib import Path

    import onnx

    from bsmamba.onnx_engine import OnnxStreamer
    from bsmamba.stream_export import export_stream

    path = Path(folder) / f"{model.config['preset']}-{len(os.listdir(folder))}.onnx"
    onnx.save(export_stream(model), path)
    return OnnxStreamer(path, threads=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models: check the script runs")
    p.add_argument("--seconds", type=float, default=10.0, help="audio streamed per config")
    p.add_argument("--warmup", type=int, default=50, help="hops left out of the statistics")
    p.add_argument("--engines", default="torch,onnxruntime",
                   help="comma-separated: torch, onnxruntime (needs the export extra)")  # fmt: skip
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    engines = a.engines.split(",")
    if not engines or set(engines) - set(ENGINES):
        p.error(f"--engines {a.engines}: valid engines are {', '.join(ENGINES)}")
    if "onnxruntime" in engines:
        from bsmamba.onnx_engine import need

        try:
            need("onnx", "onnxscript", "onnxruntime", what="--engines onnxruntime")
        except ValueError as e:
            p.error(f"{e}; or pass --engines torch")
    tiny = {"dim": 8, "num_layers": 1, "d_state": 4} if a.quick else {}
    if a.quick:
        a.seconds, a.warmup = 1.0, 5
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(a.seconds * 16000))).astype(np.float32)
    by_config = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (preset, over) in CONFIGS.items():
            torch.manual_seed(0)
            model = build_model(preset, **over, **tiny).eval()
            streamers = {"torch": Streamer(model)} if "torch" in engines else {}
            if "onnxruntime" in engines:
                streamers["onnxruntime"] = _onnx_streamer(model, tmp)
            with torch.inference_mode():
                offline = model(torch.from_numpy(wav)[None])[0].numpy()
            hop_ms = 1e3 * model.frontend.hop_length / model.sample_rate
            row = {
                "preset": preset,
                "overrides": over,
                "params": sum(p.numel() for p in model.parameters()),
                "hop_ms": hop_ms,
                "latency_ms": 1e3 * latency_samples(model.config) / model.sample_rate,
            }
            for engine, (times, out) in hop_times(streamers, wav).items():
                ms = np.array(times[a.warmup :]) * 1e3
                row[engine] = {
                    "hops": len(ms),
                    "compute_ms_median": float(np.median(ms)),
                    "compute_ms_p99": float(np.percentile(ms, 99)),
                    "compute_ms_max": float(ms.max()),
                    "real_time_fraction": float(np.median(ms)) / hop_ms,
                    "max_abs_diff_offline": float(np.abs(out - offline).max()),
                }
            if len(streamers) == 2:
                row["ratio_onnxruntime_over_torch"] = (
                    row["onnxruntime"]["compute_ms_median"] / row["torch"]["compute_ms_median"]
                )
            by_config[name] = row
    best = min(by_config["causal"][e]["compute_ms_median"] for e in engines)
    doc = schema.document(
        "benchmark",
        name="stream",
        quick=a.quick,
        shape={"audio_s": a.seconds, "threads": 1, "warmup_hops": a.warmup, "engines": engines},
        goal={"config": "causal", "compute_ms_median_max": GOAL_MS},
        within_goal=best <= GOAL_MS,
        by_config=by_config,
        environment=env.environment(),
    )
    text = json.dumps(doc, indent=2)
    if a.out:
        files.write_text(a.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
