"""Training losses: the BSRNN recipe on power-law compressed spectra, plus MetricGAN's parts.

Generator loss (defaults = the BSRNN 16 kHz recipe)::

    L = w_ri * L1(real, imag of Sc_est - Sc_ref) + w_mag * L1(|S_est|^c - |S_ref|^c)
        + w_wave * L1(x_est - x_ref) + w_gan * (D(|S_ref|^c, |S_est|^c) - 1)^2

with ``Sc = |S|^c * exp(j angle S)`` the compressed complex spectrum (c = 0.3), computed on the
model's ``forward_spectral`` estimate and ``frontend.stft(clean)`` (see docs/CONTRACTS.md).

The MetricGAN discriminator D learns to predict the real (normalised) PESQ of an estimate from
its compressed magnitude beside the clean one; the generator is pushed towards D's "PESQ = 1".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

PESQ_MIN, PESQ_MAX = 1.0, 4.5  # WB MOS-LQO range used to map PESQ to [0, 1]


def compressed(spec: Tensor, c: float = 0.3, eps: float = 1e-8) -> Tensor:
    """Power-law compressed complex spectrum ``|S|^c * exp(j angle S)``; complex (B, F, T)."""
    if c == 1.0:
        return spec
    mag = (spec.real.square() + spec.imag.square() + eps).sqrt()  # eps: finite grad at |S| = 0
    return spec * mag.pow(c - 1.0)


def compressed_mag(spec: Tensor, c: float = 0.3, eps: float = 1e-8) -> Tensor:
    """``|S|^c``, real (B, F, T)."""
    return (spec.real.square() + spec.imag.square() + eps).pow(c / 2)


@dataclass
class LossOutput:
    """The total loss, its named parts (floats for logging) and what later terms reuse."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    est_spec: Tensor | None = None  # complex (B, F, T)
    ref_spec: Tensor | None = None  # complex (B, F, T)


def enhancement_loss(
    model: nn.Module,
    noisy: Tensor,
    clean: Tensor,
    ri_weight: float = 0.5,
    mag_weight: float = 0.5,
    wave_weight: float = 0.0,
    compress: float = 0.3,
) -> LossOutput:
    """The spectral (+ optional waveform) loss of ``model`` on a batch.

    noisy, clean: (B, S) float waveforms at the model's sample rate. Returns a ``LossOutput``
    whose ``total`` is a scalar tensor.
    """
    est = model.forward_spectral(noisy)  # complex (B, F, T)
    ref = model.frontend.stft(clean)
    est_c, ref_c = compressed(est, compress), compressed(ref, compress)
    # L1 over real and imaginary parts: mean |diff| of the (..., 2) real view
    ri = (torch.view_as_real(est_c) - torch.view_as_real(ref_c)).abs().mean()
    mag = (compressed_mag(est, compress) - compressed_mag(ref, compress)).abs().mean()
    total = ri_weight * ri + mag_weight * mag
    parts = {"loss_ri": ri.detach(), "loss_mag": mag.detach()}
    if wave_weight > 0:
        est_wav = model.frontend.istft(est, clean.shape[-1])  # (B, S)
        wave = (est_wav - clean).abs().mean()
        total = total + wave_weight * wave
        parts["loss_wave"] = wave.detach()
    return LossOutput(total, parts, est, ref)


class Discriminator(nn.Module):
    """MetricGAN discriminator: (ref, est) compressed magnitudes (B, F, T) -> (B,) in [0, 1].

    Four strided conv blocks (InstanceNorm + PReLU), a global max-pool and a small MLP: small
    enough to cost little beside the enhancer, the shape used by the BSRNN / CMGAN recipes.
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        blocks, c_in = [], 2
        for mult in (1, 2, 4, 8):
            c_out = channels * mult
            blocks += [
                nn.utils.parametrizations.spectral_norm(
                    nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)
                ),
                nn.InstanceNorm2d(c_out, affine=True),
                nn.PReLU(c_out),
            ]
            c_in = c_out
        self.convs = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Linear(c_in, c_in // 2),
            nn.Dropout(0.3),
            nn.PReLU(c_in // 2),
            nn.Linear(c_in // 2, 1),
        )

    def forward(self, ref_mag: Tensor, est_mag: Tensor) -> Tensor:
        x = torch.stack([ref_mag, est_mag], dim=1)  # (B, 2, F, T)
        x = self.convs(x).amax(dim=(2, 3))  # (B, C)
        return torch.sigmoid(self.head(x)).squeeze(-1)  # (B,)


def pesq_targets(ref: Tensor, est: Tensor, sample_rate: int = 16000) -> Tensor:
    """Real PESQ of each estimate, mapped to [0, 1]; NaN where PESQ refuses the pair.

    ref, est: (B, S) waveforms (any common scale). Returns (B,) float32 on ``est``'s device.
    """
    from bsmamba.metrics import pesq

    ref_np = ref.detach().float().cpu().numpy()
    est_np = est.detach().float().cpu().numpy()
    scores = []
    for r, e in zip(ref_np, est_np, strict=True):
        try:
            s = pesq(r, e, sample_rate)
        except Exception:  # silence, too short, "no utterances detected": not a training error
            s = float("nan")
        s = float("nan") if s is None or not math.isfinite(s) else s
        scores.append((s - PESQ_MIN) / (PESQ_MAX - PESQ_MIN))
    return torch.tensor(np.clip(scores, 0.0, 1.0), dtype=torch.float32, device=est.device)


def discriminator_loss(
    disc: Discriminator, ref_mag: Tensor, est_mag: Tensor, target: Tensor
) -> Tensor:
    """D learns ``D(ref, ref) = 1`` and ``D(ref, est) = PESQ(est)``; NaN-PESQ items left out.

    ref_mag, est_mag: (B, F, T) compressed magnitudes (est detached by the caller); target (B,).
    """
    loss = (disc(ref_mag, ref_mag) - 1).square().mean()
    ok = torch.isfinite(target)
    if ok.any():
        loss = loss + (disc(ref_mag[ok], est_mag[ok]) - target[ok]).square().mean()
    return loss


def generator_adv_loss(disc: Discriminator, ref_mag: Tensor, est_mag: Tensor) -> Tensor:
    """The generator's MetricGAN term ``(D(ref, est) - 1)^2``, mean over the batch."""
    return (disc(ref_mag, est_mag) - 1).square().mean()
