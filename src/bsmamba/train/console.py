"""What ``bsmamba train`` prints: progress lines on rank 0, and Lightning's chatter silenced."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from omegaconf import DictConfig


def rank() -> int:
    """This process's global rank (torchrun: RANK; a plain `srun bsmamba train`: SLURM_PROCID)."""
    env = os.environ
    return int(env.get("RANK", env.get("SLURM_PROCID", env.get("LOCAL_RANK", 0))))


def say(cfg: DictConfig, *lines: str) -> None:
    """Print ``lines`` as ``bsmamba train: ...`` on rank 0 when ``train.progress`` is on."""
    if cfg.train.progress and rank() == 0:
        for line in lines:
            print(f"bsmamba train: {line}", flush=True)


def quiet(on: bool) -> None:
    """Silence Lightning's warnings that do not apply here; ``on``: its info logs too."""
    # Lightning's hints that do not apply here (few workers on CPU, small logging interval ...).
    for msg in (
        ".*does not have many workers.*",
        ".*is smaller than the logging interval.*",
        ".*exists and is not empty.*",
        ".*on_train_epoch_end.*",
        ".*GPU available but not used.*",
        ".*treespec, LeafSpec.*",
        ".*dataloader is not resumable.*",  # EpochSampler resumes mid-epoch by itself
        ".*when logging on epoch level in distributed.*",  # validation sums are reduced by hand
        ".*lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`.*",  # D steps all skipped
    ):
        warnings.filterwarnings("ignore", message=msg)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if on:
            logger.setLevel(logging.WARNING)
        if not any(isinstance(f, _DropChatter) for f in logger.filters):
            logger.addFilter(_DropChatter())


class _DropChatter(logging.Filter):
    """Drops Lightning's advertising and restated defaults; keeps everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("Tip:" in msg or "was configured so 100%" in msg)


def summary(cfg: DictConfig, out: Path, r: dict) -> None:
    """The end-of-run line: steps, time, best validation PESQ, skipped steps."""
    step = f"{r['step_time_s']:.3f} s/step" if r["step_time_s"] else "step time n/a"
    best = (
        f"best val PESQ {r['best_val_pesq']:.3f} (STOI {r['best_val_stoi']:.3f}) at epoch "
        f"{r['best_epoch']}"
        if r["best_val_pesq"] is not None
        else "no validation PESQ"
    )
    say(
        cfg,
        f"{cfg.model.preset}: {r['steps']} steps ({r['epochs']} epochs) in "
        f"{r['wall_time_s']:.1f} s ({step}); {best}; "
        f"{r['nonfinite_steps']} non-finite steps skipped"
        + (
            f"; {r['disc_skipped_steps']} discriminator steps skipped"
            if cfg.train.metricgan
            else ""
        ),
        f"results: {out / 'results.json'}",
    )
