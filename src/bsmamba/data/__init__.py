"""Audio data: the bundled demo set and VoiceBank+DEMAND in one folder layout.

    root = resolve("demo")                  # or the output folder of `prepare-voicebank`
    train = TrainSet(root, "train")         # (noisy, clean) 2 s crops, float32 (S,)
    valid = TrainSet(root, "valid")         # held-out training speakers
    test = root / TEST_DIRS[1]              # the test pairs: scored by `bsmamba evaluate`

The dataset class imports torch; it is loaded on first use so that ``bsmamba.data.audio``
(used by metric worker processes) stays light.
"""

from __future__ import annotations

from pathlib import Path

from bsmamba.data.layout import DIRS, TEST_DIRS, TRAIN_DIRS, manifest_snrs

__all__ = ["resolve", "TrainSet", "DIRS", "TEST_DIRS", "TRAIN_DIRS", "manifest_snrs"]


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


def __getattr__(name: str):
    if name == "TrainSet":
        from bsmamba.data import voicebank

        return getattr(voicebank, name)
    raise AttributeError(f"module 'bsmamba.data' has no attribute {name!r}")
