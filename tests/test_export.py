"""`bsmamba export` and `enhance --engine onnxruntime`: every preset's ONNX graph against torch."""

from __future__ import annotations

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
from bsmamba.presets import PRESETS

for _name in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_name, reason=f"the export extra ({_name}) is not installed")

import onnx  # noqa: E402

from bsmamba.export import TOLERANCE, export_onnx  # noqa: E402
from bsmamba.onnx_engine import OnnxModel  # noqa: E402

DATA = Path(__file__).parent / "data"
SPEECH = [DATA / "arctic_a0007.wav", DATA / "arctic_a0009.wav"]  # 16 kHz, 49,520 samples each
# Every preset's mixers, layout, norm and decoder at tiny width, on 3 bands of the 512-point
# STFT: the export's cost is tracing, which grows with the number of bands.
TINY = dict(dim=8, num_layers=1, band_plan=[64, 64, 129])


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    wavs = [sf.read(p, dtype="float32")[0] for p in SPEECH]
    return torch.from_numpy(np.stack(wavs))  # (2, 49520)


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_runs_in_onnxruntime_as_in_torch(preset, speech, tmp_path):
    torch.manual_seed(0)
    model = bsmamba.build_model(preset, **TINY).eval()
    proto = export_onnx(model)
    ops = {n.op_type for n in proto.graph.node}
    inner = {  # the ops inside loop bodies (a band pass runs in row chunks)
        m.op_type
        for n in proto.graph.node
        for a in n.attribute
        if a.type == onnx.AttributeProto.GRAPH
        for m in a.g.node
    }
    # the recurrences are in the graph as loops over any length, not unrolled
    assert ("Scan" in ops) or model.config["mixer"] == "lstm"
    assert ("LSTM" in ops | inner) == (model.config["mixer"] == "lstm")
    path = tmp_path / f"{preset}.onnx"
    onnx.save(proto, path)
    engine = OnnxModel(path)
    assert engine.config == model.config
    # batch and length other than the traced ones: 2 real utterances, then 1 s of one
    for wav in (speech, speech[:1, :16000]):
        with torch.inference_mode():
            spec = model.frontend.stft(wav)
            want = torch.view_as_real(model.forward_spectral(wav))
            got = engine.session.run(None, {"spec": torch.view_as_real(spec).numpy()})[0]
            assert np.abs(got - want.numpy()).max() <= TOLERANCE, preset
            err = (engine(wav) - model(wav)).abs().max().item()
        assert err <= TOLERANCE, (preset, err)


@pytest.mark.slow
def test_cli_export_then_enhance_with_onnxruntime_writes_the_torch_engines_files(tmp_path):
    torch.manual_seed(0)
    ckpt = ckpt_io.save_model(tmp_path / "abl3.ckpt", bsmamba.build_model("abl3", **TINY))
    out = _cli("export", str(ckpt), str(tmp_path / "abl3.onnx"))
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout and (tmp_path / "abl3.onnx").is_file()
    src = tmp_path / "in"
    src.mkdir()
    for p in SPEECH:
        (src / p.name).write_bytes(p.read_bytes())
    onnx_out = _cli("enhance", "--engine", "onnxruntime", str(tmp_path / "abl3.onnx"), str(src),
                    str(tmp_path / "ort"), "--chunk-s", "1.3", "--overlap-s", "0.5")  # fmt: skip
    assert onnx_out.returncode == 0, onnx_out.stderr
    torch_out = _cli("enhance", str(ckpt), str(src), str(tmp_path / "torch"),
                     "--chunk-s", "1.3", "--overlap-s", "0.5")  # fmt: skip
    assert torch_out.returncode == 0, torch_out.stderr
    for p in SPEECH:
        a, rate = sf.read(tmp_path / "ort" / p.name, dtype="float32")
        b, _ = sf.read(tmp_path / "torch" / p.name, dtype="float32")
        assert rate == 16000 and a.shape == b.shape == (49520,)
        assert np.abs(b).max() > 0.01  # the model wrote audio, not silence
        # 16-bit files: the engines may round a sample to neighbouring codes (1/32768 apart)
        assert np.abs(a - b).max() <= TOLERANCE


def test_unsupported_combinations_fail_clearly(tmp_path, capsys):
    ckpt = ckpt_io.save_model(tmp_path / "m.ckpt", bsmamba.build_model("modified", **TINY))
    wav = str(SPEECH[0])
    # a graph that is valid ONNX but no bsmamba export
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1])])  # fmt: skip
    onnx.save(onnx.helper.make_model(graph), tmp_path / "other.onnx")
    cases = [
        (["export", str(ckpt), str(tmp_path / "m.txt")], "must end in .onnx"),
        (["export", str(ckpt), str(tmp_path / "m.onnx"), "--opset", "12"], "valid 18.."),
        (["enhance", "--engine", "onnxruntime", str(ckpt), wav, str(tmp_path)], "bsmamba export"),
        (["enhance", str(tmp_path / "other.onnx"), wav, str(tmp_path)], "--engine onnxruntime"),
        (
            [
                "enhance",
                "--engine",
                "onnxruntime",
                str(tmp_path / "other.onnx"),
                wav,
                str(tmp_path),
            ],
            "not a bsmamba export",
        ),  # fmt: skip
        (
            [
                "enhance",
                "--engine",
                "onnxruntime",
                "--device",
                "cuda",
                str(tmp_path / "other.onnx"),
                wav,
                str(tmp_path),
            ],
            "runs on the CPU",
        ),  # fmt: skip
        (
            [
                "enhance",
                "--engine",
                "onnxruntime",
                "--stream",
                str(tmp_path / "other.onnx"),
                wav,
                str(tmp_path),
            ],
            "not a bsmamba export (no 'bsmamba-stream-step' metadata)",
        ),  # fmt: skip
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "m.onnx").exists()
    out = _cli("enhance", "--engine", "onnxruntime", str(ckpt), wav, str(tmp_path / "o.wav"))
    assert out.returncode == 2 and "bsmamba export" in out.stderr
    assert not (tmp_path / "o.wav").exists()


def test_importing_bsmamba_needs_no_extra_and_the_missing_one_is_named(tmp_path):
    ckpt = ckpt_io.save_model(tmp_path / "m.ckpt", bsmamba.build_model("modified", **TINY))
    code = (
        "import sys\n"
        "for name in ('onnx', 'onnxscript', 'onnxruntime', 'speechmos', 'librosa'):\n"
        "    sys.modules[name] = None  # import fails as if not installed\n"
        "import bsmamba, bsmamba.export, bsmamba.dnsmos, bsmamba.enhance, bsmamba.evaluate\n"
        "from bsmamba import cli\n"
        f"argv = ['export', {str(ckpt)!r}, {str(tmp_path / 'm.onnx')!r}, *sys.argv[1:]]\n"
        "sys.exit(cli.main(argv))\n"
    )
    for extra in ([], ["--stream"]):  # the streaming export: the same message
        out = subprocess.run([sys.executable, "-c", code, *extra], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert out.returncode == 2, out.stderr
        assert "needs the 'onnx' package" in out.stderr and "bsmamba[export]" in out.stderr
