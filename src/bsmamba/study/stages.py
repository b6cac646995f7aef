"""The stages of a study, each recorded by :func:`stage`: params, memory (per system), train,
enhance, evaluate and, when the study asks (``study.dnsmos``), dnsmos (per system x seed); a
stage whose record says ``done`` is never rerun.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

from bsmamba import config, files
from bsmamba.study import records
from bsmamba.study.configs import RUN_CONFIG
from bsmamba.study.records import DONE, FAILED, SKIPPED


def stage(record_path: Path, name: str, fn, *, say, scores_in: Path | None = None) -> dict:
    """Run ``fn() -> dict`` unless ``record_path`` says it is done; record the outcome.

    ``say(stage, status)`` is told "reused", or "running" and then the final status. An
    evaluate or dnsmos record (``scores_in``: the folder its ``per_utterance_csv`` is relative
    to) is reused only when the report can read its scores; damaged ones are recomputed.
    """
    old = records.read(record_path, [])  # damaged: recomputed, as if never written
    if old.get("status") == DONE:
        damage = records.scores_damage(old, scores_in) if scores_in is not None else None
        if damage is None:
            say(name, "reused")
            return old
        say(name, f"recomputing: {damage}")
    say(name, "running")
    t0 = time.perf_counter()
    try:
        status, fields = DONE, fn()
    except Skip as e:
        status, fields = SKIPPED, {"error": str(e)}
    except Exception as e:  # a failed system is reported; the others finish
        status = FAILED
        fields = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
    fields["stage_time_s"] = round(time.perf_counter() - t0, 3)
    rec = records.write_stage(record_path, name, status, fields)
    say(name, status)
    return rec


class Skip(Exception):
    """A stage that cannot run because an earlier one did not finish."""


# ----------------------------------------------------------------------------- stages
def params_stage(cfg: DictConfig) -> dict:
    from bsmamba import build_model
    from bsmamba.params import count
    from bsmamba.presets import EARLIER, EARLIER_CLAIMS

    kw = config.model_kwargs(cfg)
    preset = kw.pop("preset")
    out = {"params": count(build_model(preset, **kw)), "model": config.model_kwargs(cfg)}
    if preset in EARLIER_CLAIMS:  # the plan's pre-"memory-optimized" size of this system
        out["earlier_params"] = count(build_model(preset, **{**kw, **EARLIER}))["total"]
        out["earlier_overrides"] = dict(EARLIER)
    return out


def memory_stage(cfg: DictConfig) -> dict:
    """Peak training memory at the plan's shape; the ladder's rungs when it does not fit."""
    from bsmamba.memory import ladder
    from bsmamba.memory import plan as memplan
    from bsmamba.memory.step import StepOptions

    b, seg = cfg.study.plan_batch_size, cfg.study.plan_segment_s
    device = ladder.plan_device(cfg)
    if cfg.study.launcher == "slurm" and not cfg.memory.device and cfg.train.device != "cpu":
        # Submitted from a login node for GPU jobs: judge the jobs' device, predicted there
        # (a CPU step at the plan's shape would cost the login node minutes and gigabytes).
        device = "cuda"
    res = memplan.plan(
        config.model_kwargs(cfg),
        batch_size=b,
        segment_s=seg,
        budget=cfg.memory.budget,
        device=device,
        measure=bool(cfg.study.plan_measure),
        options=StepOptions.of(cfg),
    )
    out = {"batch_size": b, "segment_s": seg, "budget": cfg.memory.budget, "plan": res}
    if not records.fits(res):
        at_plan = copy.deepcopy(cfg)
        at_plan.train.batch_size, at_plan.data.segment_s = b, seg
        at_plan.memory.check = True  # the recipe may skip the in-run check; this one is asked for
        at_plan.memory.device = device
        try:
            fitted, events = ladder.fit(at_plan)
        except ValueError as e:  # even the last rung does not fit: a finding, not a crash
            out["ladder_error"] = str(e)
            return out
        out["ladder_events"] = events
        out["ladder_config"] = {
            "batch_size": fitted.train.batch_size,
            "d_state": fitted.model.d_state,
            "checkpointing": fitted.model.checkpointing,
        }
    return out


def train_stage(cfg: DictConfig) -> dict:
    from bsmamba import train

    t0 = time.perf_counter()
    if _needs_torchrun(cfg):
        res = _torchrun(cfg)
    else:
        res = train.run(cfg)
    return {"results": res, "wall_s": round(time.perf_counter() - t0, 3)}


def _needs_torchrun(cfg: DictConfig) -> bool:
    """A run on several devices started outside torchrun or a SLURM job of that many tasks.

    Lightning would start the other ranks by re-running this process's command line (the
    study itself), so the study starts them through torchrun instead.
    """
    import os

    world = int(cfg.train.devices) * int(cfg.train.num_nodes)
    launched = "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    return world > 1 and not launched


def _torchrun(cfg: DictConfig) -> dict:
    """``bsmamba train`` of ``cfg`` on ``train.devices`` local processes under torchrun."""
    import os
    import subprocess

    from bsmamba.study.launchers import _preexec_die_with_parent

    if int(cfg.train.num_nodes) > 1:
        raise ValueError(
            "train.num_nodes > 1 needs a cluster launcher: use study.launcher=slurm "
            "(or start `bsmamba train` on every node yourself: docs/study.md)"
        )
    out = Path(cfg.train.out)
    conf = out / RUN_CONFIG  # configs.resolve_run saved it before training
    if not conf.is_file():
        files.write_text(conf, config.to_yaml(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={int(cfg.train.devices)}", "-m", "bsmamba.cli", "train"]
    cmd += ["--config", str(conf)]
    done = subprocess.run(
        cmd,
        env={**os.environ, "OMP_NUM_THREADS": str(max(1, int(cfg.train.threads)))},
        capture_output=True,
        text=True,
        preexec_fn=_preexec_die_with_parent,  # noqa: PLW1509 - no threads started yet here
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"torchrun training of {out} failed (exit {done.returncode}): "
            + done.stderr.strip()[-2000:]
        )
    return json.loads((out / "results.json").read_text())


def enhance_stage(run_dir: Path, noisy_dir: Path, threads: int) -> dict:
    from bsmamba.enhance import enhance_path

    out = run_dir / "enhanced"
    t0 = time.perf_counter()
    summary = enhance_path(run_dir, noisy_dir, out, device="cpu")
    wall = time.perf_counter() - t0
    audio_s = sum(_duration(p) for p in sorted(noisy_dir.glob("*.wav")))
    if summary.get("skipped"):
        raise RuntimeError(
            f"enhance skipped {len(summary['skipped'])} file(s): {summary['skipped']}"
        )
    # RTF: enhance's own figure (inference + file I/O, model load excluded), else the whole call.
    rtf = summary.get("rtf")
    return {
        "summary": summary,
        "wall_s": round(wall, 3),
        "audio_s": round(audio_s, 3),
        "rtf": rtf if rtf is not None else (wall / audio_s if audio_s else None),
        "threads": threads,
    }


def evaluate_stage(clean_dir: Path, deg_dir: Path, out_dir: Path, workers=None) -> dict:
    from bsmamba.evaluate import evaluate_dirs

    if workers is None:
        # Spawned scoring workers cost seconds to start: worth it only for more than a few files.
        workers = 2 if len(list(Path(deg_dir).glob("*.wav"))) > 8 else 0
    summary = evaluate_dirs(clean_dir, deg_dir, out_dir=out_dir, workers=workers)
    return {"summary": summary, "per_utterance_csv": records.utterance_csv(out_dir)}


def check_dnsmos_extra() -> None:
    """A one-line ``ValueError`` naming the ``nr`` extra when ``study.dnsmos`` cannot run here
    (called before any work starts, so a study never trains for an hour and then fails)."""
    from bsmamba import dnsmos

    dnsmos.require("study.dnsmos=true", "or drop study.dnsmos=true")


def dnsmos_stage(deg_dir: Path, out_dir: Path, workers=None) -> dict:
    """DNSMOS (SIG, BAK, OVRL, and P.808) of every .wav in ``deg_dir``: ``dnsmos.csv`` and
    ``dnsmos.json`` into ``out_dir``, beside evaluate's outputs. A set of which no file could be
    scored fails the stage (it is retried on the next run)."""
    from bsmamba.dnsmos import score_dirs

    if workers is None:  # as evaluate_stage: spawned workers pay off only for many files
        workers = 2 if len(list(Path(deg_dir).glob("*.wav"))) > 8 else 0
    summary = score_dirs(deg_dir, out_dir=out_dir, workers=workers)
    if summary["files"] and not summary["scored"]:
        raise RuntimeError(f"DNSMOS scored none of {summary['files']} file(s) in {deg_dir}: "
                           f"{summary['problems'][0]['error']}")  # fmt: skip
    rel = records.utterance_csv(out_dir, records.DNSMOS_CSV)
    return {"summary": summary, "per_utterance_csv": rel}


def _duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate
