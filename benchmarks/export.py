"""Offline enhancement RTF on one thread, PyTorch against onnxruntime on the same audio; JSON.

    python benchmarks/export.py              # every preset at full size, 10 s of audio
    python benchmarks/export.py --no-timing  # only the export and its accuracy
    python benchmarks/export.py --quick      # tiny models and 1 s: check that the script runs

Per preset: export (``bsmamba.export.export_onnx``, timed), then ``Enhancer.enhance`` of the
same noise-like input through the torch model and through the exported file (one chunk, both
engines on one thread), the runs interleaved so that machine load hits both alike; RTF =
median wall time / audio seconds, and the ratio onnxruntime / torch from the same process. The
outputs' max abs difference is reported beside them, and the accuracy on real speech: the two
CMU ARCTIC utterances of tests/data as one batch, max |onnxruntime - torch| of the enhanced
spectrum (beside its largest magnitude) and of the enhanced waveform. Goals (issue 13): RTF <= 0.1
for every preset, and onnxruntime's at most PyTorch's (ratio <= 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import soundfile as sf
import torch

from bsmamba import env, files, schema
from bsmamba.enhance import Enhancer
from bsmamba.export import export_onnx
from bsmamba.model import build_model
from bsmamba.onnx_engine import OnnxModel
from bsmamba.presets import PRESETS

GOALS = {"rtf_max": 0.1, "ratio_onnxruntime_to_torch_max": 1.0}
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SPEECH = ("arctic_a0007.wav", "arctic_a0009.wav")  # 16 kHz, 49,520 samples each


def accuracy(model, engine: OnnxModel) -> dict:
    """max |onnxruntime - torch| on the real speech batch: spectrum and waveform."""
    wav = torch.from_numpy(np.stack([sf.read(DATA / f, dtype="float32")[0] for f in SPEECH]))
    with torch.inference_mode():
        want = torch.view_as_real(model.forward_spectral(wav)).numpy()
        spec = torch.view_as_real(model.frontend.stft(wav)).numpy()
        got = engine.session.run(None, {"spec": spec})[0]
        wav_diff = (engine(wav) - model(wav)).abs().max().item()
    return {
        "speech_spec_max_abs_diff": float(np.abs(got - want).max()),
        "speech_spec_max_abs": float(np.abs(want).max()),
        "speech_wav_max_abs_diff": wav_diff,
    }


def _time(enhancer: Enhancer, wav: np.ndarray) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = enhancer.enhance(wav, 16000)
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models: check the script runs")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names")
    p.add_argument("--seconds", type=float, default=10.0, help="audio length for the RTF")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per engine")
    p.add_argument("--no-timing", action="store_true", help="export and accuracy only")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    tiny = {"dim": 8, "num_layers": 1, "band_plan": [64, 64, 129]} if a.quick else {}
    if a.quick:
        a.seconds, a.repeats = 1.0, 1
    presets = [s.strip() for s in a.presets.split(",") if s.strip()]
    unknown = set(presets) - set(PRESETS)
    if unknown:
        raise SystemExit(f"unknown preset(s) {sorted(unknown)}; valid: {', '.join(PRESETS)}")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(a.seconds * 16000))).astype(np.float32)
    chunk = dict(chunk_s=a.seconds + 1.0)  # one pass over the whole input in both engines
    by_preset = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in presets:
            torch.manual_seed(0)
            model = build_model(name, **tiny).eval()
            t0 = time.perf_counter()
            proto = export_onnx(model)
            export_s = time.perf_counter() - t0
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(proto, path)
            engine = OnnxModel(path, threads=1)
            row = {
                "params": sum(p.numel() for p in model.parameters()),
                "export_s": export_s,
                "onnx_bytes": path.stat().st_size,
                **accuracy(model, engine),
            }
            by_preset[name] = row
            if a.no_timing:
                continue
            engines = {"torch": Enhancer(model, **chunk), "onnxruntime": Enhancer(engine, **chunk)}
            outs = {k: e.enhance(wav, 16000) for k, e in engines.items()}  # warm-up
            times = {k: [] for k in engines}
            for _ in range(a.repeats):
                for k, e in engines.items():
                    times[k].append(_time(e, wav)[0])
            rtf = {k: statistics.median(v) / a.seconds for k, v in times.items()}
            row |= {
                "rtf_torch": rtf["torch"],
                "rtf_onnxruntime": rtf["onnxruntime"],
                "ratio_onnxruntime_to_torch": rtf["onnxruntime"] / rtf["torch"],
                "times_s": times,
                "max_abs_diff": float(np.abs(outs["torch"] - outs["onnxruntime"]).max()),
                "within_goals": max(rtf.values()) <= GOALS["rtf_max"]
                and rtf["onnxruntime"] <= rtf["torch"] * GOALS["ratio_onnxruntime_to_torch_max"],
            }
    doc = schema.document(
        "benchmark",
        name="export",
        quick=a.quick,
        shape={"audio_s": a.seconds, "threads": 1, "repeats": a.repeats},
        timed=not a.no_timing,
        goals=GOALS,
        by_preset=by_preset,
        environment=env.environment(),
    )
    text = json.dumps(doc, indent=2)
    if a.out:
        files.write_text(a.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
