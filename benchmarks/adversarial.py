"""What the MetricGAN phase costs per training step: step time with and without it; JSON.

    python benchmarks/adversarial.py                       # bsrnn, batch 6 x 2 s, 2 threads
    python benchmarks/adversarial.py --device cuda --pesq-workers 0,12
    python benchmarks/adversarial.py --quick               # a tiny shape: checks that it runs

Each variant is a real ``EnhancementModule`` step in a real Lightning ``Trainer`` (what
``bsmamba train`` runs), on a fixed set of voiced-like harmonic signals in white noise (so that
PESQ scores every pair), timed from batch start to batch end (CUDA synchronised), median over
``--steps`` steps after one warm-up step. Variants, all in one process so that ratios compare
like with like:

- ``no_gan``: ``train.metricgan=false`` (the spectral loss only);
- ``disc``: the first half of published training: the discriminator's step on its three targets,
  with the 2B PESQ scores, but no adversarial term in the generator's loss;
- ``adversarial``: the second half: the same plus the generator's adversarial term;

the last two for each ``--pesq-workers`` value (0 = PESQ in the training process; N = a pool
of N processes that scores while the generator steps; ``auto`` = what ``train.pesq_workers=-1``
picks on this device). ``ratio_to_no_gan`` is each variant's median over ``no_gan``'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time

import lightning as L
import torch
from torch.utils.data import Dataset

from bsmamba import config, env, files, schema
from bsmamba.model import build_model
from bsmamba.train.module import EnhancementModule


class _Voiced(Dataset):
    """(noisy, clean) (S,) pairs: harmonic voices (f0 100-200 Hz) with a syllable envelope."""

    def __init__(self, n: int, seconds: float):
        g = torch.Generator().manual_seed(0)
        t = torch.arange(int(seconds * 16000)) / 16000
        f0 = 100 + 100 * torch.rand(n, 1, generator=g)
        voice = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 12))
        self.clean = 0.1 * voice * (0.5 - 0.5 * torch.cos(2 * math.pi * 3 * t))
        self.noisy = self.clean + 0.03 * torch.randn(self.clean.shape, generator=g)

    def __len__(self):
        return len(self.clean)

    def __getitem__(self, i):
        return self.noisy[i], self.clean[i]


class _StepTimer(L.Callback):
    def __init__(self):
        self.times: list[float] = []
        self.workers = 0

    def on_train_start(self, trainer, module):
        self.workers = module._scorer.workers if module._scorer is not None else 0

    def _sync(self, module):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._sync(module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._sync(module)
        self.times.append(time.perf_counter() - self._t0)


def step_times(a, overrides: list[str]) -> tuple[list[float], int, int]:
    """Seconds per step after one warm-up step; D steps skipped; PESQ workers used."""
    cfg = config.load(
        overrides=[
            f"model.preset={a.preset}",
            f"train.batch_size={a.batch}",
            f"data.segment_s={a.seconds}",
            "memory.check=false",
            *overrides,
        ]
    )
    torch.manual_seed(0)
    model = build_model(a.preset)
    ds = _Voiced(a.batch * (a.steps + 1), a.seconds)
    module = EnhancementModule(model, cfg, ds, ds)
    timer = _StepTimer()
    trainer = L.Trainer(
        accelerator={"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[a.device],
        devices=1,
        max_steps=a.steps + 1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[timer],
    )
    try:
        trainer.fit(module)
    finally:
        module.close()
    return timer.times[1:], module.disc_skipped_steps, timer.workers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shape: check the script runs")
    p.add_argument("--preset", default="bsrnn")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--seconds", type=float, default=2.0, help="training crop length (s)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--pesq-workers", default="0,auto", help="comma-separated: 0, N or auto")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    if a.quick:
        a.batch, a.seconds, a.steps, a.threads = 1, 0.5, 1, 1
    torch.set_num_threads(a.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-fit banners
    modes = [m.strip() for m in a.pesq_workers.split(",") if m.strip()]

    variants: dict[str, dict] = {}

    def record(name: str, overrides: list[str]) -> None:
        times, skipped, workers = step_times(a, overrides)
        variants[name] = {
            "step_time_s": statistics.median(times),
            "step_times_s": times,
            "disc_skipped_steps": skipped,
            "pesq_workers": workers,
        }

    record("no_gan", ["train.metricgan=false"])
    for mode in modes:
        n = -1 if mode == "auto" else int(mode)
        pesq = [f"train.pesq_workers={n}"]
        record(f"disc_pesq_workers_{mode}", [*pesq, "train.metricgan_adv_epoch=1000"])
        record(f"adversarial_pesq_workers_{mode}", [*pesq, "train.metricgan_adv_epoch=0"])
    base = variants["no_gan"]["step_time_s"]
    for v in variants.values():
        v["ratio_to_no_gan"] = v["step_time_s"] / base
    doc = schema.document(
        "benchmark",
        name="adversarial",
        quick=a.quick,
        preset=a.preset,
        train_shape={"batch_size": a.batch, "segment_s": a.seconds, "threads": a.threads},
        device=a.device,
        by_variant=variants,
        environment=env.environment(),
    )
    text = json.dumps(doc, indent=2)
    print(text)
    if a.out:
        files.write_text(a.out, text + "\n")


if __name__ == "__main__":
    main()
