"""audio.read/write: real files round-trip; every kind of bad file fails with its name."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba.data import audio

DATA = Path(__file__).parent / "data"


def test_read_real_wav_and_round_trip(tmp_path):
    wav = audio.read(DATA / "arctic_a0007.wav")
    assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) == 49520
    assert 0.05 < np.abs(wav).max() <= 1.0
    audio.write(tmp_path / "x.wav", wav, 16000)
    back = audio.read(tmp_path / "x.wav")
    assert np.abs(back - wav).max() <= 1 / 32768  # 16-bit PCM: exact up to one step
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_wrong_rate_is_an_error_unless_resample(tmp_path):
    path = DATA / "sp09.wav"  # 8 kHz
    with pytest.raises(audio.AudioError, match=r"sp09.wav.*8000 Hz.*16000.*resample"):
        audio.read(path)
    up = audio.read(path, resample=True)
    assert abs(len(up) - 2 * sf.info(str(path)).frames) <= 2
    assert len(audio.read(path, sample_rate=8000)) == sf.info(str(path)).frames


@pytest.mark.parametrize(
    "kind, match",
    [
        ("stereo", "2 channels"),
        ("empty", "empty"),
        ("truncated", "truncated"),
        ("text", "not a readable audio"),
        ("nan", "NaN or Inf"),
        ("header_only", "no samples|truncated"),
    ],
)
def test_bad_files_name_the_file(tmp_path, kind, match):
    wav = audio.read(DATA / "arctic_a0009.wav")[:8000]
    path = tmp_path / f"bad_{kind}.wav"
    if kind == "stereo":
        sf.write(path, np.stack([wav, wav], 1), 16000)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        sf.write(path, wav, 16000, "PCM_16")
        path.write_bytes(path.read_bytes()[:-5000])
    elif kind == "text":
        path.write_text("this is not audio\n" * 20)
    elif kind == "nan":
        bad = wav.copy()
        bad[100] = np.nan
        sf.write(path, bad, 16000, "FLOAT")
    elif kind == "header_only":
        sf.write(path, wav[:0], 16000, "PCM_16")
    with pytest.raises(audio.AudioError, match=match) as e:
        audio.read(path)
    assert str(path) in str(e.value)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        audio.read("/nonexistent/nope.wav")


def test_write_refuses_nan(tmp_path):
    with pytest.raises(audio.AudioError):
        audio.write(tmp_path / "n.wav", np.array([0.0, np.nan]), 16000)
    assert not (tmp_path / "n.wav").exists()
