"""Streaming (bsmamba.stream): chunk by chunk equals offline, the latency, the refusals, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import bsmamba
from bsmamba import build_model
from bsmamba import checkpoint as ckpt_io
from bsmamba.causal import causal_problems, latency_samples
from bsmamba.sequence.lstm import LSTMMixer
from bsmamba.sequence.mamba import Mamba
from bsmamba.stream import Streamer

SPEECH = Path(__file__).parent / "data" / "arctic_a0009.wav"  # CMU ARCTIC, 16 kHz, 3.1 s
HOP = 128

# tiny causal configurations: Mamba on both axes (the causal preset), BSRNN's LSTM over time
# with its BiLSTM across bands (a band pass lies inside one frame: causal in time), and more
CONFIGS = {
    "causal-mamba": ("causal", {"dim": 16, "num_layers": 1, "d_state": 4}),
    "bsrnn-layernorm": ("bsrnn", {"dim": 8, "num_layers": 1, "norm": "layernorm"}),
    # the adaptive decoder (bands of one width, other hidden widths) and a layout without bands
    "intra-adaptive": (
        "causal",
        {"dim": 8, "d_state": 4, "layout": "intra", "decoder": "adaptive"},
    ),
}


def _model(name: str):
    torch.manual_seed(0)
    preset, kw = CONFIGS[name]
    return build_model(preset, **kw).eval()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    x, rate = sf.read(SPEECH, dtype="float32")
    assert rate == 16000
    return x


def _stream(streamer: Streamer, x, chunk: int):
    out = [streamer.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return out, streamer.flush()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_chunk_by_chunk_equals_offline(name, speech):
    model = _model(name)
    x = speech[3000:12999]  # 9,999 samples of speech: an odd length
    with torch.no_grad():
        offline = model(torch.from_numpy(x)[None])[0].numpy()
    streamer = Streamer(model)  # one streamer: flush() starts the next stream afresh
    for chunk in (HOP, 3 * HOP, 64 * HOP, 1, 77, 1000):  # 1, 3 and 64 hops; odd sizes
        parts, rest = _stream(streamer, x, chunk)
        assert all(p.dtype == np.float32 for p in parts)
        y = np.concatenate([*parts, rest])
        assert y.shape == x.shape
        assert np.abs(y - offline).max() < 1e-5, chunk
        # outputs arrive as the input does, not all at flush: all but the last ~latency
        assert len(y) - len(rest) >= len(x) - latency_samples(model.config) - chunk
    for n in (1, 100, 256, 257, 300, 641):  # shorter than a frame, than the reflection, ...
        with torch.no_grad():
            offline = model(torch.from_numpy(x[:n])[None])[0].numpy()
        parts, rest = _stream(streamer, torch.from_numpy(x[:n]), 50)  # tensors in, tensors out
        y = torch.cat([*parts, rest]).numpy()
        assert y.shape == (n,) and np.abs(y - offline).max() < 1e-5, n


def test_in_float64_the_only_difference_is_rounding(speech):
    model = _model("causal-mamba").double()
    x = torch.from_numpy(speech[3000:7001]).double()
    with torch.no_grad():
        offline = model(x[None])[0]
    for chunk in (3 * HOP, 77):
        parts, rest = _stream(Streamer(model), x, chunk)
        assert torch.cat([*parts, rest]).sub(offline).abs().max() < 1e-12


def test_step_continues_a_sequence_exactly():
    torch.manual_seed(0)
    x = torch.randn(3, 11, 8, dtype=torch.float64)
    mamba = Mamba(8, d_state=4, scan_backend="reference").double()
    lstm = LSTMMixer(8).double()
    for block in (mamba, lstm):
        with torch.no_grad():
            whole = block(x)
            state, parts = block.init_state(3, dtype=torch.float64), []
            for piece in x.split([1, 2, 5, 3], dim=1):
                y, *state = block.step(piece, *state)
                parts.append(y)
        torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="reads the future"):
        LSTMMixer(8, bidirectional=True).step(x, *lstm.init_state(3))


def test_non_causal_configurations_are_refused_with_the_reason():
    tiny = {"dim": 8, "num_layers": 1, "d_state": 4}
    with pytest.raises(ValueError) as e:
        Streamer(build_model("abl2", **tiny))
    msg = str(e.value)
    assert "abl2 is not a causal configuration" in msg
    assert "norm=groupnorm normalises over the whole utterance" in msg
    assert "mixer=bimamba on the time axis reads the future" in msg
    # one reason each: the published norm alone, the bidirectional time mixer alone
    assert causal_problems(build_model("modified", **tiny).config) == [
        "norm=groupnorm normalises over the whole utterance (norm=layernorm normalises each frame)"
    ]
    problems = causal_problems(build_model("causal", mixer="bimamba", **tiny).config)
    assert len(problems) == 1 and problems[0].startswith("mixer=bimamba")
    assert causal_problems(build_model("causal", **tiny).config) == []
    assert causal_problems(build_model("bsrnn", norm="layernorm", **tiny).config) == []


def test_latency_is_the_window_plus_one_hop_measured_from_an_impulse():
    model = _model("causal-mamba")
    latency = latency_samples(model.config)
    assert latency == 512 + 128  # 40 ms at 16 kHz: the 32 ms frame and one frame of look-ahead
    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal(3000)).astype(np.float32)
    # when is each output sample emitted? fed one sample at a time: at most `latency` samples
    # after it came in (exactly that for the first sample of a hop)
    streamer, emitted_at = Streamer(model), []
    for i in range(len(x)):
        emitted_at += [i + 1] * len(streamer.process(x[i : i + 1]))
    waited = np.array(emitted_at) - np.arange(len(emitted_at))
    assert waited.max() == latency
    # and no exact streamer could be much quicker: an impulse at sample q changes output samples
    # up to nearly `latency` before it (the decoder's look-ahead frame plus the STFT frame)
    q = 16 * HOP - 1  # the last sample of a hop: the frames that hold it reach furthest back
    kick = x.copy()
    kick[q] += 1.0
    with torch.no_grad():
        diff = (model(torch.from_numpy(kick)[None]) - model(torch.from_numpy(x)[None]))[0]
    # bit-exact: frames without sample q compute the same. The earliest changes come through
    # the windows' tails and are tiny, so the first one seen depends on rounding (632-635 seen)
    reach = q - int(torch.nonzero(diff)[0])
    assert latency - 32 < reach < latency, reach
    # the streamer emitted that output sample as soon as sample q was in
    n = q - reach
    assert emitted_at[n] == q + 1


def test_enhance_stream_cli_writes_what_offline_writes(tmp_path, speech):
    ckpt = ckpt_io.save_model(tmp_path / "causal.ckpt", _model("causal-mamba"))
    x = speech[:20001]  # 1.25 s
    noisy = x + 0.02 * np.random.default_rng(0).standard_normal(len(x)).astype("f4")
    sf.write(tmp_path / "in.wav", noisy, 16000, subtype="FLOAT")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bsmamba.cli", "enhance", str(ckpt), str(tmp_path / "in.wav")]
    run = subprocess.run(
        [*cmd, str(tmp_path / "out.wav"), "--stream", "--stream-chunk", "1001", "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "streaming in chunks of 1001 samples, algorithmic latency 640 samples" in run.stdout
    got, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    expected = bsmamba.load(ckpt).enhance(noisy, 16000)  # offline: one pass
    assert rate == 16000 and got.shape == expected.shape
    np.testing.assert_allclose(got, np.clip(expected, -1, 1), atol=2 / 32768)  # 16-bit PCM
    # a model that cannot stream: exit 2, the reason, nothing written
    bad = ckpt_io.save_model(tmp_path / "abl3.ckpt", build_model("abl3", dim=8, num_layers=1))
    cmd[4] = str(bad)
    run = subprocess.run(
        [*cmd, str(tmp_path / "no.wav"), "--stream"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2 and "norm=groupnorm normalises" in run.stderr
    assert not (tmp_path / "no.wav").exists()


def test_the_causal_preset_streams_and_joins_a_study():
    from bsmamba import config
    from bsmamba.study import runner

    cfg = config.load(overrides=["study.systems=[bsrnn,causal]"])
    run = runner.run_config(cfg, "causal", 0, Path("unused"))
    assert run.model.norm == "layernorm" and run.model.mixer == "mamba"
