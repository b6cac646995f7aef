"""Whether forward hooks watch some layers: the fast inference paths call weights directly, so
they step aside when something (MAC counting, memory tracers) expects the layers to be called."""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as _m


def watched(*layers: nn.Module | None) -> bool:
    """True if global forward (pre-)hooks exist or any of ``layers`` has its own."""
    if _m._global_forward_hooks or _m._global_forward_pre_hooks:
        return True
    return any(m is not None and (m._forward_hooks or m._forward_pre_hooks) for m in layers)
