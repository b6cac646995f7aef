"""Fixed-length training crops: a random ``length``-sample window, the same for noisy and clean.

Utterances shorter than the crop are **tiled** (repeated end to end, as the BSRNN recipe does)
rather than zero-padded, so every training sample is full of speech and the loss is never
averaged over artificial silence.
"""

from __future__ import annotations

import numpy as np


def tile(wav: np.ndarray, length: int) -> np.ndarray:
    """Repeat ``wav`` (S,) end to end until it is at least ``length`` samples long."""
    if len(wav) == 0:
        raise ValueError("cannot tile an empty signal")
    reps = -(-length // len(wav))  # ceil
    return np.tile(wav, reps) if reps > 1 else wav


def crop_pair(
    noisy: np.ndarray, clean: np.ndarray, length: int, start: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The same ``length``-sample window of both signals (S,) -> (length,), (length,).

    ``start`` is the window start in samples; ``None`` picks it uniformly at random (NumPy's
    global generator is *not* used: pass a start drawn from your own generator for
    reproducibility). Short pairs are tiled first.
    """
    if noisy.shape != clean.shape:
        raise ValueError(f"noisy and clean differ in length: {noisy.shape} vs {clean.shape}")
    noisy, clean = tile(noisy, length), tile(clean, length)
    if start is None:
        start = int(np.random.default_rng().integers(len(noisy) - length + 1))
    if not 0 <= start <= len(noisy) - length:
        raise ValueError(f"crop start {start} outside [0, {len(noisy) - length}]")
    return noisy[start : start + length], clean[start : start + length]


def num_starts(num_samples: int, length: int) -> int:
    """How many crop starts an utterance of ``num_samples`` offers (after tiling)."""
    tiled = num_samples * max(1, -(-length // num_samples))
    return tiled - length + 1
