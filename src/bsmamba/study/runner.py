"""`bsmamba study`: every system x seed through params -> memory plan -> train -> enhance -> score.

Folder layout of a study (``studies/<recipe>/`` unless ``study.out``)::

    study.json                    the resolved config, shapes, systems, data root
    test_snr.json                 input SNR of every test utterance (measured from the files)
    testset/{clean,noisy}/        the scored subset when ``study.test_limit`` > 0
    noisy/evaluation.json         the noisy-input row (+ per-utterance CSV)
    <system>/params.json          parameter counts (seed-independent)
    <system>/memory.json          memory plan at the plan's shape (+ ladder events)
    <system>/s<seed>/             the training run dir (train.out) and:
        stages/{train,enhance,evaluate}.json   each stage's record (status, time, outcome)
        enhanced/  eval/          enhanced test set, per-utterance scores
    report.md results.csv results.json plots/ audio/   (from bsmamba.study.report)

Resumable: a stage whose record says ``done`` is never rerun; an interrupted training is handed
back to ``bsmamba.train.run``, which continues from the run dir's last checkpoint. A stage that
fails is recorded with its error and the study goes on with the other systems. The records are
written and read through :mod:`bsmamba.study.records`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from bsmamba import config, files
from bsmamba.study import recipes, records
from bsmamba.study.records import (
    DONE,
    FAILED,
    RUN_STAGES,
    RUNNING_ELSEWHERE,
    SKIPPED,
    SUBMITTED,
    run_stage_path,
)

LAUNCHERS = ("local", "slurm")


# ----------------------------------------------------------------------------- configuration
def study_config(file: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Resolve a study config: defaults -> recipe -> ``file`` -> ``overrides`` (later wins).

    The recipe is ``study.recipe`` as set by the file or the overrides (default ``demo``).
    """
    overrides = list(overrides or [])
    probe = config.load(file, overrides)
    return config.load(file, _recipe_layer(probe.study.recipe, file) + overrides)


def _recipe_layer(name: str, file: str | Path | None) -> list[str]:
    """The recipe ``name`` as overrides, less the keys ``file`` sets (the file wins over it)."""
    in_file = set(_flat(OmegaConf.to_container(OmegaConf.load(file)))) if file else set()
    return [f"{k}={_dot(v)}" for k, v in recipes.recipe(name).items() if k not in in_file]


def _dot(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(str(x) for x in v) + "]"
    return "''" if v == "" else str(v)


def study_dir(cfg: DictConfig) -> Path:
    return Path(cfg.study.out or f"studies/{cfg.study.recipe}")


def run_config(cfg: DictConfig, system: str, seed: int, out: Path) -> DictConfig:
    """The training config of one run: ``system``'s preset plus the study's model overrides.

    Model keys the study config changed relative to its own preset (e.g. ``model.scan_backend``)
    carry over to every system; everything else comes from the system's preset.
    """
    from bsmamba.presets import PRESETS

    if system not in PRESETS:
        raise ValueError(f"unknown system {system!r} in study.systems; valid: {', '.join(PRESETS)}")
    own = config.load(overrides=[f"model.preset={cfg.model.preset}"]).model
    changed = {k: cfg.model[k] for k in cfg.model if k != "preset" and cfg.model[k] != own.get(k)}
    run = copy.deepcopy(cfg)
    run.model = OmegaConf.merge(config.load(overrides=[f"model.preset={system}"]).model, changed)
    run.train.seed = seed
    run.train.out = str(out)
    return run


# ----------------------------------------------------------------------------- records
def _stage(record_path: Path, name: str, fn, *, say, scores_in: Path | None = None) -> dict:
    """Run ``fn() -> dict`` unless ``record_path`` says it is done; record the outcome.

    ``say(stage, status)`` is told "reused", or "running" and then the final status. An
    evaluate record (``scores_in``: the folder its ``per_utterance_csv`` is relative to) is
    reused only when the report can read its scores; damaged ones are recomputed.
    """
    old = files.read_json(record_path)
    if old and old.get("status") == DONE:
        damage = records.scores_damage(old, scores_in) if scores_in is not None else None
        if damage is None:
            say(name, "reused")
            return old
        say(name, f"recomputing: {damage}")
    say(name, "running")
    t0 = time.perf_counter()
    try:
        status, fields = DONE, fn()
    except _Skip as e:
        status, fields = SKIPPED, {"error": str(e)}
    except Exception as e:  # a failed system is reported; the others finish
        status = FAILED
        fields = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
    fields["stage_time_s"] = round(time.perf_counter() - t0, 3)
    rec = records.write_stage(record_path, name, status, fields)
    say(name, status)
    return rec


class _Skip(Exception):
    """A stage that cannot run because an earlier one did not finish."""


# ----------------------------------------------------------------------------- stages
def _params_stage(cfg: DictConfig) -> dict:
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


def _memory_stage(cfg: DictConfig) -> dict:
    """Peak training memory at the plan's shape; the ladder's rungs when it does not fit."""
    from bsmamba.memory import ladder
    from bsmamba.memory import plan as memplan

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


def _train_stage(cfg: DictConfig) -> dict:
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
    conf = out / "stages" / "train_config.yaml"
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


def _enhance_stage(run_dir: Path, noisy_dir: Path, threads: int) -> dict:
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


def _evaluate_stage(clean_dir: Path, deg_dir: Path, out_dir: Path, workers=None) -> dict:
    from bsmamba.evaluate import evaluate_dirs

    if workers is None:
        # Spawned scoring workers cost seconds to start: worth it only for more than a few files.
        workers = 2 if len(list(Path(deg_dir).glob("*.wav"))) > 8 else 0
    summary = evaluate_dirs(clean_dir, deg_dir, out_dir=out_dir, workers=workers)
    return {"summary": summary, "per_utterance_csv": records.utterance_csv(out_dir)}


def _duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


# ----------------------------------------------------------------------------- test set
def _test_dirs(cfg: DictConfig, root: Path, sdir: Path) -> tuple[Path, Path]:
    """(clean_dir, noisy_dir) of the scored test set; a sorted subset copy if test_limit > 0."""
    clean, noisy = root / "clean_testset_wav", root / "noisy_testset_wav"
    for d in (clean, noisy):
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is missing; is {root} the output of prepare-voicebank?")
    if cfg.study.test_limit <= 0:
        return clean, noisy
    names = sorted(p.name for p in noisy.glob("*.wav"))[: cfg.study.test_limit]
    sub_clean, sub_noisy = sdir / "testset" / "clean", sdir / "testset" / "noisy"
    for name in names:
        for src, dst in ((clean, sub_clean), (noisy, sub_noisy)):
            if not (dst / name).exists():
                dst.mkdir(parents=True, exist_ok=True)
                files.atomic_write(dst / name, lambda f, s=src / name: f.write(s.read_bytes()))
    return sub_clean, sub_noisy


def _input_snr(clean_dir: Path, noisy_dir: Path) -> dict[str, float]:
    """Input SNR in dB of every test pair: 10 log10(|clean|^2 / |noisy - clean|^2)."""
    import soundfile as sf

    out = {}
    for p in sorted(noisy_dir.glob("*.wav")):
        n, _ = sf.read(str(p), dtype="float64")
        c, _ = sf.read(str(clean_dir / p.name), dtype="float64")
        m = min(len(n), len(c))
        noise = np.sum((n[:m] - c[:m]) ** 2)
        out[p.name] = float(10 * np.log10(np.sum(c[:m] ** 2) / max(noise, 1e-20)))
    return out


def _resolve_data(cfg: DictConfig) -> Path:
    if not cfg.data.path:
        raise ValueError(
            f"the {cfg.study.recipe!r} recipe needs --data PATH: the output folder of "
            "`bsmamba prepare-voicebank` (see the README for how to get VoiceBank+DEMAND)"
        )
    from bsmamba import data

    return Path(data.resolve(cfg.data.path))


# ----------------------------------------------------------------------------- one run
def _teller(where: str, echo, computed: list):
    def say(stage: str, status: str) -> None:
        if status not in ("reused", "running") and not status.startswith("recomputing"):
            computed.append(f"{where}/{stage}")
        echo(f"[study] {where:<14} {stage:<9} {status}")

    return say


def _run_one(
    cfg: DictConfig,
    system: str,
    seed: int,
    sdir: Path,
    clean_dir: Path,
    noisy_dir: Path,
    only_abl3: bool,
    echo=print,
    eval_workers: int | None = None,
    launcher: str = "local",
) -> tuple[dict[str, str], list[str]]:
    """Train, enhance and score one system x seed; returns (stage statuses, stages computed).

    The run's folder is locked meanwhile: a run that another process (a SLURM job, another
    study) is running already is left to it (status ``running_elsewhere``).
    """
    from bsmamba.study.launchers import worker_info
    from bsmamba.study.lock import FolderLock, FolderLocked

    rdir = sdir / system / f"s{seed}"
    info = worker_info(launcher)
    try:
        with FolderLock(rdir, what="run", **{k: v for k, v in info.items() if k == "job_id"}):
            return _run_one_locked(
                cfg, system, seed, rdir, clean_dir, noisy_dir, only_abl3, echo, eval_workers, info
            )
    except FolderLocked as e:
        echo(f"[study] {system}/s{seed}: left alone, {e}")
        return dict.fromkeys(("train", "enhance", "evaluate"), RUNNING_ELSEWHERE), []


def _run_one_locked(
    cfg, system, seed, rdir, clean_dir, noisy_dir, only_abl3, echo, eval_workers, info
) -> tuple[dict[str, str], list[str]]:
    rcfg = run_config(cfg, system, seed, rdir)
    rec_dir = rdir / "stages"
    computed: list[str] = []
    say = _teller(f"{system}/s{seed}", echo, computed)

    def _train():
        if only_abl3 and system != "abl3":
            raise _Skip("abl3-only fallback (study.abl3_only_fallback) is active")
        # "worker": which host, process, GPUs (and SLURM job) trained this run.
        return {**_train_stage(rcfg), "worker": info}

    tr = _stage(rec_dir / "train.json", "train", _train, say=say)

    def _enhance():
        if tr["status"] != DONE:
            raise _Skip("training did not finish")
        return {**_enhance_stage(rdir, noisy_dir, int(cfg.train.threads)), "worker": info}

    en = _stage(rec_dir / "enhance.json", "enhance", _enhance, say=say)

    def _evaluate():
        if en["status"] != DONE:
            raise _Skip("enhancement did not finish")
        return _evaluate_stage(clean_dir, rdir / "enhanced", rdir / "eval", eval_workers)

    ev = _stage(rec_dir / "evaluate.json", "evaluate", _evaluate, say=say, scores_in=rdir)
    statuses = {"train": tr["status"], "enhance": en["status"], "evaluate": ev["status"]}
    return statuses, computed


def run_in_process(
    cfg_dict: dict, system: str, seed: int, args: tuple, stream: str | None, launcher: str
):
    """One run in a pool process or a SLURM job: ``_run_one`` of a plain-dict config."""
    import torch

    cfg = _from_dict(cfg_dict)
    if cfg.train.threads > 0:
        torch.set_num_threads(int(cfg.train.threads))
    out = {"stdout": sys.stdout, "stderr": sys.stderr}.get(stream)
    echo = (lambda line: print(line, file=out, flush=True)) if out else (lambda line: None)
    # Scoring in this process: the runs already use the cores, and nested spawns cost seconds.
    return _run_one(cfg, system, seed, *args, echo=echo, eval_workers=0, launcher=launcher)


def train_only(cfg_dict: dict, system: str, seed: int, args: tuple):
    """A DDP rank other than 0 in a SLURM job: train with rank 0, record nothing."""
    from bsmamba import train

    sdir = args[0]
    train.run(run_config(_from_dict(cfg_dict), system, seed, sdir / system / f"s{seed}"))
    return None


def _from_dict(cfg_dict: dict) -> DictConfig:
    from bsmamba.config import Config

    return OmegaConf.merge(OmegaConf.structured(Config), cfg_dict)


def _run_local(cfg: DictConfig, tasks: list, args: tuple, stream: str | None, echo) -> list:
    """Every task in its own spawned process, ``study.jobs`` (or one per GPU) at a time."""
    from bsmamba.study import launchers

    cfg_dict = config.to_dict(cfg)
    results = launchers.run_pool(
        [(cfg_dict, s, seed, args, stream, "local") for s, seed in tasks],
        run_in_process,
        gpus=launchers._gpus_of(cfg),
        jobs=int(cfg.study.jobs),
        need=max(1, int(cfg.train.devices)),
        labels=[f"{s}/s{seed}" for s, seed in tasks],
        say=echo,
    )
    outcomes = []
    for (system, seed), (ok, res) in zip(tasks, results, strict=True):
        if ok:
            outcomes.append(res)
            continue
        # The run process died (killed by the OS, ...): its records say where resume starts.
        echo(f"[study] {system}/s{seed}: {res}; rerun to resume")
        outcomes.append((dict.fromkeys(RUN_STAGES, "crashed"), []))
    return outcomes


def _run_slurm(
    cfg: DictConfig, tasks: list, args: tuple, sdir: Path, echo, executor=None
) -> tuple[list, list]:
    """Submit the unfinished runs as one SLURM job array; the finished ones keep their status."""
    from bsmamba.study import launchers
    from bsmamba.study.lock import describe, holder

    outcomes, todo = [], []
    for system, seed in tasks:
        rdir = sdir / system / f"s{seed}"
        st = {k: records.status(run_stage_path(rdir, k)) for k in RUN_STAGES}
        who = holder(rdir)
        scored = st["evaluate"] == DONE and not records.scores_damage(
            records.read(run_stage_path(rdir, "evaluate"), []), rdir
        )
        if scored or st["train"] == SKIPPED:
            outcomes.append((st, []))
        elif who is not None:  # a job of an earlier submission is running it
            echo(f"[study] {f'{system}/s{seed}':<14} running elsewhere: {describe(who)}")
            outcomes.append((dict.fromkeys(st, RUNNING_ELSEWHERE), []))
        else:
            todo.append((system, seed))
            outcomes.append((dict.fromkeys(st, SUBMITTED), []))
    if not todo:
        return outcomes, []
    if executor is None:
        executor = launchers.slurm_executor(cfg, sdir / "slurm", len(todo))
    jobs = launchers.submit(executor, config.to_dict(cfg), todo, args)
    for (system, seed), job in zip(todo, jobs, strict=True):
        echo(f"[study] {f'{system}/s{seed}':<14} submitted as SLURM job {job.job_id}")
    echo(
        f"[study] {len(jobs)} run(s) submitted; when they are done, `bsmamba report {sdir}` "
        "builds the table (rerunning this command submits only what is not finished)"
    )
    return outcomes, jobs


# ----------------------------------------------------------------------------- the study
_FREE_TO_CHANGE = (
    "study.systems",
    "study.seeds",
    "study.out",
    "study.examples",
    "study.bootstrap",
    "study.jobs",
    "study.launcher",
    "study.gpus",
    "study.slurm_",
)


def _local_slots(cfg: DictConfig) -> tuple[int, bool]:
    """(runs at a time here, whether they run in child processes): ``study.jobs``, or one run
    per ``train.devices`` GPUs when 0; GPUs are pinned in children, so any GPU means children."""
    from bsmamba.study import launchers

    gpus = launchers._gpus_of(cfg)
    slots = launchers.concurrency(len(gpus), int(cfg.study.jobs), max(1, int(cfg.train.devices)))
    return slots, slots > 1 or bool(gpus)


def _changed_since_last_run(sdir: Path, cfg: DictConfig, root: Path) -> list[str]:
    """What differs from the study's last run (config keys, the data folder, e.g. a new demo set
    version): warnings, since its finished stages are reused as they are."""
    last = files.read_json(sdir / "study.json") or {}
    out = []
    if last.get("config"):
        flat_old, flat_new = _flat(last["config"]), _flat(config.to_dict(cfg))
        keys = sorted(
            k for k in set(flat_old) | set(flat_new) if flat_old.get(k) != flat_new.get(k)
        )
        keys = [k for k in keys if not k.startswith(_FREE_TO_CHANGE)]
        if keys:
            out.append(
                f"{sdir} was run with other values of {', '.join(keys)}; its finished stages are "
                "reused as they are (use a new --out to rerun them with this config)"
            )
    if last.get("data_root") and last["data_root"] != str(root):
        out.append(
            f"{sdir} was run on {last['data_root']}, the data is now {root}; its finished stages "
            "are reused as they are (use a new --out to rerun them on this data)"
        )
    return out


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _print(line: str) -> None:
    print(line, flush=True)  # progress must show up in a log file while a run trains


def run_study(
    cfg: DictConfig,
    *,
    report: bool = True,
    echo=_print,
    child_stream: str | None = "stdout",
    executor=None,
) -> dict:
    """Run (or resume) the study of ``cfg`` (build it with :func:`study_config`).

    Returns ``{"study_dir", "runs": {system: {seed: {stage: status}}}, "computed": [...],
    "results": <report.build(...) or None>}``; ``computed`` lists the stages that ran now
    (empty on a rerun of a finished study). ``echo`` prints progress lines; run processes
    print theirs to ``child_stream`` ("stdout", "stderr" or None for silence). With
    ``study.launcher=slurm`` the unfinished runs are submitted (status ``submitted``) through
    ``executor`` (default: a ``submitit.SlurmExecutor``; tests pass ``submitit.LocalExecutor``),
    the submitit jobs are under ``"jobs"``, and the report waits for ``bsmamba report``.
    """
    from bsmamba.study.lock import FolderLock

    sdir = study_dir(cfg)
    for s in cfg.study.systems:
        run_config(cfg, s, 0, sdir)  # validates system names before any work
    if cfg.study.launcher not in LAUNCHERS:
        raise ValueError(
            f"study.launcher={cfg.study.launcher!r} is not one of {', '.join(LAUNCHERS)}"
        )
    if cfg.study.launcher == "slurm" and executor is None:
        from bsmamba.study.launchers import check_slurm

        check_slurm()
    root = _resolve_data(cfg)
    # One study at a time per folder: a second one would race this one's records.
    with FolderLock(sdir, what="study"):
        return _run_study_locked(cfg, sdir, root, report, echo, child_stream, executor)


def _run_study_locked(cfg, sdir, root, report, echo, child_stream, executor) -> dict:
    import torch

    systems = list(cfg.study.systems)
    seeds = [int(cfg.train.seed) + i for i in range(int(cfg.study.seeds))]
    warnings = (files.read_json(sdir / "study.json") or {}).get("warnings", [])
    for line in _changed_since_last_run(sdir, cfg, root):
        echo(f"[study] warning: {line}")
        warnings.append(line)
    sdir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads > 0:
        torch.set_num_threads(int(cfg.train.threads))
    clean_dir, noisy_dir = _test_dirs(cfg, root, sdir)
    files.write_json(
        sdir / "study.json",
        {
            "record_version": records.RECORD_VERSION,
            "recipe": cfg.study.recipe,
            "systems": systems,
            "seeds": seeds,
            "data_root": str(root),
            "data": cfg.data.path,
            "clean_dir": str(clean_dir),
            "noisy_dir": str(noisy_dir),
            "plan_shape": {
                "batch_size": cfg.study.plan_batch_size,
                "segment_s": cfg.study.plan_segment_s,
            },
            "train_shape": {"batch_size": cfg.train.batch_size, "segment_s": cfg.data.segment_s},
            "train_budget_s": cfg.train.max_time_s,
            "train_max_steps": cfg.train.max_steps,
            "train_threads": cfg.train.threads,
            "jobs": _local_slots(cfg)[0] if cfg.study.launcher == "local" else None,
            "launcher": cfg.study.launcher,
            "config": config.to_dict(cfg),
            "warnings": warnings,
        },
    )
    computed: list[str] = []

    def teller(where: str):
        return _teller(where, echo, computed)

    if not (sdir / "test_snr.json").exists():
        files.write_json(sdir / "test_snr.json", {"by_file": _input_snr(clean_dir, noisy_dir)})
    _stage(
        sdir / "noisy" / "evaluation.json",
        "evaluate",
        lambda: _evaluate_stage(clean_dir, noisy_dir, sdir / "noisy" / "eval"),
        say=teller("noisy"),
        scores_in=sdir / "noisy",
    )

    # Phase 1: seed-independent measurements at the plan's shape.
    fits: dict[str, bool] = {}
    for system in systems:
        rcfg = run_config(cfg, system, seeds[0], sdir / system)
        say = teller(system)
        _stage(sdir / system / "params.json", "params", lambda c=rcfg: _params_stage(c), say=say)
        mem = _stage(
            sdir / system / "memory.json", "memory", lambda c=rcfg: _memory_stage(c), say=say
        )
        fits[system] = mem.get("status") != DONE or records.fits(mem.get("plan", {}))

    only_abl3 = bool(cfg.study.abl3_only_fallback) and not all(fits.values())
    if only_abl3:
        echo("[study] abl3-only fallback: not every system fits at the plan's shape")

    # Phase 2: train, enhance and score every system x seed (study.jobs runs at a time).
    tasks = [(system, seed) for system in systems for seed in seeds]
    args = (sdir, clean_dir, noisy_dir, only_abl3)
    runs: dict[str, dict] = {}
    jobs: list = []
    if cfg.study.launcher == "slurm":
        outcomes, jobs = _run_slurm(cfg, tasks, args, sdir, echo, executor)
    elif not _local_slots(cfg)[1]:
        outcomes = [_run_one(cfg, system, seed, *args, echo=echo) for system, seed in tasks]
    else:
        outcomes = _run_local(cfg, tasks, args, child_stream, echo)
    for (system, seed), (statuses, done_now) in zip(tasks, outcomes, strict=True):
        runs.setdefault(system, {})[str(seed)] = statuses
        computed.extend(done_now)

    in_flight = any(
        st["evaluate"] in (SUBMITTED, RUNNING_ELSEWHERE) for r in runs.values() for st in r.values()
    )
    results = None
    if report and not in_flight:  # with runs in flight, `bsmamba report` once they are done
        from bsmamba.study import report as report_mod

        results = report_mod.build(sdir)
        echo(report_mod.table_text(results))
        echo(f"[study] report: {sdir / 'report.md'}")
    return {
        "study_dir": str(sdir),
        "runs": runs,
        "computed": computed,
        "results": results,
        "jobs": jobs,
    }


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_config_arguments(parser, ["recipe", "data", "systems", "seeds", "budget"])
    parser.add_argument("--out", default=None, help="study directory (alias of study.out=...)")
    parser.add_argument(
        "--abl3-only-fallback",
        action="store_true",
        help="the plan's last resort: train abl3 alone when a system does not fit at batch 6",
    )
    parser.add_argument("--json", action="store_true", help="print results.json at the end")


def main(args: argparse.Namespace) -> int:
    ns = copy.copy(args)
    extra = []
    if args.out:
        extra.append(f"study.out={args.out}")
    if args.abl3_only_fallback:
        extra.append("study.abl3_only_fallback=true")
    ns.overrides = list(args.overrides or []) + extra
    probe = config.from_args(ns)
    ns.overrides = _recipe_layer(probe.study.recipe, args.config) + ns.overrides
    cfg = config.from_args(ns)  # alias flags are appended last, so they win over the recipe
    if args.print_config:
        print(config.to_yaml(cfg))
        return 0
    if args.json:  # stdout carries the JSON only
        out = run_study(cfg, echo=lambda line: None, child_stream=None)
    else:
        out = run_study(cfg)
    if args.json:
        print(json.dumps(out["results"], indent=2))
    bad = [
        f"{s}/s{seed}"
        for s, by_seed in out["runs"].items()
        for seed, st in by_seed.items()
        # skipped by choice, queued or running in another process: not a failure
        if st["evaluate"] not in (DONE, SUBMITTED, RUNNING_ELSEWHERE) and st["train"] != SKIPPED
    ]
    if bad:  # the report is written all the same; the exit status tells scripts
        print(f"[study] not finished: {', '.join(bad)} (see report.md)", file=sys.stderr)
    return 1 if bad else 0


__all__ = ["run_study", "study_config", "run_config", "study_dir"]
