"""Training losses: the compressed-spectrum recipe and the MetricGAN parts with real PESQ."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bsmamba import build_model
from bsmamba.train import losses


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("abl3", dim=8)


def _pair(seconds: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    clean = sum(torch.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 10)) * 0.5
    clean = clean * (0.5 - 0.5 * torch.cos(2 * math.pi * 3 * t))
    noisy = clean + 0.15 * torch.randn(t.shape, generator=g)
    return noisy[None].float(), clean[None].float()


def test_compression_keeps_phase_and_compresses_magnitude():
    spec = torch.randn(2, 5, 7, dtype=torch.complex64) * 3
    c = losses.compressed(spec, 0.3)
    assert torch.allclose(c.abs(), spec.abs() ** 0.3, rtol=1e-4)
    assert torch.allclose(torch.angle(c), torch.angle(spec), atol=1e-5)
    assert losses.compressed(spec, 1.0) is spec
    assert torch.allclose(losses.compressed_mag(spec, 0.3), spec.abs() ** 0.3, rtol=1e-4)


def test_loss_is_the_recipe_on_the_spectra(model):
    noisy, clean = _pair()
    out = losses.enhancement_loss(model, noisy, clean, ri_weight=0.5, mag_weight=0.5)
    with torch.no_grad():
        est = model.forward_spectral(noisy)
    ref = model.frontend.stft(clean)
    e, r = est.to(torch.complex128).numpy(), ref.to(torch.complex128).numpy()
    me, mr = np.sqrt(np.abs(e) ** 2 + 1e-8), np.sqrt(np.abs(r) ** 2 + 1e-8)  # eps as documented
    ec, rc = e * me ** (0.3 - 1), r * mr ** (0.3 - 1)  # S |S|^(c-1), |S| with eps
    ri = 0.5 * (np.abs(ec.real - rc.real).mean() + np.abs(ec.imag - rc.imag).mean())
    mag = np.abs(me**0.3 - mr**0.3).mean()
    assert out.total.item() == pytest.approx(0.5 * ri + 0.5 * mag, rel=1e-4)
    assert out.parts["loss_mag"].item() == pytest.approx(mag, rel=1e-4)
    # No level normalisation: the loss is computed at the data's own level
    loud = losses.enhancement_loss(model, noisy * 10, clean * 10)
    assert float(loud.total.detach()) > 1.5 * float(out.total.detach())


def test_waveform_term_and_gradients_reach_every_parameter(model):
    noisy, clean = _pair()
    model.zero_grad()
    out = losses.enhancement_loss(model, noisy, clean, wave_weight=1.0)
    assert "loss_wave" in out.parts and float(out.parts["loss_wave"]) > 0
    # L1 between the estimate and the clean waveform
    with torch.no_grad():
        est = model(noisy)
    wave = float((est - clean).abs().mean())
    assert float(out.parts["loss_wave"]) == pytest.approx(wave, rel=1e-4)
    with torch.no_grad():
        spectral = losses.enhancement_loss(model, noisy, clean).total  # wave_weight=0
    assert float(out.total.detach() - out.parts["loss_wave"]) == pytest.approx(float(spectral))
    out.total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_pesq_targets_are_real_pesq_mapped_to_unit_range():
    noisy, clean = _pair(2.0)
    ref = torch.cat([clean, clean, clean])
    est = torch.cat([clean, noisy, torch.zeros_like(clean)])  # perfect, noisy, silent
    target = losses.pesq_targets(ref, est, 16000)
    assert target[0] == pytest.approx(1.0)  # PESQ 4.64 -> clipped to 1
    assert 0.0 <= float(target[1]) < float(target[0])
    assert torch.isnan(target[2])  # PESQ refuses silence: left out, not a crash


def test_discriminator_and_its_losses():
    torch.manual_seed(0)
    disc = losses.Discriminator(channels=4).eval()  # no dropout: deterministic checks
    ref, est = torch.rand(3, 257, 40), torch.rand(3, 257, 40)
    with torch.no_grad():  # the values only; D's training is below
        score = disc(ref, est)
        assert score.shape == (3,) and bool(((score > 0) & (score < 1)).all())
        target = torch.tensor([0.2, float("nan"), 0.7])
        d_loss = losses.discriminator_loss(disc, ref, est, target)
        assert torch.isfinite(d_loss)  # the NaN item is left out ...
        # ... of MetricGAN's D loss: (D(ref, ref) - 1)^2 + (D(ref, est) - PESQ)^2 over the others
        real = (disc(ref, ref) - 1).square().mean()
        fake = (score[[0, 2]] - target[[0, 2]]).square().mean()
        assert float(d_loss) == pytest.approx(float(real + fake), rel=1e-4)
        g_loss = losses.generator_adv_loss(disc, ref, est)
        assert float(g_loss) == pytest.approx(float((score - 1).square().mean()), rel=1e-4)
    # A few steps on D against a fixed target move its prediction towards it.
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    before = float((disc(ref, est) - 0.1).abs().mean().detach())
    for _ in range(20):
        opt.zero_grad()
        losses.discriminator_loss(disc, ref, est, torch.full((3,), 0.1)).backward()
        opt.step()
    assert float((disc(ref, est) - 0.1).abs().mean().detach()) < before
