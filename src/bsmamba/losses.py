"""Training losses: the published 16 kHz BSRNN recipe (REFERENCE, "Recipe") and its MetricGAN.

Generator loss (the defaults; S = complex STFT (B, F, T), M = ``(|S| + 1e-10)^0.3``)::

    L = 0.5 * mean|S_est - S_ref| + 0.5 * mean|M_est - M_ref| + 1.0 * (D(M_ref, M_est) - 1)^2

The first term is the plain complex L1: the mean complex modulus of the difference, not
compressed (what ``nn.L1Loss`` computes on complex tensors). The adversarial term is added by
the training module from half of training on. Everything is in the input's own domain:
``est = model.forward_spectral(noisy)``, ``ref = model.frontend.stft(clean)``.

``complex_loss="compressed"`` selects bsmamba's earlier loss instead: L1 over the real and
imaginary parts of the power-law compressed spectra ``|S|^c exp(j angle S)`` plus L1 of
``(|S|^2 + 1e-8)^(c/2)`` (smooth at |S| = 0), which is level-robust and used by the demo recipe.

MetricGAN: the discriminator D sees two magnitude images (B, 1, F, T) and predicts the
normalised PESQ ``(PESQ-WB + 0.5) / 5`` of the second against the first. It is trained at every
step on three targets: D(clean, clean) -> 1, D(clean, est) -> PESQn(clean, est) and
D(est, noisy) -> PESQn(est, noisy), with real PESQ of the waveforms (``PesqScorer``).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

COMPLEX_LOSSES = ("plain", "compressed")
MAG_EPS = 1e-10  # added to |S| before the power, as published


def compressed(spec: Tensor, c: float = 0.3, eps: float = 1e-8) -> Tensor:
    """Power-law compressed complex spectrum ``|S|^c * exp(j angle S)``; complex (B, F, T)."""
    if c == 1.0:
        return spec
    mag = (spec.real.square() + spec.imag.square() + eps).sqrt()  # eps: finite grad at |S| = 0
    return spec * mag.pow(c - 1.0)


def compressed_mag(spec: Tensor, c: float = 0.3, eps: float = 1e-8) -> Tensor:
    """``(|S|^2 + eps)^(c/2)``, real (B, F, T): the smooth magnitude of the compressed loss."""
    return (spec.real.square() + spec.imag.square() + eps).pow(c / 2)


def power_mag(spec: Tensor, c: float = 0.3) -> Tensor:
    """``(|S| + 1e-10)^c``, real, shaped like ``spec``: the published magnitude and D input."""
    return (spec.abs() + MAG_EPS).pow(c)


@dataclass
class LossOutput:
    """The total loss, its named parts (detached, for logging) and the spectra later terms reuse."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    est_spec: Tensor | None = None  # complex (B, F, T): the model's estimate
    ref_spec: Tensor | None = None  # complex (B, F, T): STFT of the clean waveform


def enhancement_loss(
    model: nn.Module,
    noisy: Tensor,
    clean: Tensor,
    ri_weight: float = 0.5,
    mag_weight: float = 0.5,
    wave_weight: float = 0.0,
    compress: float = 0.3,
    complex_loss: str = "plain",
    si_sdr_weight: float = 0.0,
) -> LossOutput:
    """The spectral (+ optional waveform) loss of ``model`` on a batch; no adversarial term.

    noisy, clean: (B, S) float waveforms at the model's sample rate. ``complex_loss``: "plain"
    (published) or "compressed" (module docstring). Returns a ``LossOutput``; ``total`` is a
    scalar tensor.
    """
    if complex_loss not in COMPLEX_LOSSES:
        raise ValueError(
            f"unknown train.complex_loss {complex_loss!r}; valid: {', '.join(COMPLEX_LOSSES)}"
        )
    est = model.forward_spectral(noisy)  # complex (B, F, T)
    ref = model.frontend.stft(clean)
    if complex_loss == "plain":
        ri = (est - ref).abs().mean()
        mag = (power_mag(est, compress) - power_mag(ref, compress)).abs().mean()
    else:
        diff = torch.view_as_real(compressed(est, compress) - compressed(ref, compress))
        ri = diff.abs().mean()  # mean over real and imaginary parts
        mag = (compressed_mag(est, compress) - compressed_mag(ref, compress)).abs().mean()
    total = ri_weight * ri + mag_weight * mag
    parts = {"loss_ri": ri.detach(), "loss_mag": mag.detach()}
    if wave_weight > 0:
        wave = (model.frontend.istft(est, clean.shape[-1]) - clean).abs().mean()
        total = total + wave_weight * wave
        parts["loss_wave"] = wave.detach()
    if si_sdr_weight > 0:
        neg = -si_sdr(model.frontend.istft(est, clean.shape[-1]), clean).mean()
        total = total + si_sdr_weight * neg
        parts["loss_si_sdr"] = neg.detach()
    return LossOutput(total, parts, est, ref)


def si_sdr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """SI-SDR in dB of each row, (B, S), (B, S) -> (B,): ``bsmamba.metrics.si_sdr`` in torch.

    As a loss term it is scale-free per utterance: a quiet, high-SNR crop pulls as hard as a loud,
    noisy one, where the spectral L1 terms weigh each crop by its noise level."""
    est, ref = est - est.mean(-1, keepdim=True), ref - ref.mean(-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.square().sum(-1, keepdim=True) + eps)
    target = scale * ref
    ratio = target.square().sum(-1) / ((est - target).square().sum(-1) + eps)
    return 10 * torch.log10(ratio + eps)


# ---- the discriminator ---------------------------------------------------------------------


class LearnableSigmoid(nn.Module):
    """``beta * sigmoid(slope * x)`` with one trainable slope (init 1): outputs in (0, beta)."""

    def __init__(self, beta: float = 1.2):
        super().__init__()
        self.beta = beta
        self.slope = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.beta * torch.sigmoid(self.slope * x)


class Discriminator(nn.Module):
    """The published MetricGAN discriminator: (x, y) magnitudes (B, 1, F, T) each -> (B,).

    Four 4x4 stride-2 bias-free convolutions with spectral norm, each followed by
    InstanceNorm(affine) and PReLU; a global max-pool; spectral-norm Linear 8ndf -> 4ndf,
    Dropout 0.3, PReLU, spectral-norm Linear 4ndf -> 1; a learnable sigmoid (beta 1.2, so a
    target of 1 lies inside its range). ndf 16: 181,650 parameters.
    """

    MIN_FRAMES = 16

    def __init__(self, ndf: int = 16):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        c_in = 2  # x and y stacked as channels
        for mult in (1, 2, 4, 8):
            c = ndf * mult
            layers += [
                sn(nn.Conv2d(c_in, c, 4, 2, 1, bias=False)),
                nn.InstanceNorm2d(c, affine=True),
                nn.PReLU(c),
            ]
            c_in = c
        layers += [
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            sn(nn.Linear(8 * ndf, 4 * ndf)),
            nn.Dropout(0.3),
            nn.PReLU(4 * ndf),
            sn(nn.Linear(4 * ndf, 1)),
            LearnableSigmoid(1.2),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape[-1] < self.MIN_FRAMES:  # four 4-wide stride-2 convolutions need 16
            raise ValueError(
                f"MetricGAN's discriminator needs at least {self.MIN_FRAMES} STFT frames, got "
                f"{x.shape[-1]}: use longer crops (data.segment_s) or train.metricgan=false"
            )
        return self.layers(torch.cat([x, y], dim=1)).flatten()  # (B,)


def generator_adv_loss(disc: Discriminator, clean_mag: Tensor, est_mag: Tensor) -> Tensor:
    """The generator's term ``MSE(D(clean, est), 1)``; magnitudes (B, 1, F, T)."""
    return (disc(clean_mag, est_mag) - 1).square().mean()


def discriminator_loss(
    disc: Discriminator,
    clean_mag: Tensor,
    est_mag: Tensor,
    noisy_mag: Tensor,
    target_est: Tensor,
    target_noisy: Tensor,
) -> Tensor:
    """D's loss on its three targets (magnitudes (B, 1, F, T), est detached; targets (B,)).

    ``MSE(D(clean, clean), 1) + MSE(D(clean, est), target_est) + MSE(D(est, noisy),
    target_noisy)`` with the targets ``PESQn(clean, est)`` and ``PESQn(est, noisy)``.
    """
    return (
        (disc(clean_mag, clean_mag) - 1).square().mean()
        + (disc(clean_mag, est_mag) - target_est).square().mean()
        + (disc(est_mag, noisy_mag) - target_noisy).square().mean()
    )


def pesq_normalised(score: Tensor) -> Tensor:
    """``(PESQ-WB + 0.5) / 5``, the published map of a PESQ score to D's target."""
    return (score + 0.5) / 5


# ---- real PESQ of the targets ----------------------------------------------------------------


def _pesq_or_nan(fs: int, ref: np.ndarray, deg: np.ndarray) -> float:
    """PESQ-WB (or NB at 8 kHz) of ``deg`` against ``ref``; NaN where PESQ refuses the pair."""
    from pesq import pesq

    if not (np.isfinite(ref).all() and np.isfinite(deg).all()):
        return math.nan
    try:
        with np.errstate(all="ignore"):
            return float(pesq(fs, ref, deg, "wb" if fs == 16000 else "nb"))
    except Exception:  # silence ("no utterances"), too short: PESQ's refusal, not an error
        return math.nan


class PesqScorer:
    """Real PESQ of waveform pairs, in a persistent process pool or in this process.

    ``submit(refs, degs)`` starts scoring (n, S) float arrays and returns at once when
    ``workers > 0`` (the pool works while the caller does the generator's step);
    ``scores(pending)`` waits and returns (n,) float64 PESQ, NaN where PESQ refused a pair.
    The pool's workers call the ``pesq`` package directly (they import neither torch nor
    bsmamba); they start with forkserver (spawn where there is none), never fork, so a CUDA
    parent is safe. ``workers=0`` scores serially in ``scores``.
    """

    def __init__(self, workers: int = 0, fs: int = 16000):
        self.workers, self.fs = int(workers), fs
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self._pool

    def start(self) -> None:
        """Start the pool's processes now (else at the first ``submit``)."""
        if self.workers > 0:
            pool = self._executor()
            list(pool.map(abs, range(self.workers)))  # a trivial job: every worker is up

    def submit(self, refs: np.ndarray, degs: np.ndarray):
        """Start scoring ``degs`` against ``refs`` ((n, S) each); returns a handle to ``scores``."""
        pairs = list(zip(np.asarray(refs, np.float32), np.asarray(degs, np.float32), strict=True))
        if self.workers <= 0:
            return pairs, None
        from pesq import pesq

        pool, mode = self._executor(), "wb" if self.fs == 16000 else "nb"
        futures = [
            pool.submit(pesq, self.fs, r, d, mode)
            if np.isfinite(r).all() and np.isfinite(d).all()
            else None  # PESQ of NaN samples is meaningless: a refusal
            for r, d in pairs
        ]
        return pairs, futures

    def scores(self, pending) -> np.ndarray:
        """(n,) float64 PESQ of a ``submit``'s pairs, NaN where PESQ refused; waits for them."""
        pairs, futures = pending
        if futures is None:
            return np.array([_pesq_or_nan(self.fs, r, d) for r, d in pairs], dtype=np.float64)
        out = []
        for (r, d), f in zip(pairs, futures, strict=True):
            try:
                out.append(math.nan if f is None else float(f.result()))
            except cf.process.BrokenProcessPool:
                # A worker died (e.g. killed for memory): finish in-process from here on.
                warnings.warn(
                    "the PESQ process pool broke; scoring in-process from now on", stacklevel=2
                )
                self.close()
                self.workers = 0
                out.append(_pesq_or_nan(self.fs, r, d))
            except Exception:  # PESQ's refusal (silence, too short), raised in the worker
                out.append(math.nan)
        return np.array(out, dtype=np.float64)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
