"""The release's audio: every file's header checked (48 kHz mono) before any work, and one file
converted to its 16 kHz copy. ``prepare-voicebank``'s worker processes import this module, so it
stays free of torch.
"""

from __future__ import annotations

import io
import struct
import zipfile

import soundfile as sf

from bsmamba.data import audio
from bsmamba.data.release import Release
from bsmamba.data.release_sets import RATE, Set, open_zip, some


def _wav_format(head: bytes) -> tuple[int, int] | str:
    """(sample rate, channels) from the first bytes of a WAV file, or what is wrong."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return "not a WAV file"
    pos = 12
    while pos + 8 <= len(head):
        cid, size = struct.unpack("<4sI", head[pos : pos + 8])
        if cid == b"fmt " and pos + 16 <= len(head):
            channels, rate = struct.unpack("<HI", head[pos + 10 : pos + 16])
            return rate, channels
        pos += 8 + size + (size & 1)
    return "no format chunk in its first bytes"


def _head(s: Set, name: str, zf: zipfile.ZipFile | None, n: int = 4096) -> bytes:
    member = s.members[name][0]
    if zf is not None:
        with zf.open(member) as f:
            return f.read(n)
    with open(member, "rb") as f:
        return f.read(n)


def check_audio(rel: Release) -> None:
    """Read every file's WAV header: 48 kHz mono, or a ``ValueError`` naming the files.

    A file at another rate is not an original (often a resampled copy written back into the
    release); preparing it would silently mix two resamplings.
    """
    bad: list[str] = []
    for s in rel.sets.values():
        zf = open_zip(s.path) if s.kind == "zip" else None
        try:
            for name in s.members:
                fmt = _wav_format(_head(s, name, zf))
                if isinstance(fmt, str):
                    bad.append(f"{s.where(name)}: {fmt}")
                elif fmt[0] != RATE:
                    bad.append(f"{s.where(name)} is at {fmt[0]} Hz")
                elif fmt[1] != 1:
                    bad.append(f"{s.where(name)} has {fmt[1]} channels")
        finally:
            if zf is not None:
                zf.close()
    if bad:
        prepared = (rel.src / "manifest.json").is_file() or (rel.src / "source.json").is_file()
        hint = (
            f"{rel.src} is prepare-voicebank output (16 kHz), not the release"
            if prepared
            else "the release is 48 kHz mono: these are not its original files (resampled or "
            "converted copies written into it?); restore them from the release's zips"
        )
        raise ValueError(f"{some(bad)}: {hint}")


_ZIPS: dict[str, zipfile.ZipFile] = {}  # per process: each worker opens each zip once


def close_zips() -> None:
    """Close the zips :func:`convert` opened in this process."""
    while _ZIPS:
        _ZIPS.popitem()[1].close()


def convert(container: str, member: str, dst: str, rate: int = 16000) -> None:
    """Resample one file of the release (``member`` of the zip ``container``, or the file
    ``member`` when ``container`` is a folder) to ``rate`` Hz with soxr HQ; writes ``dst``
    atomically as 16-bit WAV."""
    if not container.endswith(".zip"):
        audio.convert(member, dst, rate)
        return
    if container not in _ZIPS:
        _ZIPS[container] = zipfile.ZipFile(container)
    where = f"{container} ({member})"
    try:
        wav, got = sf.read(io.BytesIO(_ZIPS[container].read(member)), dtype="float32")
    except (sf.LibsndfileError, RuntimeError, zipfile.BadZipFile) as e:
        raise audio.AudioError(f"{where}: not readable ({e}); download the zip again") from None
    if wav.ndim != 1 or got != RATE:
        raise audio.AudioError(f"{where}: not 48 kHz mono; download the zip again")
    audio.write(dst, audio.resample(wav, got, rate), rate)
