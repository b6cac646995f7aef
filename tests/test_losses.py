"""Training losses: the published recipe's terms, its discriminator and real-PESQ targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pesq import pesq

from bsmamba import build_model, losses, metrics


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("abl3", dim=8)


def _pair(seconds: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    clean = sum(torch.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 10)) * 0.1
    clean = clean * (0.5 - 0.5 * torch.cos(2 * math.pi * 3 * t))
    noisy = clean + 0.03 * torch.randn(t.shape, generator=g)
    return noisy[None].float(), clean[None].float()


def _spectra(model, noisy, clean) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        est, ref = model.forward_spectral(noisy), model.frontend.stft(clean)
    return est.to(torch.complex128).numpy(), ref.to(torch.complex128).numpy()


def test_compression_keeps_phase_and_compresses_magnitude():
    spec = torch.randn(2, 5, 7, dtype=torch.complex64) * 3
    c = losses.compressed(spec, 0.3)
    assert torch.allclose(c.abs(), spec.abs() ** 0.3, rtol=1e-4)
    assert torch.allclose(torch.angle(c), torch.angle(spec), atol=1e-5)
    assert losses.compressed(spec, 1.0) is spec
    assert torch.allclose(losses.compressed_mag(spec, 0.3), spec.abs() ** 0.3, rtol=1e-4)
    assert torch.allclose(losses.power_mag(spec, 0.3), (spec.abs() + 1e-10) ** 0.3)


def test_default_loss_is_the_published_plain_complex_l1_plus_magnitude_l1(model):
    noisy, clean = _pair()
    out = losses.enhancement_loss(model, noisy, clean)
    e, r = _spectra(model, noisy, clean)
    ri = np.abs(e - r).mean()  # complex modulus of the difference, not compressed
    mag = np.abs((np.abs(e) + 1e-10) ** 0.3 - (np.abs(r) + 1e-10) ** 0.3).mean()
    assert out.parts["loss_ri"].item() == pytest.approx(ri, rel=1e-4)
    assert out.parts["loss_mag"].item() == pytest.approx(mag, rel=1e-4)
    assert out.total.item() == pytest.approx(0.5 * ri + 0.5 * mag, rel=1e-4)
    # ... which is nn.L1Loss on the complex tensors, as the published train.py computes it
    assert out.parts["loss_ri"].item() == pytest.approx(
        torch.nn.L1Loss()(out.est_spec.detach(), out.ref_spec).item(), rel=1e-6
    )
    # The input's own domain: 10x louder speech gives a 10x larger complex term.
    loud = losses.enhancement_loss(model, noisy * 10, clean * 10)
    assert loud.parts["loss_ri"].item() == pytest.approx(10 * ri, rel=1e-3)


def test_compressed_option_is_the_earlier_loss(model):
    noisy, clean = _pair(seed=1)
    out = losses.enhancement_loss(model, noisy, clean, complex_loss="compressed")
    e, r = _spectra(model, noisy, clean)
    me, mr = np.sqrt(np.abs(e) ** 2 + 1e-8), np.sqrt(np.abs(r) ** 2 + 1e-8)  # eps as documented
    ec, rc = e * me ** (0.3 - 1), r * mr ** (0.3 - 1)  # |S|^0.3 exp(j angle S), smooth at 0
    ri = 0.5 * (np.abs(ec.real - rc.real).mean() + np.abs(ec.imag - rc.imag).mean())
    mag = np.abs(me**0.3 - mr**0.3).mean()
    assert out.total.item() == pytest.approx(0.5 * ri + 0.5 * mag, rel=1e-4)
    assert out.parts["loss_ri"].item() == pytest.approx(ri, rel=1e-4)
    with pytest.raises(ValueError, match="plain, compressed"):
        losses.enhancement_loss(model, noisy, clean, complex_loss="l2")


def test_waveform_term_and_gradients_reach_every_parameter(model):
    noisy, clean = _pair()
    model.zero_grad()
    out = losses.enhancement_loss(model, noisy, clean, wave_weight=1.0)
    with torch.no_grad():
        wave = float((model(noisy) - clean).abs().mean())  # L1 of the waveforms
    assert float(out.parts["loss_wave"]) == pytest.approx(wave, rel=1e-4)
    with torch.no_grad():
        spectral = losses.enhancement_loss(model, noisy, clean).total  # wave_weight=0
    assert float(out.total.detach() - out.parts["loss_wave"]) == pytest.approx(float(spectral))
    out.total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_si_sdr_term_is_the_metric_per_crop_and_scale_free(model):
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(2, 4000, generator=g, dtype=torch.float64)
    est = ref * torch.tensor([[0.5], [2.0]], dtype=torch.float64) + 0.3 * torch.randn(
        2, 4000, generator=g, dtype=torch.float64
    )
    got = losses.si_sdr(est, ref)
    want = [metrics.si_sdr(r.numpy(), e.numpy()) for r, e in zip(ref, est, strict=True)]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert losses.si_sdr(est * 7, ref).tolist() == pytest.approx(want, abs=1e-6)  # scale-free
    noisy, clean = _pair(seed=2)
    out = losses.enhancement_loss(model, noisy, clean, si_sdr_weight=0.1)
    with torch.no_grad():
        want = -metrics.si_sdr(clean[0].numpy(), model(noisy)[0].numpy())
        spectral = losses.enhancement_loss(model, noisy, clean).total
    assert float(out.parts["loss_si_sdr"]) == pytest.approx(want, rel=1e-3)
    assert float(out.total.detach()) == pytest.approx(float(spectral) + 0.1 * want, rel=1e-4)


def test_discriminator_is_the_published_one():
    ndf = 16
    disc = losses.Discriminator(ndf)
    # Parameters by hand from the layer shapes: 4x4 convs without bias, InstanceNorm (weight,
    # bias), PReLU (one slope per channel); Linear 8ndf->4ndf, PReLU(4ndf), Linear 4ndf->1; the
    # sigmoid's slope.
    chans = [2, ndf, 2 * ndf, 4 * ndf, 8 * ndf]
    convs = sum(chans[i] * chans[i + 1] * 4 * 4 + 3 * chans[i + 1] for i in range(4))
    head = (8 * ndf * 4 * ndf + 4 * ndf) + 4 * ndf + (4 * ndf + 1) + 1
    assert sum(p.numel() for p in disc.parameters()) == convs + head == 181_650
    kinds = [type(m).__name__.removeprefix("Parametrized") for m in disc.layers]
    assert kinds == ["Conv2d", "InstanceNorm2d", "PReLU"] * 4 + [
        "AdaptiveMaxPool2d",
        "Flatten",
        "Linear",
        "Dropout",
        "PReLU",
        "Linear",
        "LearnableSigmoid",
    ]
    convs_, linears = disc.layers[0:12:3], [disc.layers[14], disc.layers[17]]
    for m in convs_:
        assert (m.kernel_size, m.stride, m.padding, m.bias) == ((4, 4), (2, 2), (1, 1), None)
    for m in [*convs_, *linears]:
        assert torch.nn.utils.parametrize.is_parametrized(m, "weight")  # spectral norm
    assert all(disc.layers[i].affine for i in (1, 4, 7, 10))
    assert disc.layers[15].p == 0.3 and disc.layers[-1].beta == 1.2
    assert disc.layers[-1].slope.tolist() == [1.0]

    # Spectral norm: the largest singular value of each effective weight is 1 (power iteration
    # converges over training-mode forwards).
    x = torch.rand(2, 1, 257, 33)
    for _ in range(30):
        disc(x, x)
    for m in [*convs_, *linears]:
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)

    # Output: 1.2 * sigmoid(slope * logit), in (0, 1.2); inputs are channels (x, y) in order.
    disc.eval()
    with torch.no_grad():
        y = torch.rand(2, 1, 257, 33)
        score = disc(x, y)
        assert score.shape == (2,) and bool(((score > 0) & (score < 1.2)).all())
        disc.layers[0].parametrizations.weight.original[:, 1] = 0  # the first conv ignores y
        assert torch.equal(disc(x, y), disc(x, torch.rand(2, 1, 257, 33)))
        assert not torch.equal(disc(x, y), disc(y, y))


def test_discriminator_loss_has_the_three_targets():
    torch.manual_seed(0)
    disc = losses.Discriminator(4).eval()  # no dropout: deterministic values
    clean, est, noisy = (torch.rand(3, 1, 257, 40) for _ in range(3))
    t_est, t_noisy = torch.tensor([0.3, 0.5, 0.9]), torch.tensor([0.6, 0.2, 0.4])
    with torch.no_grad():
        d = float(losses.discriminator_loss(disc, clean, est, noisy, t_est, t_noisy))
        want = sum(
            float(((disc(a, b) - t) ** 2).mean())
            for a, b, t in ((clean, clean, 1.0), (clean, est, t_est), (est, noisy, t_noisy))
        )
        assert d == pytest.approx(want, rel=1e-6)
        g = float(losses.generator_adv_loss(disc, clean, est))
        assert g == pytest.approx(float(((disc(clean, est) - 1) ** 2).mean()), rel=1e-6)
    # A few steps on D move its predictions towards the targets.
    disc.train()
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    args = (disc, clean, est, noisy, t_est, t_noisy)
    before = float(losses.discriminator_loss(*args).detach())
    for _ in range(20):
        opt.zero_grad()
        losses.discriminator_loss(*args).backward()
        opt.step()
    assert float(losses.discriminator_loss(*args).detach()) < before


@pytest.mark.parametrize("workers", [0, 2])
def test_pesq_scorer_gives_real_pesq_and_nan_where_pesq_refuses(workers):
    noisy, clean = _pair(2.0)
    n, c = noisy[0].numpy(), clean[0].numpy()
    silent = np.zeros_like(c)
    scorer = losses.PesqScorer(workers)
    try:
        scorer.start()
        pending = scorer.submit(np.stack([c, c, silent]), np.stack([n, silent, n]))
        got = scorer.scores(pending)
    finally:
        scorer.close()
    assert got[0] == pytest.approx(pesq(16000, c, n, "wb"), abs=1e-6)  # the pesq package
    assert 1.0 < got[0] < 4.0
    assert np.isnan(got[1]) and np.isnan(got[2])  # silent degraded, silent reference
    assert losses.pesq_normalised(torch.tensor([4.5, -0.5])).tolist() == [1.0, 0.0]
