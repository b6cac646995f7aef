"""One training step, as both ``measure`` and ``predict`` run it.

forward_spectral, L1 loss on the spectrum, backward, Adam step, in steady state (the Adam moments
already exist; gradients are freed between steps). Its peak is the live tensor bytes:
parameters + gradients + optimizer state + activations + the batch. ``StepOptions`` adds what a
run's config trains beside the generator: MetricGAN's discriminator (its parameters, gradients and
moments, and the generator's adversarial term through it: the heavier half of a published run)
and the weight average's copy of the parameters (``train.ema_decay``), counted in the same
categories as the generator's own (the average as parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

DEVICES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """``device`` if the plan knows it ('cpu' or 'cuda'), else a ``ValueError`` naming both."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    return device


@dataclass(frozen=True)
class StepOptions:
    """What a training step holds beside the generator and its spectral loss."""

    metricgan: bool = False  # the discriminator, and the adversarial term through it
    ema: bool = False  # the weight average: one more copy of the parameters and buffers

    @classmethod
    def of(cls, cfg) -> StepOptions:
        """The options a run with config ``cfg`` trains with."""
        return cls(metricgan=bool(cfg.train.metricgan), ema=float(cfg.train.ema_decay) > 0)


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


def extras(model: nn.Module, options: StepOptions | None) -> tuple[nn.Module | None, list]:
    """The discriminator (or None) and the weight average's tensors of a run with ``options``
    (None: neither), on ``model``'s device."""
    from bsmamba.losses import Discriminator

    options = options or StepOptions()
    disc = Discriminator().to(next(model.parameters()).device) if options.metricgan else None
    held = (*model.parameters(), *model.buffers()) if options.ema else ()
    return disc, [t.detach().clone() for t in held]


def step_loss(
    model: nn.Module, noisy: torch.Tensor, clean: torch.Tensor, disc: nn.Module | None = None
) -> torch.Tensor:
    """The generator's loss with its default weights (``losses.enhancement_loss``: plain complex
    L1 + compressed magnitude L1), + MetricGAN's adversarial term through ``disc`` if given."""
    from bsmamba.losses import enhancement_loss, generator_adv_loss, power_mag

    out = enhancement_loss(model, noisy, clean)
    if disc is None:
        return out.total
    clean_mag, est_mag = (power_mag(s).unsqueeze(1) for s in (out.ref_spec, out.est_spec))
    return out.total + generator_adv_loss(disc, clean_mag, est_mag)


def adam_with_state(*modules: nn.Module | None) -> torch.optim.Optimizer:
    """Adam over ``modules``' parameters whose moments exist already (steady state): one step
    with zero gradients. (Training gives the discriminator an Adam of its own: the same bytes.)"""
    params = [p for m in modules if m is not None for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    for p in params:
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


def static_bytes(
    model: nn.Module, opt: torch.optim.Optimizer, disc: nn.Module | None = None, average=()
) -> dict[str, int]:
    """The step's constant part: ``parameters_bytes`` (with buffers, the discriminator's and the
    weight average's), ``optimizer_state_bytes``."""
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    held = [*model.parameters(), *model.buffers(), *average]
    if disc is not None:
        held += [*disc.parameters(), *disc.buffers()]
    return {"parameters_bytes": tensor_bytes(held), "optimizer_state_bytes": tensor_bytes(state)}
