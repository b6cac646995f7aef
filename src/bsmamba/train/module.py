"""The LightningModule: one enhancer, the MetricGAN discriminator, and their recipe.

One training step, as published (REFERENCE, "Recipe"): the generator's loss (spectral terms,
plus the adversarial term from ``metricgan_adv_epoch`` = half of training) and its step; then
the discriminator's step on its three real-PESQ targets, at every step from the start
(``train/metricgan.py``: the 2B PESQ scores run in a process pool while the generator's
backward and step run).

Manual optimisation, because three things need a say between backward and the optimizer step:
a non-finite loss or gradient norm skips the step on every rank at once (and is counted), the
discriminator gets its own step without advancing ``global_step`` (skipped, and counted, when
PESQ refuses any pair of the batch), and gradient clipping reports the norm it clipped.
``global_step`` therefore counts generator steps, i.e. real updates.

Resume is exact: the checkpoint carries the RNG states and how far into the epoch the data order
had got, and ``train/samplers.py`` draws each epoch's order from ``(seed, epoch)`` alone, so a
resumed run sees the remaining batches of the interrupted epoch in the same order.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from bsmamba import checkpoint as ckpt_io
from bsmamba import losses
from bsmamba.memory import ladder
from bsmamba.train import metricgan
from bsmamba.train.samplers import EpochSampler, SeededItems

SCHEDULERS = ("none", "step", "cosine")
PRECISIONS = ("32-true", "bf16-mixed")


def check_recipe(t: DictConfig) -> None:
    """Raise ``ValueError`` (one line: key, value, what is valid) for a ``train`` section whose
    scheduler, precision or loss this module cannot run. The one check, used by ``run`` before
    any work and by the module itself."""
    for key, valid in (
        ("scheduler", SCHEDULERS),
        ("precision", PRECISIONS),
        ("complex_loss", losses.COMPLEX_LOSSES),
    ):
        if t[key] not in valid:
            raise ValueError(f"unknown train.{key} {t[key]!r}; valid: {', '.join(valid)}")
    if t.scheduler == "step" and t.scheduler_step_epochs < 1:
        raise ValueError(f"train.scheduler_step_epochs must be >= 1, got {t.scheduler_step_epochs}")


class NonFiniteLossError(RuntimeError):
    """Raised after more than ``train.max_nonfinite`` skipped steps."""


class EnhancementModule(L.LightningModule):
    """Trains ``model`` on ``(noisy, clean)`` batches of ``(B, S)`` waveforms.

    cfg: the full config (``train`` section for the recipe, ``data.num_workers``).
    ``train_set`` / ``valid_set`` yield ``(noisy, clean)`` float tensors ``(S,)``; they may be
    None when dataloaders are passed to ``Trainer.fit`` directly.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: DictConfig,
        train_set: Dataset | None = None,
        valid_set: Dataset | None = None,
    ):
        super().__init__()
        t = cfg.train
        check_recipe(t)
        self.model = model
        self.cfg = cfg
        self.train_set, self.valid_set = train_set, valid_set
        self.discriminator = losses.Discriminator() if t.metricgan else None
        self._scorer: losses.PesqScorer | None = None  # created at fit start
        self.automatic_optimization = False
        self.nonfinite_steps = 0
        self.disc_skipped_steps = 0  # discriminator steps skipped (PESQ refused, non-finite)
        self._resume: dict[str, Any] | None = None  # from on_load_checkpoint, used at train start
        self._samples_done = 0  # samples this rank consumed in the current epoch
        self._pesq_budget = 0
        self.step_time_s_sum, self.step_count = 0.0, 0  # timing of steps after the first
        self._warm = False
        self.history: list[dict[str, float]] = []  # one row per validation
        # PESQ of the unprocessed validation inputs (the same items and crops): measured once,
        # the line a validation curve should rise above
        self._noisy_pesq: float | None = None

    # ---- data ----------------------------------------------------------------------------------
    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        t = self.cfg.train
        world = self.trainer.world_size if self._trainer else 1
        rank = self.trainer.global_rank if self._trainer else 0
        sampler = EpochSampler(
            len(ds), shuffle=train, seed=int(t.seed), rank=rank, world_size=world, keyed=train
        )
        if train:
            ds = SeededItems(ds, int(t.seed))
        if train and len(sampler) < t.batch_size:
            raise ValueError(
                f"the training set has {len(ds)} items ({len(sampler)} per process), fewer than "
                f"train.batch_size={t.batch_size}; lower train.batch_size or add data"
            )
        workers = int(self.cfg.data.num_workers) if "data" in self.cfg else 0
        return DataLoader(
            ds,
            batch_size=int(t.batch_size),
            sampler=sampler,
            drop_last=train,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_set, train=True)
        if self._resume is not None:
            loader.sampler.resume_at(self._resume["epoch"], self._resume["samples_done"])
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_set, train=False)

    # ---- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        t = self.cfg.train
        opts = [torch.optim.Adam(self.model.parameters(), lr=t.lr)]
        if self.discriminator is not None:
            opts.append(torch.optim.Adam(self.discriminator.parameters(), lr=t.disc_lr))
        scheds = [s for s in (self._scheduler(o) for o in opts) if s is not None]
        return opts, [{"scheduler": s, "interval": "epoch"} for s in scheds]

    def _scheduler(self, opt):
        t = self.cfg.train
        if t.scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(opt, t.scheduler_step_epochs, t.scheduler_gamma)
        if t.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(t.epochs)))
        return None

    def _optimizers(self) -> list:
        opts = self.optimizers()
        return list(opts) if isinstance(opts, (list, tuple)) else [opts]

    def _adv_on(self) -> bool:
        t = self.cfg.train
        return self.discriminator is not None and self.current_epoch >= metricgan.adv_from_epoch(t)

    def on_fit_start(self) -> None:
        if self.discriminator is not None and self._scorer is None:
            workers = metricgan.pesq_workers(self.cfg.train, self.device)
            self._scorer = losses.PesqScorer(workers, self.model.sample_rate)
            self._scorer.start()

    def on_fit_end(self) -> None:
        self.close()

    def teardown(self, stage: str) -> None:
        self.close()

    def close(self) -> None:
        """Stop the PESQ processes (also called by ``run`` when a fit ends in an error)."""
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None

    def all_ranks_finite(self, *values: torch.Tensor) -> bool:
        """Whether every value is finite on every rank (a skip must happen on all or none)."""
        bad = torch.tensor(float(not all(bool(torch.isfinite(v).all()) for v in values)))
        if self.trainer.world_size > 1:  # every rank must skip together or DDP deadlocks
            bad = self.trainer.strategy.reduce(bad.to(self.device), reduce_op="sum")
        return float(bad) == 0.0

    def _skip(self, what: str) -> None:
        self.nonfinite_steps += 1
        self.log("nonfinite_steps", float(self.nonfinite_steps), on_step=True, prog_bar=True)
        limit = int(self.cfg.train.max_nonfinite)
        if self.nonfinite_steps > limit:
            raise NonFiniteLossError(
                f"training aborted: {self.nonfinite_steps} steps had a non-finite {what} "
                f"(limit train.max_nonfinite={limit}), the last at step {self.global_step}. "
                "Check the data for NaN/Inf, lower train.lr, or use train.precision=32-true."
            )

    def training_step(self, batch, batch_idx: int):
        t0 = time.perf_counter()
        t = self.cfg.train
        noisy, clean = batch  # (B, S) each
        self._samples_done += noisy.shape[0]
        ladder.inject_oom(self.global_step, self.global_rank)  # tests of the ladder
        opts = self._optimizers()
        out = self._loss(noisy, clean)
        loss = out.total
        disc = self.discriminator
        if disc is not None:
            # D's targets: submitted now, scored in the pool while the generator steps
            targets = metricgan.submit(self._scorer, self.model, out, noisy, clean, t.compress)
            if self._adv_on():
                adv = losses.generator_adv_loss(disc, targets.clean_mag, targets.est_mag)
                loss = loss + t.metricgan_weight * adv
                out.parts["loss_adv"] = adv.detach()

        accumulate = max(1, int(t.grad_accumulate))
        step_now = (batch_idx + 1) % accumulate == 0
        if not self.all_ranks_finite(loss.detach()):
            opts[0].zero_grad(set_to_none=True)
            self._skip("loss")
            return None
        self.manual_backward(loss / accumulate)
        if step_now:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            if not self.all_ranks_finite(norm):
                opts[0].zero_grad(set_to_none=True)
                self._skip("gradient norm")
                return None
            opts[0].step()
            opts[0].zero_grad(set_to_none=True)
            self.log("grad_norm", norm, on_step=True)

        if disc is not None:
            d_loss = metricgan.discriminator_step(self, opts[1], self._scorer, targets)
            if d_loss is None:
                self.disc_skipped_steps += 1
            else:
                self.log("loss_disc", d_loss, on_step=True)
            self.log("disc_skipped_steps", float(self.disc_skipped_steps), on_step=True)

        self.log("loss", loss.detach(), on_step=True, prog_bar=True)
        for name, v in out.parts.items():
            self.log(name, v, on_step=True)
        if self._warm:  # the process's first step (allocator, oneDNN set-up) is not timed
            self.step_time_s_sum += time.perf_counter() - t0
            self.step_count += 1
        self._warm = True
        return None

    def on_train_epoch_start(self) -> None:
        r = self._resume
        resumed_here = r is not None and r["epoch"] == self.current_epoch
        self._samples_done = r["samples_done"] if resumed_here else 0
        self._resume = None
        # Epoch schedulers are brought up to the epoch here rather than stepped at epoch end: a
        # checkpoint written at epoch end (callbacks run before this module's hooks) then still
        # resumes with the right learning rate.
        scheds = self.lr_schedulers()
        for s in scheds if isinstance(scheds, list) else [scheds] if scheds else []:
            while s.last_epoch < self.current_epoch:
                s.step()

    # ---- validation ----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        n = int(self.cfg.train.val_pesq_subset)
        self._pesq_budget = n if n > 0 else math.inf
        # pesq sum, count, stoi sum, count, loss sum, count, noisy-input pesq sum, count
        self._val_sums = torch.zeros(8, dtype=torch.float64)

    def _loss(self, noisy: torch.Tensor, clean: torch.Tensor):
        t = self.cfg.train
        return losses.enhancement_loss(
            self.model,
            noisy,
            clean,
            t.loss_ri_weight,
            t.loss_mag_weight,
            t.loss_wave_weight,
            t.compress,
            t.complex_loss,
            t.loss_si_sdr_weight,
        )

    def validation_step(self, batch, batch_idx: int) -> None:
        noisy, clean = batch
        out = self._loss(noisy, clean)
        b = noisy.shape[0]
        self._val_sums[4:6] += torch.tensor([float(out.total) * b, b])
        k = int(min(b, self._pesq_budget))
        if k <= 0:
            return
        self._pesq_budget -= k
        est = self.model.frontend.istft(out.est_spec[:k], clean.shape[-1])
        pesq, stoi = _scores(clean[:k], est, self.model.sample_rate)
        self._val_sums[:4] += torch.tensor([sum(pesq), len(pesq), sum(stoi), len(stoi)])
        if self._noisy_pesq is None and not self.trainer.sanity_checking:
            noisy_pesq, _ = _scores(clean[:k], noisy[:k], self.model.sample_rate, stoi=False)
            self._val_sums[6:] += torch.tensor([sum(noisy_pesq), len(noisy_pesq)])

    def on_validation_epoch_end(self) -> None:
        # Summed by hand so that every rank logs the same keys even when PESQ refused every item.
        sums = self._val_sums.to(self.device)
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        p_sum, p_n, s_sum, s_n, l_sum, l_n, np_sum, np_n = sums.tolist()
        if self._noisy_pesq is None and np_n and not self.trainer.sanity_checking:
            self._noisy_pesq = np_sum / np_n
        row = {
            "val_loss": l_sum / l_n if l_n else math.nan,
            "val_pesq": p_sum / p_n if p_n else math.nan,
            "val_stoi": s_sum / s_n if s_n else math.nan,
            "val_pesq_noisy": math.nan if self._noisy_pesq is None else self._noisy_pesq,
        }
        for k, v in row.items():
            self.log(k, v, prog_bar=k in ("val_loss", "val_pesq"))
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, "step": self.global_step, **row})

    # ---- checkpoint contents -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bsmamba"] = {
            "format_version": ckpt_io.FORMAT_VERSION,
            "model_config": dict(self.model.config),
            "rng": ckpt_io.rng_state(),
            "train": {
                "nonfinite_steps": int(self.nonfinite_steps),
                "disc_skipped_steps": int(self.disc_skipped_steps),
                "epoch": int(self.current_epoch),
                "samples_done": int(self._samples_done),
                "history": [dict(r) for r in self.history],
            },
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("bsmamba", {})
        st = meta.get("train", {})
        self.nonfinite_steps = int(st.get("nonfinite_steps", 0))
        self.disc_skipped_steps = int(st.get("disc_skipped_steps", 0))
        self.history = [dict(r) for r in st.get("history", [])]
        self._resume = {
            "epoch": int(st.get("epoch", -1)),
            "samples_done": int(st.get("samples_done", 0)),
            "rng": meta.get("rng"),
        }

    def on_train_start(self) -> None:
        # After Lightning's own restore and dataloader setup: the RNG continues where it stopped.
        if self._resume is not None and self._resume.get("rng") is not None:
            ckpt_io.set_rng_state(self._resume["rng"])

    def step_time_s(self) -> float | None:
        """Mean wall time of a training step (the first, warm-up step excluded)."""
        return self.step_time_s_sum / self.step_count if self.step_count else None


def _scores(
    ref: torch.Tensor, est: torch.Tensor, fs: int, stoi: bool = True
) -> tuple[list[float], list[float]]:
    """Real PESQ (WB at 16 kHz) and STOI per item; items PESQ refuses are left out."""
    from bsmamba.metrics import pesq as pesq_fn
    from bsmamba.metrics import stoi as stoi_fn

    ref_np, est_np = ref.detach().float().cpu().numpy(), est.detach().float().cpu().numpy()
    pesq, stois = [], []
    for r, e in zip(ref_np, est_np, strict=True):
        try:
            p = float(pesq_fn(r, e, fs))
            if math.isfinite(p):
                pesq.append(p)
        except Exception:  # silence / too short: the metric's own refusal, not a training error
            pass
        if not stoi:
            continue
        try:
            s = float(stoi_fn(r, e, fs))
            if math.isfinite(s):
                stois.append(s)
        except Exception:
            pass
    return pesq, stois
