"""One training step, as both ``measure`` and ``predict`` run it.

forward_spectral, L1 loss on the spectrum, backward, Adam step, in steady state (the Adam moments
already exist; gradients are freed between steps). Its peak is the live tensor bytes:
parameters + gradients + optimizer state + activations + the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

DEVICES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """``device`` if the plan knows it ('cpu' or 'cuda'), else a ``ValueError`` naming both."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    return device


def build(model_kwargs: dict[str, Any]) -> nn.Module:
    """A ``BandSplitEnhancer`` from its constructor kwargs (on the CPU, float32)."""
    from bsmamba.model import BandSplitEnhancer

    return BandSplitEnhancer(**model_kwargs)


def make_batch(model: nn.Module, batch_size: int, segment_s: float, device) -> tuple:
    """(noisy, clean), each (batch_size, segment_s * sample_rate) float32."""
    samples = int(round(segment_s * model.sample_rate))
    if batch_size < 1 or samples < 1:
        raise ValueError(f"batch size {batch_size} and segment {segment_s} s must be positive")
    noisy = torch.randn(batch_size, samples, device=device)
    return noisy, noisy * 0.5


def step_loss(model: nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The generator's spectral loss with its default weights (``losses.enhancement_loss``:
    plain complex L1 + compressed magnitude L1); no MetricGAN term."""
    from bsmamba.losses import enhancement_loss

    return enhancement_loss(model, noisy, clean).total


def adam_with_state(model: nn.Module) -> torch.optim.Optimizer:
    """Adam whose moments exist already (steady state): one step with zero gradients."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: moments are created, parameters unchanged
    opt.zero_grad(set_to_none=True)
    return opt


def tensor_bytes(tensors) -> int:
    """Bytes of distinct storages among ``tensors``."""
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            seen[id(t.untyped_storage())] = t.untyped_storage().nbytes()
    return sum(seen.values())


def static_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, int]:
    """The step's constant part: ``parameters_bytes`` (with buffers), ``optimizer_state_bytes``."""
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {
        "parameters_bytes": tensor_bytes([*model.parameters(), *model.buffers()]),
        "optimizer_state_bytes": tensor_bytes(state),
    }
