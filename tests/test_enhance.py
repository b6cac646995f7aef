"""`bsmamba.load(...).enhance` and `bsmamba enhance` on real speech, any length, rate or layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import bsmamba
from bsmamba import cli
from bsmamba.enhance import Enhancer, enhance_path, load
from bsmamba.train import checkpoint as ckpt_io

SPEECH = Path(__file__).parent / "data" / "arctic_a0007.wav"  # CMU ARCTIC, 16 kHz, 3.1 s


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    clean, rate = sf.read(SPEECH, dtype="float32")
    assert rate == 16000
    noise = np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    return clean + 0.02 * noise


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = bsmamba.build_model("abl3", dim=8)
    return ckpt_io.save_model(tmp_path_factory.mktemp("ck") / "abl3.ckpt", model)


@pytest.mark.parametrize("norm, min_snr", [("layernorm", 40), ("groupnorm", 12)])
def test_chunked_output_matches_the_whole_file(tmp_path, noisy, norm, min_snr):
    torch.manual_seed(0)
    ckpt = ckpt_io.save_model(tmp_path / "m.ckpt", bsmamba.build_model("abl3", dim=8, norm=norm))
    x = np.concatenate([noisy, noisy[::-1]])[:-777]  # 5.9 s, not a multiple of anything
    whole = load(ckpt, chunk_s=60).enhance(x, 16000)
    for chunk_s, overlap_s in ((1.0, 0.25), (1.3, 0.5)):
        chunked = load(ckpt, chunk_s=chunk_s, overlap_s=overlap_s).enhance(x, 16000)
        assert chunked.shape == whole.shape == x.shape
        snr = 10 * np.log10(np.sum(whole**2) / np.sum((chunked - whole) ** 2))
        # per-frame norms: no seams, chunks agree with one pass; the published utterance-level
        # GroupNorm sees each chunk's own statistics, so chunks only approximate one pass
        assert snr > min_snr, (chunk_s, overlap_s, snr)


def test_rates_and_channels_are_handled_with_notes(ckpt, noisy):
    enhancer = bsmamba.load(ckpt)
    y = enhancer.enhance(noisy, 16000)
    assert y.dtype == np.float32 and y.shape == noisy.shape and enhancer.notes == []
    at_48k = soxr.resample(noisy, 16000, 48000)
    stereo = np.stack([at_48k, 0.5 * at_48k], axis=1)  # (S, C) as soundfile reads it
    y = enhancer.enhance(stereo, 48000)
    assert abs(len(y) - len(noisy)) <= 2
    assert enhancer.notes == ["downmixed 2 channels to mono", "resampled 48000 Hz -> 16000 Hz"]
    y2 = enhancer.enhance(torch.from_numpy(stereo.T.copy()), 48000)  # (C, S) tensor
    np.testing.assert_allclose(y2, y, atol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        enhancer.enhance(np.full(1000, np.nan, dtype=np.float32), 16000)


def test_folder_is_mirrored_and_bad_files_are_skipped(ckpt, noisy, tmp_path):
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    sf.write(src / "one.wav", noisy, 16000)
    at_44k = np.stack([noisy, noisy], axis=1)  # stereo, then resampled to 44.1 kHz
    sf.write(src / "a" / "b" / "two.flac", soxr.resample(at_44k, 16000, 44100), 44100)
    (src / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (src / "notes.txt").write_text("not audio, not looked at")
    summary = enhance_path(ckpt, src, tmp_path / "out")
    assert summary["files"] == 2 and summary["rtf"] > 0
    assert [Path(s["file"]).name for s in summary["skipped"]] == ["broken.wav"]
    assert {n["note"] for n in summary["notes"]} == {
        "downmixed 2 channels to mono",
        "resampled 44100 Hz -> 16000 Hz",
    }
    for rel in ("one.wav", "a/b/two.wav"):
        info = sf.info(tmp_path / "out" / rel)
        assert info.samplerate == 16000 and info.channels == 1
        assert abs(info.frames - len(noisy)) <= 2


def test_cli_file_to_file_and_errors(ckpt, noisy, tmp_path, capsys):
    sf.write(tmp_path / "in.wav", noisy, 16000)
    out = tmp_path / "deep" / "out.wav"
    assert (
        cli.main(["enhance", str(ckpt), str(tmp_path / "in.wav"), str(out), "--threads", "1"]) == 0
    )
    expected = bsmamba.load(ckpt).enhance(noisy, 16000)
    got, rate = sf.read(out, dtype="float32")
    assert rate == 16000
    np.testing.assert_allclose(got, np.clip(expected, -1, 1), atol=2 / 32768)  # 16-bit PCM
    assert cli.main(["enhance", str(tmp_path / "nope"), str(tmp_path / "in.wav"), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_enhancer_rejects_bad_chunking():
    with pytest.raises(ValueError, match="overlap_s < chunk_s"):
        Enhancer(bsmamba.build_model("bsrnn", dim=8, num_layers=1), chunk_s=1.0, overlap_s=1.0)
