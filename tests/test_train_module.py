"""The LightningModule's own rules: data order, non-finite steps, abort, the discriminator's
targets and skips, the schedules (with real Lightning and real PESQ)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from pesq import pesq
from torch.utils.data import Dataset

from bsmamba import build_model, config
from bsmamba.train.module import EnhancementModule, NonFiniteLossError


class _Pairs(Dataset):
    """(noisy, clean) pairs of 0.25 s; items in ``nan_items`` carry a NaN sample."""

    def __init__(self, n: int, nan_items=()):
        g = torch.Generator().manual_seed(0)
        self.clean = 0.1 * torch.randn(n, 4000, generator=g)
        self.noisy = self.clean + 0.05 * torch.randn(n, 4000, generator=g)
        self.noisy[list(nan_items), 100] = float("nan")

    def __len__(self):
        return len(self.clean)

    def __getitem__(self, i):
        return self.noisy[i], self.clean[i]


class _Speechy(Dataset):
    """(noisy, clean) pairs of 0.5 s: a harmonic voice with a syllable envelope, in white noise."""

    def __init__(self, n: int):
        g = torch.Generator().manual_seed(1)
        t = torch.arange(8000) / 16000
        f0 = 110 + 80 * torch.rand(n, 1, generator=g)
        voice = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 12))
        self.clean = 0.1 * voice * (0.5 - 0.5 * torch.cos(2 * math.pi * 3 * t))
        self.noisy = self.clean + 0.03 * torch.randn(n, 8000, generator=g)

    def __len__(self):
        return len(self.clean)

    def __getitem__(self, i):
        return self.noisy[i], self.clean[i]


def _fit(ds: Dataset, *overrides: str, model=None) -> EnhancementModule:
    cfg = config.load(overrides=["train.batch_size=1", "memory.check=false", *overrides])
    model = model or build_model("bsrnn", dim=8, num_layers=1)
    module = EnhancementModule(model, cfg, ds, ds)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module)
    module.final_step = trainer.global_step
    module.metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return module


def test_nonfinite_steps_are_skipped_and_counted():
    module = _fit(_Pairs(6, nan_items=(1, 3, 4)), "train.max_nonfinite=5")
    assert module.nonfinite_steps == 3
    assert module.final_step == 3  # only the finite batches stepped the optimizer
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


def test_too_many_nonfinite_steps_abort_with_a_clear_message():
    with pytest.raises(NonFiniteLossError, match=r"train.max_nonfinite=2.*lower train.lr"):
        _fit(_Pairs(6, nan_items=range(6)), "train.max_nonfinite=2")


def test_discriminator_targets_are_the_real_pesq_of_the_step_estimate():
    # lr 1e-30 moves no weight measurably: the estimate of the one step is the model's output
    # now, to recompute independently.
    ds = _Speechy(2)
    module = _fit(ds, "train.batch_size=2", "train.lr=1e-30", "train.pesq_workers=0")
    assert module.disc_skipped_steps == 0
    with torch.no_grad():
        est = module.model(ds.noisy).numpy()
    clean, noisy = ds.clean.numpy(), ds.noisy.numpy()
    want_est = np.mean([pesq(16000, c, e, "wb") for c, e in zip(clean, est, strict=True)])
    want_noisy = np.mean([pesq(16000, e, n, "wb") for e, n in zip(est, noisy, strict=True)])
    assert module.metrics["train_pesq"] == pytest.approx(want_est, abs=1e-4)  # (clean, est)
    assert module.metrics["train_pesq_est_noisy"] == pytest.approx(want_noisy, abs=1e-4)
    assert abs(want_est - want_noisy) > 0.01  # the two targets are not the same number
    assert math.isfinite(module.metrics["loss_disc"])
    (state,) = {float(st["step"]) for st in module.optimizers()[1].state.values()}
    assert state == 1.0  # D stepped once, from the first epoch on


def test_a_silent_estimate_skips_the_discriminator_step():
    # Zero decoder weights make a zero mask, hence a silent estimate, which PESQ refuses; with
    # lr 0 it stays silent, so every step's discriminator update is skipped (and counted).
    model = build_model("bsrnn", dim=8, num_layers=1)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.zero_()
    before = None

    class _Watch(L.Callback):
        def on_train_start(self, trainer, module):
            nonlocal before
            before = [p.detach().clone() for p in module.discriminator.parameters()]

    ds = _Speechy(3)
    cfg = config.load(overrides=["train.batch_size=1", "train.lr=1e-30", "memory.check=false"])
    module = EnhancementModule(model, cfg, ds, ds)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[_Watch()],
    )
    trainer.fit(module)
    assert trainer.global_step == 3 and module.disc_skipped_steps == 3
    assert float(trainer.callback_metrics["disc_skipped_steps"]) == 3.0  # logged
    assert "loss_disc" not in trainer.callback_metrics
    after = list(module.discriminator.parameters())
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert not module.optimizers()[1].state  # Adam never stepped D


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # no training here
def test_schedulers_decay_both_optimisers_by_0_98_every_10_epochs():
    cfg = config.load(overrides=["memory.check=false"])  # the defaults: the published recipe
    module = EnhancementModule(build_model("bsrnn", dim=8, num_layers=1), cfg)
    opts, scheds = module.configure_optimizers()
    assert len(opts) == len(scheds) == 2  # generator, discriminator
    assert [s["interval"] for s in scheds] == ["epoch", "epoch"]
    for epoch in range(31):
        for opt in opts:
            assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.98 ** (epoch // 10))
        for s in scheds:
            s["scheduler"].step()
