"""Study recipes: how long and on what each system trains, as config overrides (data only).

A recipe sits between the dataclass defaults and the user's ``--config FILE`` / ``key=value``
overrides, so every value below can still be changed from the command line. The defaults are the
published BSRNN recipe (docs/training.md); ``voicebank`` spells it out, ``demo`` and ``smoke``
turn off what a few CPU minutes cannot use.

Parameters and peak memory are always measured at the plan's shape (``study.plan_batch_size`` x
``study.plan_segment_s`` = 6 x 2 s); training may use a smaller shape and a wall-clock budget per
system. The report prints both shapes beside the numbers they produced.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    # The README's first command: all five systems on the bundled demo set, under 10 minutes on
    # 2 CPU cores (8 min 22 s measured: benchmarks/study_demo.py). Each system gets the same
    # wall-clock budget (not the same step count: a fair comparison of what each architecture
    # learns in equal CPU time at a small shape).
    "demo": {
        "about": "all five systems on the bundled demo set, 8 min on 2 CPU cores (docs/study.md)",
        "overrides": {
            "data.path": "demo",
            # Small shape: about 0.4-0.7 s a step on one core, so 130-230 steps in the budget.
            # The published lr and loss (Adam 1e-3, plain complex L1 + compressed magnitude):
            # with lr 5e-3 and the compressed complex L1 the validation loss stopped falling
            # after ~25 steps, near that of halving the noisy spectrum; with these it falls.
            # 1 s crops, not 0.5 s (same audio per step): models trained on 0.5 s crops lost
            # SI-SDR at 17.5 dB on the 3.3 s test utterances (-1.1 dB) but gained +0.7 dB when
            # the same checkpoint enhanced them in 1 s chunks; modified trained on 1 s crops
            # loses at most 0.43 dB there from step 175 on. (benchmarks/demo_recipe.py
            # --every-checkpoint: docs/study.md "Measured".)
            "data.segment_s": 1.0,
            "train.batch_size": 2,
            "train.lr": 1e-3,
            # Each mask starts as the identity (the noisy input passes through): from a random
            # mask 250 steps left every system attenuating the loud low-frequency speech of the
            # 17.5 dB test mixtures (SI-SDR -4 to -5 dB there); from the identity -1.1 dB.
            "model.mask_init": "identity",
            # An average of the weights (decay 0.98: the last ~50 steps): at batch 2 single
            # checkpoints swing from one validation point to the next (abl3: test STOI 0.883 to
            # 0.906, SI-SDR at 17.5 dB -1.9 to 0.0 dB); the average's validation PESQ rises at
            # every point and every SNR group gains SI-SDR from step 50 on.
            "train.ema_decay": 0.98,
            "train.epochs": 10000,  # the time budget ends training, not the epoch count
            # No discriminator (200-400 steps leave no room for an adversarial phase, and the
            # PESQ of D's targets would take CPU time from the budget) and no epoch-based lr
            # decay (epochs mean nothing under a time budget).
            "train.metricgan": False,
            "train.scheduler": "none",
            # Two runs at a time, one core and one thread each: on 2 cores, two 1-thread
            # processes train ~2x faster in total than one 2-thread process (whose threads
            # spin-wait on each other), and a busy machine slows them far less.
            "study.jobs": 2,
            "train.threads": 1,
            "train.max_time_s": 140.0,
            "train.limit_train_batches": 25,  # short "epochs": a validation point every 25 steps
            "train.limit_val_batches": 8,  # 16 crops of 1 s
            "train.val_pesq_subset": 16,  # the best checkpoint is picked on this: not too few
            "train.keep_best": 1,
            "train.progress": False,
            # The study's own memory stage already judged the plan's (larger) shape: a second
            # plan at the smaller training shape inside every run would only cost time.
            "memory.check": False,
            "study.seeds": 1,
            # Predicted, not measured: a profiled real step at 6 x 2 s costs minutes per system
            # on 2 cores (the prediction matches a measured CPU step; `plan_measure=true` checks).
            "study.plan_measure": False,
            "study.test_limit": 0,
            "study.examples": 3,
        },
    },
    # For tests: every stage of every system runs, with a couple of optimiser steps each.
    "smoke": {
        "about": "every stage of every system with 2 training steps, ~1 min (for tests)",
        "overrides": {
            "data.path": "demo",
            "data.segment_s": 0.5,
            "train.batch_size": 2,
            "train.epochs": 1,
            "train.max_steps": 2,
            "train.max_time_s": 0.0,
            "train.threads": 1,
            "train.metricgan": False,  # as the demo
            "train.scheduler": "none",
            "study.jobs": 2,
            "train.limit_val_batches": 1,
            "train.val_pesq_subset": 1,
            "train.keep_best": 1,
            "train.progress": False,
            "memory.check": False,
            "study.seeds": 1,
            "study.plan_measure": False,
            "study.test_limit": 2,
            "study.examples": 1,
            "study.bootstrap": 200,
        },
    },
    # The published BSRNN recipe on VoiceBank+DEMAND (GPUs), 3 seeds. These are the defaults,
    # spelled out so that the recipe stays the published one whatever the defaults become.
    "voicebank": {
        "about": "the published BSRNN recipe on prepared VoiceBank+DEMAND: batch 6 x 2 s, "
        "120 epochs, MetricGAN from epoch 60, StepLR",
        "overrides": {
            "data.path": "",  # required: the output folder of `bsmamba prepare-voicebank`
            "data.segment_s": 2.0,
            "train.batch_size": 6,
            "train.lr": 1e-3,
            "train.epochs": 120,
            "train.max_time_s": 0.0,
            "train.grad_clip": 5.0,
            "train.complex_loss": "plain",
            "train.loss_ri_weight": 0.5,
            "train.loss_mag_weight": 0.5,
            "train.compress": 0.3,
            "train.metricgan": True,
            "train.metricgan_weight": 1.0,
            "train.metricgan_adv_epoch": -1,  # half of training: epoch 60
            "train.disc_lr": 1e-3,
            "train.disc_grad_clip": 5.0,
            "train.scheduler": "step",
            "train.scheduler_step_epochs": 10,
            "train.scheduler_gamma": 0.98,
            "study.seeds": 3,
            "study.plan_measure": True,
            "study.test_limit": 0,
            "study.examples": 3,
        },
    },
}


def recipe(name: str) -> dict[str, Any]:
    """The overrides of recipe ``name`` as ``{"section.key": value}``; raises on unknown names."""
    if name not in RECIPES:
        raise ValueError(f"unknown study recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    return dict(RECIPES[name]["overrides"])
