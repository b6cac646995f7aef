"""Compare training recipes on the demo set at a fixed step count; one JSON document.

    python benchmarks/demo_recipe.py --preset modified                      # the demo recipe
    python benchmarks/demo_recipe.py --preset abl3 train.lr=5e-3 train.complex_loss=compressed
    python benchmarks/demo_recipe.py --preset bsrnn --steps 2 --quick       # proves it runs

Each run trains ``--preset`` with the ``demo`` recipe's overrides plus the given ones for
``--steps`` optimiser steps (a step count, not the recipe's wall-clock budget, so that runs on a
busy machine compare), then enhances the demo test set with the best checkpoint and scores it.
Reported: the validation curve (loss, PESQ per validation point), test PESQ/STOI/SI-SDR of the
model and the noisy input, and the SI-SDR change per input SNR (issue 15's targets: every metric
above the input, no SNR group losing more than 1 dB). ``--every-checkpoint`` keeps the checkpoint
of every validation point and scores each of them the same way (``trajectory``): whether some
step reaches the targets, and whether the validation score would have picked it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bsmamba import config, env, schema
from bsmamba.data import resolve
from bsmamba.enhance import enhance_path
from bsmamba.evaluate import evaluate_dirs
from bsmamba.study.recipes import recipe
from bsmamba.train import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="modified")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--quick", action="store_true", help="2 test utterances: check the script runs")
    p.add_argument("--every-checkpoint", action="store_true", help="score every validation point")
    p.add_argument("overrides", nargs="*", help="key=value on top of the demo recipe")
    a = p.parse_args()
    demo = {k: v for k, v in recipe("demo").items() if not k.startswith("study.")}
    fixed = {"train.max_time_s": 0.0, "train.max_steps": a.steps, "model.preset": a.preset}
    root = resolve("demo")
    with tempfile.TemporaryDirectory(prefix="bsmamba-recipe-") as tmp:
        overrides = [f"{k}={v}" for k, v in {**demo, **fixed}.items()] + a.overrides
        if a.every_checkpoint:  # one per validation point (best-N by val PESQ, N = all)
            overrides.append(f"train.keep_best={a.steps + 1}")
        cfg = config.load(overrides=overrides + [f"train.out={tmp}/run"])
        res = run(cfg)
        noisy = root / "noisy_testset_wav"
        if a.quick:  # two utterances in their own folders
            noisy = Path(tmp, "noisy")
            noisy.mkdir()
            for f in sorted((root / "noisy_testset_wav").glob("*.wav"))[:2]:
                (noisy / f.name).symlink_to(f)
        best = Path(tmp, "run", res["best_checkpoint"])
        test = _score(best, root / "clean_testset_wav", noisy, Path(tmp, "best"))
        trajectory = []
        if a.every_checkpoint:
            ckpts = sorted(best.parent.glob("best-*.ckpt"), key=_step)
            for i, ckpt in enumerate(ckpts):
                point = _score(ckpt, root / "clean_testset_wav", noisy, Path(tmp, f"c{i}"))
                trajectory.append({"step": _step(ckpt), **point})
    doc = schema.document(
        "benchmark",
        name="demo_recipe",
        preset=a.preset,
        steps=a.steps,
        overrides=a.overrides,
        validation=[  # the run's own record of each validation point
            {k: r[k] for k in ("step", "val_loss", "val_pesq", "val_stoi")}
            for r in res["validation"]
        ],
        **test,
        trajectory=trajectory,
        environment=env.environment(),
    )
    print(json.dumps(doc, indent=2))


def _step(ckpt: Path) -> int:
    """The optimiser step in a ``best-e<E>-s<S>-pesq=<P>.ckpt`` name."""
    return int(ckpt.name.split("-s")[1].split("-")[0])


def _score(ckpt: Path, clean: Path, noisy: Path, work: Path) -> dict:
    """Enhance ``noisy`` with ``ckpt`` and score it: test means and the SI-SDR change per SNR."""
    enhance_path(ckpt, noisy, work)
    summary = evaluate_dirs(clean, work, noisy, workers=0)
    m = summary["metrics"]
    keys = ("pesq", "stoi", "si_sdr")
    return {
        "test": {w: {k: m[w][k]["mean"] for k in keys} for w in ("enhanced", "noisy")},
        "by_snr": [
            {
                "snr_db": float(level),
                "si_sdr_change_db": part["enhanced"]["si_sdr"]["mean"]
                - part["noisy"]["si_sdr"]["mean"],
            }
            for level, part in summary["by_snr"].items()
        ],
    }


if __name__ == "__main__":
    main()
