"""A faithful miniature of the VoiceBank+DEMAND release, generated for tests.

Like the release (doi:10.7488/ds/2117): 48 kHz 16-bit mono WAVs named ``p226_001.wav``; the
clean and noisy copy of an utterance share its name; four sets (training: ``*_trainset_28spk_wav``,
test: ``*_testset_wav`` with speakers p232 and p257) plus the 56-speaker training set that sits
beside them in the download; ``logfiles/`` with ``log_readme.txt`` and one "name noise snr"
line per noisy file (``log_trainset_28spk.txt``, ``log_trainset_56spk.txt``,
``log_testset.txt``); each set as the zip users download (members under ``NAME/``) or as its
extracted folder. Unlike it: a few files per speaker, ~1.2 s each, so tests stay fast.

The speech is real (the bundled demo clips, 16 kHz, resampled to 48 kHz with soxr), and so is
the noise (the bundled CC0 recordings), added at exactly the logged SNR (whole-utterance
energies). Generated deterministically.

    src = vbmini.make(tmp_path)                       # zips, logfiles/ beside them
    src = vbmini.make(tmp_path, zips=False, logfiles="up")
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

AUDIO = Path(__file__).resolve().parents[1] / "src/bsmamba/data/demo_audio"
RATE = 48000
TRAIN_SPEAKERS = ("p226", "p227", "p228", "p287")  # p226 and p287: the validation hold-out
TEST_SPEAKERS = ("p232", "p257")
SPEAKERS_56 = ("p234", "p236")  # stand-ins for the 56-speaker training set
TRAIN_SNRS = (0.0, 5.0, 10.0, 15.0)
TEST_SNRS = (2.5, 7.5, 12.5, 17.5)
TRAIN_NOISES = ("babble", "cafe", "kitchen", "meeting")  # labels only; audio: CC0 recordings
TEST_NOISES = ("bus", "living", "office", "psquare")
SETS = {
    "trainset_28spk": ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"),
    "trainset_56spk": ("clean_trainset_56spk_wav", "noisy_trainset_56spk_wav"),
    "testset": ("clean_testset_wav", "noisy_testset_wav"),
}


def _clips(seconds: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real speech clips (>= ``seconds``) and noise recordings, at 48 kHz, in a fixed order."""
    index = json.loads((AUDIO / "index.json").read_text())
    speech = []
    for item in index["speech"]:
        if item["duration_s"] >= seconds:
            wav, rate = sf.read(AUDIO / item["file"], dtype="float32")
            speech.append(soxr.resample(wav[: int(seconds * rate)], rate, RATE))
    noise = []
    for item in index["noise"]:
        wav, rate = sf.read(AUDIO / item["file"], dtype="float32")
        noise.append(soxr.resample(wav, rate, RATE))
    return speech, noise


def plan(per_train: int = 3, per_test: int = 4) -> dict[str, list[tuple[str, str, float]]]:
    """(name, noise label, snr_db) of every file of each set, in the release's naming."""
    out = {}
    for subset, speakers, per, noises, snrs in (
        ("trainset_28spk", TRAIN_SPEAKERS, per_train, TRAIN_NOISES, TRAIN_SNRS),
        ("trainset_56spk", SPEAKERS_56, 2, TRAIN_NOISES, TRAIN_SNRS),
        ("testset", TEST_SPEAKERS, per_test, TEST_NOISES, TEST_SNRS),
    ):
        rows = []
        for spk in speakers:
            for i in range(per):
                k = len(rows)
                rows.append((f"{spk}_{i + 1:03d}", noises[k % len(noises)], snrs[k % len(snrs)]))
        out[subset] = rows
    return out


def _mix(clean: np.ndarray, noise: np.ndarray, snr_db: float, start: int) -> np.ndarray:
    seg = np.resize(np.roll(noise, -start), len(clean))  # a span of the recording, tiled
    gain = np.sqrt(np.sum(clean**2) / (np.sum(seg**2) * 10 ** (snr_db / 10)))
    return clean + gain * seg


def make(
    root: str | Path,
    zips: bool = True,
    logfiles: str | None = "beside",
    nested: bool = False,
    per_train: int = 3,
    per_test: int = 4,
    seconds: float = 1.2,
) -> Path:
    """Write the miniature release under ``root``; returns SRC, the folder of its sets.

    ``zips``: each set as ``NAME.zip`` (members ``NAME/p226_001.wav``), else as folder
    ``NAME/`` (``nested``: ``NAME/NAME/``, a zip extracted into a folder of its own name).
    ``logfiles``: ``"beside"`` (SRC/logfiles/), ``"up"`` (SRC/../logfiles/), ``"zip"``
    (SRC/logfiles.zip) or None.
    """
    root = Path(root)
    src = root / "release"
    src.mkdir(parents=True)
    speech, noise = _clips(seconds)
    logs, k = {}, 0
    for subset, rows in plan(per_train, per_test).items():
        clean_set, noisy_set = SETS[subset]
        pairs = {}
        for name, _, snr in rows:
            clean = speech[k % len(speech)]
            rec = noise[k % len(noise)]
            noisy = _mix(clean, rec, snr, start=(7919 * k) % len(rec))
            peak = max(1.0, float(np.abs(noisy).max()) / 0.95)  # the pair scaled alike
            pairs[f"{name}.wav"] = (clean / peak, noisy / peak)
            k += 1
        for set_name, which in ((clean_set, 0), (noisy_set, 1)):
            files = {n: p[which] for n, p in pairs.items()}
            _write_set(src, set_name, files, zips, nested)
        logs[f"log_{subset}.txt"] = "".join(f"{n} {lab} {snr:g}\n" for n, lab, snr in rows)
    logs["log_readme.txt"] = (
        "Each line: file name, noise type, SNR (dB) of the noisy file of that name.\n"
    )
    if logfiles is not None:
        _write_logs(src, logs, logfiles)
    return src


def _write_set(src: Path, name: str, files: dict, zips: bool, nested: bool) -> None:
    if zips:
        with zipfile.ZipFile(src / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{name}/", b"")
            for fname, wav in files.items():
                tmp = src / f".{fname}"
                sf.write(tmp, wav, RATE, "PCM_16")
                zf.write(tmp, f"{name}/{fname}")
                tmp.unlink()
        return
    folder = src / name / name if nested else src / name
    folder.mkdir(parents=True)
    for fname, wav in files.items():
        sf.write(folder / fname, wav, RATE, "PCM_16")


def _write_logs(src: Path, logs: dict[str, str], where: str) -> None:
    if where == "zip":
        with zipfile.ZipFile(src / "logfiles.zip", "w") as zf:
            for n, text in logs.items():
                zf.writestr(f"logfiles/{n}", text)
        return
    folder = {"beside": src, "up": src.parent}[where] / "logfiles"
    folder.mkdir()
    for n, text in logs.items():
        (folder / n).write_text(text)


def snrs(subset: str = "testset", per_train: int = 3, per_test: int = 4) -> dict[str, float]:
    """File name -> logged SNR of ``subset`` (what prepare must record)."""
    return {f"{n}.wav": s for n, _, s in plan(per_train, per_test)[subset]}
