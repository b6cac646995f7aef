"""Sequence mixers behind one interface: ``(B, L, dim) -> (B, L, dim)``.

``get_mixer(name, dim, axis, **options)`` builds one. ``axis`` is ``"time"`` or ``"band"``:
BSRNN's ``lstm`` is unidirectional over time and bidirectional across bands; ``mamba`` is
unidirectional on both axes (the plan's "modified" model replaces every LSTM with it); ``bimamba``
is bidirectional on both. Options a mixer does not use (e.g. d_state for lstm) are ignored.
"""

from __future__ import annotations

from torch import nn

MIXERS = ("lstm", "mamba", "bimamba")
AXES = ("time", "band")
_MAMBA_KEYS = ("d_state", "d_conv", "expand", "dt_rank", "scan_backend")


def get_mixer(name: str, dim: int, axis: str = "time", **options) -> nn.Module:
    """A mixer by name: lstm | mamba | bimamba (options: d_state, d_conv, expand, dt_rank,
    scan_backend, merge)."""
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; valid mixers: {', '.join(MIXERS)}")
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; valid axes: {', '.join(AXES)}")
    mamba_kwargs = {k: options[k] for k in _MAMBA_KEYS if k in options}
    if name == "lstm":
        from bsmamba.sequence.lstm import LSTMMixer

        return LSTMMixer(dim, bidirectional=axis == "band")
    if name == "mamba":
        from bsmamba.sequence.mamba import Mamba

        return Mamba(dim, **mamba_kwargs)
    from bsmamba.sequence.bimamba import BiMamba

    return BiMamba(dim, merge=options.get("merge", "concat"), **mamba_kwargs)
