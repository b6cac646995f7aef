"""`bsmamba export --stream` and the onnxruntime streamer: hop by hop as the torch Streamer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import bsmamba
from bsmamba import checkpoint as ckpt_io
from bsmamba import cli
from bsmamba.stream import Streamer

for _name in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_name, reason=f"the export extra ({_name}) is not installed")

import onnx  # noqa: E402

from bsmamba.export import TOLERANCE, export_onnx  # noqa: E402
from bsmamba.onnx_engine import OnnxStreamer  # noqa: E402
from bsmamba.stream_export import export_stream  # noqa: E402

DATA = Path(__file__).parent / "data"
SPEECH = DATA / "arctic_a0009.wav"  # CMU ARCTIC, 16 kHz, 49,520 samples
HOP = 128
# tiny causal configurations: Mamba over time and across bands (the causal preset, all 30
# bands), and BSRNN's LSTM over time with its BiLSTM across 3 bands
CONFIGS = {
    "causal-mamba": ("causal", {"dim": 16, "num_layers": 1, "d_state": 4}),
    "bsrnn-layernorm": (
        "bsrnn",
        {"dim": 8, "num_layers": 1, "norm": "layernorm", "band_plan": [64, 64, 129]},
    ),
}


def _model(name: str):
    torch.manual_seed(0)
    preset, kw = CONFIGS[name]
    return bsmamba.build_model(preset, **kw).eval()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return sf.read(SPEECH, dtype="float32")[0]


def _stream(streamer, x, chunk: int):
    parts = [streamer.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return parts, streamer.flush()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnxruntime_streams_hop_by_hop_as_the_torch_streamer(name, speech, tmp_path):
    model = _model(name)
    proto = export_stream(model)
    ops = {n.op_type for n in proto.graph.node}
    assert ("LSTM" in ops) == (name == "bsrnn-layernorm")  # time and band LSTMs as LSTM nodes
    assert "Scan" not in ops  # the band pass's recurrence over the fixed bands is unrolled
    path = tmp_path / "stream.onnx"
    onnx.save(proto, path)
    # the file says what it carries: every state an input with a matching output, all zeros
    meta = {p.key: p.value for p in proto.metadata_props}
    states = json.loads(meta["stream"])["states"]
    inputs = {
        i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input
    }
    outputs = [o.name for o in proto.graph.output]
    assert list(inputs) == ["samples", "last", *(s["name"] for s in states)]
    assert inputs["samples"] == [1, HOP]
    assert outputs == ["enhanced", *(s["name"] + "_next" for s in states)]
    for s in states:
        assert inputs[s["name"]] == s["shape"], s
    names = [s["name"] for s in states]
    assert names[:7] == ["hops", "buffer", "ola", "ola_env", "spec_prev", "spec_partial",
                         "spec_tap"]  # fmt: skip
    mixer = ["conv", "ssm"] if name == "causal-mamba" else ["h", "c"]
    assert names[7:] == [f"time0_{s}" for s in mixer]

    ours, theirs = OnnxStreamer(path, threads=1), Streamer(model)
    assert ours.latency == theirs.latency == 640
    x = speech[1000:41001]  # 40,001 samples: 312 hops and one sample
    for chunk in (HOP, 77):
        got, got_rest = _stream(ours, x, chunk)
        want, want_rest = _stream(theirs, x, chunk)
        # the same samples come out at the same time, not only in the end
        assert [len(p) for p in got] == [len(p) for p in want]
        assert sum(len(p) for p in got) == len(x) - len(got_rest) > len(x) - 640 - chunk
        y, ref = np.concatenate([*got, got_rest]), np.concatenate([*want, want_rest])
        assert y.dtype == np.float32 and y.shape == x.shape
        assert np.abs(ref).max() > 0.01  # not silence
        assert np.abs(y - ref).max() < TOLERANCE, chunk
    # shorter than a frame, than the reflection, ...: tensors in, tensors out
    for n in (1, 200, 257, 300):
        parts, rest = _stream(ours, torch.from_numpy(x[:n]), 50)
        y = torch.cat([*parts, rest]).numpy()
        want, want_rest = _stream(theirs, x[:n], 50)
        ref = np.concatenate([*want, want_rest])
        assert y.shape == (n,) and np.abs(y - ref).max() < TOLERANCE, n


def test_the_graph_itself_returns_one_hop_per_hop_after_the_delay(speech, tmp_path):
    import onnxruntime as ort

    model = _model("causal-mamba")
    path = tmp_path / "s.onnx"
    onnx.save(export_stream(model), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["stream"])
    assert meta["hop"] == HOP and meta["delay_calls"] == 4 and meta["init"] == "zeros"
    state = {s["name"]: np.zeros(s["shape"], s["dtype"]) for s in meta["states"]}
    x = speech[8000 : 8000 + 40 * HOP]
    outs = []
    for c in range(40):  # a stream that does not end: plain calls, the states fed back
        feeds = {"samples": x[None, c * HOP : (c + 1) * HOP], "last": np.array([False]), **state}
        y, *new = session.run(None, feeds)
        state = dict(zip(state, new, strict=True))
        assert state["hops"][0] == c + 1
        outs.append(y[0])
    assert all(np.all(o == 0) for o in outs[:4])  # the latency: 4 hops of zeros
    # then call c returns samples [(c - 4) hop, (c - 3) hop) of the torch stream
    parts, _ = _stream(Streamer(model), x, HOP)
    torch_out = np.concatenate(parts)
    assert len(torch_out) == 36 * HOP
    assert np.abs(np.concatenate(outs[4:]) - torch_out).max() < TOLERANCE


@pytest.mark.slow
def test_cli_export_stream_then_enhance_with_onnxruntime_writes_the_torch_stream(tmp_path, speech):
    ckpt = ckpt_io.save_model(tmp_path / "causal.ckpt", _model("causal-mamba"))
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", speech[:20001], 16000, subtype="FLOAT")  # odd length
    sf.write(src / "b.wav", speech[5000:15000], 16000, subtype="FLOAT")

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "bsmamba.cli", *args],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    printed = run("export", str(ckpt), str(tmp_path / "c.onnx"), "--stream")
    assert "streamed hop by hop" in printed and ": ok" in printed
    assert "enhance --stream --engine onnxruntime" in printed
    printed = run("enhance", "--stream", "--engine", "onnxruntime", str(tmp_path / "c.onnx"),
                  str(src), str(tmp_path / "ort"), "--stream-chunk", "300")  # fmt: skip
    assert "streaming in chunks of 300 samples, algorithmic latency 640 samples" in printed
    run("enhance", "--stream", str(ckpt), str(src), str(tmp_path / "torch"))
    for name, n in (("a.wav", 20001), ("b.wav", 10000)):
        a, rate = sf.read(tmp_path / "ort" / name, dtype="float32")
        b, _ = sf.read(tmp_path / "torch" / name, dtype="float32")
        assert rate == 16000 and a.shape == b.shape == (n,)
        assert np.abs(b).max() > 0.01
        assert np.abs(a - b).max() <= TOLERANCE  # 16-bit files: at most a few codes apart


def test_unsupported_stream_combinations_fail_clearly(tmp_path, capsys):
    tiny = {"dim": 8, "num_layers": 1, "d_state": 4, "band_plan": [64, 64, 129]}
    torch.manual_seed(0)
    abl2 = ckpt_io.save_model(tmp_path / "abl2.ckpt", bsmamba.build_model("abl2", **tiny))
    causal = bsmamba.build_model("causal", **tiny).eval()
    onnx.save(export_onnx(causal), tmp_path / "offline.onnx")
    onnx.save(export_stream(causal), tmp_path / "stream.onnx")
    wav = str(SPEECH)
    cases = [
        (["export", str(abl2), str(tmp_path / "s.onnx"), "--stream"],
         "abl2 is not a causal configuration and cannot stream: norm=groupnorm normalises over "
         "the whole utterance (norm=layernorm normalises each frame); mixer=bimamba on the time "
         "axis reads the future"),
        (["enhance", "--engine", "onnxruntime", str(tmp_path / "stream.onnx"), wav,
          str(tmp_path / "o.wav")], "is a streaming export"),
        (["enhance", "--stream", "--engine", "onnxruntime", str(tmp_path / "offline.onnx"), wav,
          str(tmp_path / "o.wav")], "is an offline export and cannot stream"),
        (["enhance", "--stream", "--engine", "onnxruntime", str(abl2), wav,
          str(tmp_path / "o.wav")], "bsmamba export " + str(abl2) + " OUT.onnx --stream"),
        (["enhance", "--stream", "--engine", "onnxruntime", "--stream-chunk", "0",
          str(tmp_path / "stream.onnx"), wav, str(tmp_path / "o.wav")], "must be >= 1 sample"),
    ]  # fmt: skip
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "s.onnx").exists() and not (tmp_path / "o.wav").exists()
