"""`bsmamba study`: every system x seed through params -> memory plan -> train -> enhance -> score.

Folder layout of a study (``studies/<recipe>/`` unless ``study.out``)::

    study.json                    the resolved config, shapes, systems, data root
    test_snr.json                 input SNR of every test utterance (measured from the files)
    testset/{clean,noisy}/        the scored subset when ``study.test_limit`` > 0
    noisy/evaluation.json         the noisy-input row (+ per-utterance CSV)
    noisy/dnsmos.json             with study.dnsmos: its DNSMOS (+ eval/dnsmos.csv)
    <system>/params.json          parameter counts (seed-independent)
    <system>/memory.json          memory plan at the plan's shape (+ ladder events)
    <system>/s<seed>/             the training run dir (train.out): config.yaml, the run's config
                                  resolved once from the study's before training (configs.py),
                                  and:
        stages/{train,enhance,evaluate}.json   each stage's record (status, time, outcome)
        stages/dnsmos.json        with study.dnsmos: the no-reference scores' record
        enhanced/  eval/          enhanced test set, per-utterance scores (+ dnsmos.csv)
    report.md results.csv results.json plots/ audio/   (from bsmamba.study.report)

Resumable: a stage whose record says ``done`` is never rerun; an interrupted training is handed
back to ``bsmamba.train.run``, which continues from the run dir's last checkpoint. A stage that
fails is recorded with its error and the study goes on with the other systems.

This module orchestrates; the configs are :mod:`~bsmamba.study.configs`, the stages
:mod:`~bsmamba.study.stages`, the test set :mod:`~bsmamba.study.testset`, the records
:mod:`~bsmamba.study.records` and the process pool and SLURM :mod:`~bsmamba.study.launchers`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from omegaconf import DictConfig

from bsmamba import config, files
from bsmamba.study import configs, launchers, records, stages, testset
from bsmamba.study.configs import run_config, study_config, study_dir  # the public API
from bsmamba.study.records import (
    DONE,
    RUNNING_ELSEWHERE,
    SKIPPED,
    SUBMITTED,
)

LAUNCHERS = ("local", "slurm")


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
    rcfg = configs.resolve_run(cfg, system, seed, rdir)  # resolved once, saved in the run dir
    rec_dir = rdir / "stages"
    computed: list[str] = []
    say = _teller(f"{system}/s{seed}", echo, computed)

    def _train():
        if only_abl3 and system != "abl3":
            raise stages.Skip("abl3-only fallback (study.abl3_only_fallback) is active")
        # "worker": which host, process, GPUs (and SLURM job) trained this run.
        return {**stages.train_stage(rcfg), "worker": info}

    tr = stages.stage(rec_dir / "train.json", "train", _train, say=say)

    def _enhance():
        if tr["status"] != DONE:
            raise stages.Skip("training did not finish")
        return {**stages.enhance_stage(rdir, noisy_dir, int(cfg.train.threads)), "worker": info}

    en = stages.stage(rec_dir / "enhance.json", "enhance", _enhance, say=say)

    def _evaluate():
        if en["status"] != DONE:
            raise stages.Skip("enhancement did not finish")
        return stages.evaluate_stage(clean_dir, rdir / "enhanced", rdir / "eval", eval_workers)

    ev = stages.stage(rec_dir / "evaluate.json", "evaluate", _evaluate, say=say, scores_in=rdir)
    statuses = {"train": tr["status"], "enhance": en["status"], "evaluate": ev["status"]}
    if cfg.study.dnsmos:  # its own stage: turned on later, it is all a rerun computes

        def _dnsmos():
            if en["status"] != DONE:
                raise stages.Skip("enhancement did not finish")
            return stages.dnsmos_stage(rdir / "enhanced", rdir / "eval", eval_workers)

        dn = stages.stage(rec_dir / "dnsmos.json", "dnsmos", _dnsmos, say=say, scores_in=rdir)
        statuses["dnsmos"] = dn["status"]
    return statuses, computed


def run_in_process(
    cfg_dict: dict, system: str, seed: int, args: tuple, stream: str | None, launcher: str
):
    """One run in a pool process or a SLURM job: ``_run_one`` of a plain-dict config."""
    import torch

    cfg = configs.from_dict(cfg_dict)
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
    rdir = sdir / system / f"s{seed}"
    train.run(configs.resolve_run(configs.from_dict(cfg_dict), system, seed, rdir))
    return None


# ----------------------------------------------------------------------------- the study
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

    sdir = configs.study_dir(cfg)
    for s in cfg.study.systems:
        configs.run_config(cfg, s, 0, sdir)  # validates system names before any work
    if cfg.study.launcher not in LAUNCHERS:
        raise ValueError(
            f"study.launcher={cfg.study.launcher!r} is not one of {', '.join(LAUNCHERS)}"
        )
    if cfg.study.launcher == "slurm" and executor is None:
        from bsmamba.study.launchers import check_slurm

        check_slurm()
    if cfg.study.dnsmos:
        stages.check_dnsmos_extra()
    root = testset.resolve_data(cfg)
    # One study at a time per folder: a second one would race this one's records.
    with FolderLock(sdir, what="study"):
        return _run_study_locked(cfg, sdir, root, report, echo, child_stream, executor)


def _run_study_locked(cfg, sdir, root, report, echo, child_stream, executor) -> dict:
    import torch

    systems = list(cfg.study.systems)
    seeds = [int(cfg.train.seed) + i for i in range(int(cfg.study.seeds))]
    warnings = (files.read_json(sdir / "study.json") or {}).get("warnings", [])
    for line in configs.changed_since_last_run(sdir, cfg, root):
        echo(f"[study] warning: {line}")
        warnings.append(line)
    sdir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads > 0:
        torch.set_num_threads(int(cfg.train.threads))
    clean_dir, noisy_dir = testset.test_dirs(cfg, root, sdir)
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
            "jobs": launchers.local_slots(cfg)[0] if cfg.study.launcher == "local" else None,
            "launcher": cfg.study.launcher,
            "config": config.to_dict(cfg),
            "warnings": warnings,
        },
    )
    computed: list[str] = []

    def teller(where: str):
        return _teller(where, echo, computed)

    if not (sdir / "test_snr.json").exists():
        files.write_json(
            sdir / "test_snr.json", {"by_file": testset.input_snr(clean_dir, noisy_dir)}
        )
    stages.stage(
        sdir / "noisy" / "evaluation.json",
        "evaluate",
        lambda: stages.evaluate_stage(clean_dir, noisy_dir, sdir / "noisy" / "eval"),
        say=teller("noisy"),
        scores_in=sdir / "noisy",
    )
    if cfg.study.dnsmos:
        stages.stage(
            sdir / "noisy" / "dnsmos.json",
            "dnsmos",
            lambda: stages.dnsmos_stage(noisy_dir, sdir / "noisy" / "eval"),
            say=teller("noisy"),
            scores_in=sdir / "noisy",
        )

    # Phase 1: seed-independent measurements at the plan's shape.
    fits: dict[str, bool] = {}
    for system in systems:
        rcfg = configs.run_config(cfg, system, seeds[0], sdir / system)
        say = teller(system)
        stages.stage(
            sdir / system / "params.json", "params", lambda c=rcfg: stages.params_stage(c), say=say
        )
        mem = stages.stage(
            sdir / system / "memory.json", "memory", lambda c=rcfg: stages.memory_stage(c), say=say
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
        outcomes, jobs = launchers.run_slurm(
            cfg, tasks, args, sdir, echo, launchers.StudyJob(run_in_process, train_only), executor
        )
    elif not launchers.local_slots(cfg)[1]:
        outcomes = [_run_one(cfg, system, seed, *args, echo=echo) for system, seed in tasks]
    else:
        outcomes = launchers.run_local(cfg, tasks, args, child_stream, echo, run_in_process)
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
    ns.overrides = configs.recipe_layer(probe.study.recipe, args.config) + ns.overrides
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
    ok = (DONE, SUBMITTED, RUNNING_ELSEWHERE)  # queued or running elsewhere: not a failure
    bad = [
        f"{s}/s{seed}"
        for s, by_seed in out["runs"].items()
        for seed, st in by_seed.items()
        # skipped by choice: not a failure either
        if (st["evaluate"] not in ok or st.get("dnsmos", DONE) not in ok) and st["train"] != SKIPPED
    ]
    if bad:  # the report is written all the same; the exit status tells scripts
        print(f"[study] not finished: {', '.join(bad)} (see report.md)", file=sys.stderr)
    return 1 if bad else 0


__all__ = ["run_study", "study_config", "run_config", "study_dir"]
