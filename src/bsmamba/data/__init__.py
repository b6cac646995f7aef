"""Audio data: the bundled demo set and VoiceBank+DEMAND in one folder layout.

    root = resolve("demo")                  # or the output folder of `prepare-voicebank`
    train = TrainSet(root, "train")         # (noisy, clean) 2 s crops, float32 (S,)
    valid = TrainSet(root, "valid")         # held-out training speakers
    test = TestSet(root)                    # (name, noisy, clean), full length

The dataset classes import torch; they are loaded on first use so that ``bsmamba.data.audio``
(used by metric worker processes) stays light.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["resolve", "TrainSet", "TestSet"]

# The VoiceBank 16 kHz layout (clean, noisy) that prepare-voicebank writes and the demo imitates.
TRAIN_DIRS = ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav")
TEST_DIRS = ("clean_testset_wav", "noisy_testset_wav")


def resolve(spec: str | Path) -> Path:
    """``"demo"`` -> the demo set (mixed into the cache once); a path -> checked prepared folder.

    Raises ``FileNotFoundError``/``ValueError`` naming the folder and the fix (for the raw 48 kHz
    release: run ``bsmamba prepare-voicebank``).
    """
    if str(spec) == "demo":
        from bsmamba.data import demo

        return demo.materialise()
    from bsmamba.data.voicebank import check_root

    return check_root(Path(spec))


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


def __getattr__(name: str):
    if name in ("TrainSet", "TestSet"):
        from bsmamba.data import voicebank

        return getattr(voicebank, name)
    raise AttributeError(f"module 'bsmamba.data' has no attribute {name!r}")
