"""MetricGAN's half of a training step (REFERENCE, "Recipe"): the discriminator's real-PESQ
targets, its update, and when the generator's adversarial term is on.

The discriminator D learns to predict normalised PESQ from a pair of compressed magnitudes. Per
step its targets are the real PESQ of (clean, estimate) and (estimate, noisy) for every item:
2B scores, submitted to a :class:`bsmamba.losses.PesqScorer` as soon as the estimate exists, so
that a process pool scores them while the generator's backward and step run; (clean, clean) has
target 1, PESQ's maximum, and needs no scoring. The LightningModule owns D (as
``discriminator``, so that checkpoints hold it) and calls :func:`submit` then
:func:`discriminator_step` once per step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from bsmamba import losses


def adv_from_epoch(t: DictConfig) -> float:
    """First epoch with the generator's adversarial term: epoch >= epochs / 2 by default."""
    return t.metricgan_adv_epoch if t.metricgan_adv_epoch >= 0 else t.epochs / 2


def pesq_workers(t: DictConfig, device: torch.device) -> int:
    """``train.pesq_workers``; auto (-1): in-process on CPU (the cores train the model),
    else one process per PESQ pair of the batch, at most the cores of this rank."""
    n = int(t.pesq_workers)
    if n >= 0:
        return n
    if device.type == "cpu":
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, min(2 * int(t.batch_size), (os.cpu_count() or 1) // local))


@dataclass
class Targets:
    """One step's submitted PESQ pairs and the magnitudes (B, 1, F, T) D sees."""

    pending: Any  # the scorer's handle: (clean, est) then (est, noisy), 2B pairs
    clean_mag: torch.Tensor
    est_mag: torch.Tensor  # carries the generator's graph (its adversarial term needs it)
    noisy_mag: torch.Tensor


def submit(
    scorer: losses.PesqScorer,
    model: torch.nn.Module,
    out: losses.LossOutput,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    compress: float,
) -> Targets:
    """Start scoring this step's estimate (before the generator's update) and return D's inputs.

    out: the generator's loss output (``est_spec``, ``ref_spec``); noisy, clean: (B, S).
    """
    est_wav = model.frontend.istft(out.est_spec.detach(), clean.shape[-1])
    wavs = [w.detach().float().cpu().numpy() for w in (clean, est_wav, noisy)]
    pending = scorer.submit(np.concatenate([wavs[0], wavs[1]]), np.concatenate([wavs[1], wavs[2]]))
    with torch.no_grad():
        noisy_spec = model.frontend.stft(noisy)
    clean_mag, est_mag, noisy_mag = (
        losses.power_mag(s, compress).unsqueeze(1) for s in (out.ref_spec, out.est_spec, noisy_spec)
    )
    return Targets(pending, clean_mag, est_mag, noisy_mag)


def discriminator_step(lm, opt, scorer: losses.PesqScorer, targets: Targets) -> torch.Tensor | None:
    """One update of ``lm.discriminator`` on its three targets; None when skipped.

    lm: the LightningModule (its ``manual_backward``, ``log``, ``all_ranks_finite``); opt: D's
    Lightning optimizer. As published, a batch in which PESQ refuses any pair (e.g. a silent
    estimate) skips the step; every DDP rank skips together. The caller counts the skips.
    """
    scores = torch.as_tensor(scorer.scores(targets.pending), dtype=torch.float32)
    if not lm.all_ranks_finite(scores):
        return None
    clean_mag, est_mag = targets.clean_mag.detach(), targets.est_mag.detach()
    b = clean_mag.shape[0]
    # The estimates' PESQ is a training curve of its own (raw PESQ-WB, before the step).
    lm.log("train_pesq", float(scores[:b].mean()), on_step=True)
    lm.log("train_pesq_est_noisy", float(scores[b:].mean()), on_step=True)
    target = losses.pesq_normalised(scores).to(lm.device)
    d_loss = losses.discriminator_loss(
        lm.discriminator, clean_mag, est_mag, targets.noisy_mag, target[:b], target[b:]
    )
    opt.zero_grad(set_to_none=True)  # also drops what the generator's backward left in D
    lm.manual_backward(d_loss)
    clip = lm.cfg.train.disc_grad_clip
    norm = torch.nn.utils.clip_grad_norm_(lm.discriminator.parameters(), clip)
    stepped = lm.all_ranks_finite(d_loss.detach(), norm)
    if stepped:
        # The raw optimizer: stepping the Lightning wrapper would advance global_step.
        opt.optimizer.step()
    opt.zero_grad(set_to_none=True)
    return d_loss.detach() if stepped else None
