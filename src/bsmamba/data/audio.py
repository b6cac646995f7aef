"""Reading and writing audio with errors that name the file and the fix.

Everything in bsmamba reads audio through :func:`read`, so a stereo file, a 48 kHz file, a
truncated or empty file, a non-audio file or NaN samples fail here, once, with one clear line,
instead of as a shape error deep inside a model or a metric.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from bsmamba import files

RESAMPLER = "soxr-HQ"  # the one resampler bsmamba uses (recorded in manifests)


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the fix."""


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float audio ``(S,)`` with soxr's high-quality filter; returns float32 ``(S',)``."""
    import soxr

    if from_rate == to_rate:
        return np.asarray(wav, dtype=np.float32)
    return soxr.resample(np.asarray(wav, dtype=np.float32), from_rate, to_rate, quality="HQ")


def wav_truncated(path: Path) -> str | None:
    """For RIFF/WAVE files: a message if the header promises more data than the file holds.

    libsndfile quietly reads what is there, so a half-copied file would otherwise look valid.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, clen = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                have = size - pos - 8
                if clen != 0xFFFFFFFF and have < clen:
                    return f"truncated: header says {clen} data bytes, file holds {have}"
                return None
            pos += 8 + clen + (clen & 1)
    return "truncated: no data chunk"


def read(path: str | Path, sample_rate: int = 16000, resample: bool = False) -> np.ndarray:
    """Read a mono audio file as float32 ``(S,)`` in [-1, 1] at ``sample_rate`` Hz.

    A file at another rate is an error unless ``resample=True`` (then soxr HQ converts it).
    Raises ``FileNotFoundError`` for a missing file and :class:`AudioError` (a ``ValueError``) for
    stereo, empty, truncated, non-audio files and NaN/Inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    problem = wav_truncated(path)
    if problem:
        raise AudioError(f"{path}: {problem}; re-copy or re-export the file")
    try:
        wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({e})") from None
    if wav.shape[1] != 1:
        raise AudioError(
            f"{path}: {wav.shape[1]} channels; bsmamba expects mono "
            "(mix down first, e.g. `sox in.wav -c 1 out.wav`)"
        )
    wav = wav[:, 0]
    if wav.size == 0:
        raise AudioError(f"{path}: no samples")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: contains NaN or Inf samples")
    if rate != sample_rate:
        if not resample:
            raise AudioError(
                f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz; resample it "
                "(for VoiceBank+DEMAND use `bsmamba prepare-voicebank`) or pass resample=True "
                "(`--resample` on the command line)"
            )
        wav = globals()["resample"](wav, rate, sample_rate)
    return wav


def convert(src: str | Path, dst: str | Path, sample_rate: int = 16000) -> float:
    """Read any mono file (checked by :func:`read`), resample it (soxr HQ) and write 16-bit WAV
    ``dst``; returns seconds."""
    out = read(src, sample_rate, resample=True)
    write(dst, out, sample_rate)
    return len(out) / sample_rate


def write(path: str | Path, wav: np.ndarray, sample_rate: int = 16000, subtype: str = "PCM_16"):
    """Write float audio ``(S,)`` atomically (16-bit PCM WAV by default; clipped to [-1, 1])."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: refusing to write NaN or Inf samples")
    wav = np.clip(wav, -1.0, 1.0)
    fmt = Path(path).suffix.lstrip(".").upper() or "WAV"
    fmt = {"OGG": "OGG", "FLAC": "FLAC"}.get(fmt, "WAV")
    buf = io.BytesIO()  # encode in memory: a full disk then fails in one f.write, as one OSError
    sf.write(buf, wav, sample_rate, subtype, format=fmt)
    return files.atomic_write(path, lambda f: f.write(buf.getvalue()))
