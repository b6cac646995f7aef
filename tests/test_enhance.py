"""`bsmamba.load(...).enhance` and `bsmamba enhance` on real speech, any length, rate or layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import bsmamba
from bsmamba import checkpoint as ckpt_io
from bsmamba import cli
from bsmamba.enhance import MARKER, Enhancer, enhance_path, load, plan

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


@pytest.mark.parametrize(
    "chunk_s, overlap_s, message",
    [
        (1.0, 1.0, "overlap_s=1.0: out of range, valid in [0, 0.5]"),
        (0.01, 0.0, "chunk_s=0.01: out of range, valid >= 1"),
        (float("nan"), 0.0, "chunk_s=nan: out of range"),
        (2.0, -0.1, "overlap_s=-0.1: out of range"),
    ],
)
def test_enhancer_rejects_bad_chunking(chunk_s, overlap_s, message):
    model = bsmamba.build_model("bsrnn", dim=8, num_layers=1)
    with pytest.raises(ValueError) as e:
        Enhancer(model, chunk_s=chunk_s, overlap_s=overlap_s)
    assert str(e.value).startswith(message)


def _tree(root: Path, names) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, np.zeros(160, np.float32), 16000)
    return root


def test_plan_refuses_what_would_overwrite_or_clash(tmp_path):
    src = _tree(tmp_path / "in", ["a.wav", "b.flac", "sub/c.wav"])
    with pytest.raises(ValueError, match="is the input folder"):
        plan(src, src)
    with pytest.raises(ValueError, match="would overwrite the input"):
        plan(src / "a.wav", src / "a.wav")
    with pytest.raises(ValueError, match="would overwrite the input"):
        plan(src / "a.wav", src)  # a folder as output: a.wav in it
    with pytest.raises(ValueError, match="is a folder but the output .*a.wav is a file"):
        plan(src, src / "a.wav")
    _tree(src, ["b.wav"])
    with pytest.raises(ValueError) as e:
        plan(src, tmp_path / "out")
    assert f"{src / 'b.flac'} and {src / 'b.wav'} would both be written to" in str(e.value)
    assert not (tmp_path / "out").exists()  # refused before anything was made


def test_plan_leaves_out_output_folders_and_keeps_foreign_files(tmp_path):
    src = _tree(tmp_path / "in", ["a.wav", "sub/c.wav"])
    pairs, notes = plan(src, src / "enhanced")  # an output folder inside the input folder
    assert [p.name for p, _ in pairs] == ["a.wav", "c.wav"]
    _tree(src / "enhanced", ["a.wav"])
    (src / "enhanced" / MARKER).write_text("{}")  # as enhance writes it
    pairs, notes = plan(src, tmp_path / "elsewhere")  # the next run, to another folder
    assert [p.name for p, _ in pairs] == ["a.wav", "c.wav"]
    assert notes == [f"left out {src / 'enhanced'}: output of an earlier bsmamba enhance"]
    foreign = _tree(tmp_path / "clean", ["a.wav"])  # someone's files, e.g. the clean references
    with pytest.raises(ValueError, match="already holds .*a.wav, not written by bsmamba enhance"):
        plan(src, foreign)
    assert len(plan(src, src / "enhanced")[0]) == 2  # enhance's own folder may be rewritten
