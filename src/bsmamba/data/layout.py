"""The 16 kHz folder layout every data set here shares: folder names, file names, and the SNRs
its manifest records. (``prepare-voicebank`` writes it, the demo set imitates it; evaluate and
the study read it.) Imports nothing of bsmamba, so every data module can build on it."""

from __future__ import annotations

import json
from pathlib import Path

# (clean, noisy) folder names of the VoiceBank 16 kHz layout.
TRAIN_DIRS = ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav")
TEST_DIRS = ("clean_testset_wav", "noisy_testset_wav")
DIRS = TRAIN_DIRS + TEST_DIRS  # all four; the release's sets bsmamba reads have the same names


def speaker(name: str) -> str:
    """Speaker id of a file name: the prefix before the first ``_`` (``p226_001.wav`` -> p226)."""
    return Path(name).name.split("_", 1)[0]


def manifest_snrs(folder: str | Path) -> dict[str, float]:
    """File name -> mixture SNR (dB) for the pairs of ``folder`` (a clean or noisy folder of a
    prepared or demo set), from the ``manifest.json`` beside it; ``{}`` where it has none."""
    folder = Path(folder)
    manifest = folder.parent / "manifest.json"
    if not manifest.is_file():
        return {}
    want = folder.name.replace("clean", "noisy")  # the noisy twin folder records the SNR
    return {
        e["file"]: float(e["snr_db"])
        for e in json.loads(manifest.read_text()).get("files", [])
        if e.get("dir") == want and e.get("snr_db") is not None
    }
