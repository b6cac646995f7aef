"""bsmamba: band-split speech enhancement (BSRNN and band-split (Bi)Mamba) that runs anywhere.

Public API::

    model = bsmamba.build_model("abl3")          # any preset, keyword overrides
    enhancer = bsmamba.load("runs/abl3-demo-s0")  # a checkpoint or a run directory
    clean = enhancer.enhance(waveform, sample_rate)
"""

from __future__ import annotations

from bsmamba.presets import PRESETS

__version__ = "0.1.0"
__all__ = ["PRESETS", "__version__", "build_model", "load"]


def build_model(preset: str = "abl3", **overrides):
    """Build a ``BandSplitEnhancer`` from a preset name and constructor overrides."""
    from bsmamba.model import build_model as _build

    return _build(preset, **overrides)


def load(checkpoint, device: str = "cpu", **kwargs):
    """Load a checkpoint (``.ckpt`` or run directory) as an ``Enhancer`` (``weights_only``).

    Keyword arguments (``chunk_s``, ``overlap_s`` ...) go to ``bsmamba.enhance.load``.
    """
    from bsmamba.enhance import load as _load

    return _load(checkpoint, device=device, **kwargs)
