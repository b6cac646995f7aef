"""Where a study's runs execute: a local pool (one run per GPU) or a SLURM job array (submitit).

Local (``study.launcher=local``): each system x seed runs in its own spawned process. On a
machine with G GPUs, G runs at a time by default, each pinned to its own GPU through
``CUDA_VISIBLE_DEVICES`` (set in the child before anything touches CUDA); a run with
``train.devices=k`` takes k of them. Children die with the study: ``PR_SET_PDEATHSIG`` on Linux
(the kernel sends SIGKILL when the parent dies, ``kill -9`` included), and a watchdog thread
that compares ``os.getppid()`` elsewhere.

SLURM (``study.launcher=slurm``): every unfinished system x seed becomes one task of a job
array submitted through submitit; the study folder stays the one source of truth (each job
writes the same stage records a local run does; rerunning the command submits only what is not
finished). A run with ``train.devices=k`` / ``train.num_nodes=n`` asks SLURM for k tasks (one
per GPU) on each of n nodes, and Lightning reads the SLURM environment for DDP.

This module imports nothing heavy at the top: a child imports it before it pins its GPUs.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsmamba.study import records  # light: json, csv and the schema
from bsmamba.study.records import (
    RUN_STAGES,
    RUNNING_ELSEWHERE,
    SKIPPED,
    SUBMITTED,
    run_stage_path,
)

if TYPE_CHECKING:
    from omegaconf import DictConfig

# ----------------------------------------------------------------------------- children die
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Make this process die when ``parent_pid`` (its parent) does, however the parent ends.

    Linux: the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); if the
    parent died before the call, ``getppid`` has changed already and we exit now. Elsewhere a
    daemon thread polls ``getppid`` once a second.
    """
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent is gone already (before prctl took effect)
        os._exit(1)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def _preexec_die_with_parent() -> None:
    """``subprocess`` preexec_fn: the child (torchrun) ends with the process starting it.

    SIGTERM, not SIGKILL: torchrun stops its worker processes on SIGTERM, and a killed torchrun
    would leave them behind.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


# ----------------------------------------------------------------------------- GPU assignment
def visible_gpus(explicit: list | None = None, env: str | None = None, count: int = 0) -> list:
    """The GPU ids a study may use, as strings: ``explicit`` (``study.gpus``) if given, else the
    parent's ``CUDA_VISIBLE_DEVICES`` (``env``; ids or UUIDs), else ``0 .. count-1``."""
    if explicit:
        return [str(g).strip() for g in explicit]
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in range(count)]


def concurrency(n_gpus: int, jobs: int, per_run: int) -> int:
    """Runs at a time: ``study.jobs`` when set (> 0), else one run per ``per_run`` GPUs (at
    least 1; 1 on a machine without GPUs). GPUs cap it: a run never shares its GPUs."""
    if n_gpus:
        fit = max(1, n_gpus // max(1, per_run))
        return min(jobs, fit) if jobs > 0 else fit
    return max(1, jobs)


def take(free: list, want: int) -> list | None:
    """The first ``want`` of the ``free`` GPUs (kept in order), or None when too few are free;
    ``want == 0`` (a CPU run) takes none."""
    if want > len(free):
        return None
    return list(free[:want])


def _gpus_of(cfg) -> list:
    """GPUs the local pool pins runs to: none when training is on the CPU."""
    if cfg.train.device in ("cpu", "mps"):
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cfg.study.gpus or env is not None:
        return visible_gpus(list(cfg.study.gpus), env)
    import torch

    return visible_gpus(count=torch.cuda.device_count() if torch.cuda.is_available() else 0)


def worker_info(launcher: str) -> dict[str, Any]:
    """Who runs this run: host, pid, the GPUs it was given, the SLURM job when there is one."""
    info: dict[str, Any] = {
        "launcher": launcher,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "gpus": None,
    }
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        info["gpus"] = [g for g in cvd.split(",") if g]
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        info["job_id"] = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    elif os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"):
        info["job_id"] = os.environ.get("SLURM_JOB_ID") or os.environ["SUBMITIT_LOCAL_JOB_ID"]
    return info


# ----------------------------------------------------------------------------- local pool
def _child(conn, parent_pid: int, gpus: list | None, fn, args: tuple) -> None:
    """Entry of a pool process: die with the parent, pin the GPUs, run ``fn(*args)``."""
    die_with_parent(parent_pid)
    if gpus is not None:  # before anything in this process initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    try:
        out = (True, fn(*args))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which goes on
        out = (False, f"{type(e).__name__}: {e}")
    conn.send(out)
    conn.close()


def run_pool(
    tasks: list, fn, *, gpus: list, jobs: int, need: int = 1, labels=None, say=print
) -> list[tuple[bool, Any]]:
    """Run ``fn(*task)`` for every task in spawned processes; ``[(ok, result or error)]``.

    ``gpus``: ids to pin runs to ([] = CPU runs, ``jobs`` at a time); ``need``: GPUs per run;
    ``labels``: a name per task for the "GPU n" progress line. A process that dies without an
    answer (killed by the OS) gives ``(False, "run process died ...")``.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    if gpus and need > len(gpus):
        raise ValueError(
            f"train.devices={need} needs {need} GPUs per run, and the study sees {len(gpus)} "
            f"({','.join(gpus)}); set train.devices to at most {len(gpus)} or study.gpus"
        )
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch threads
    slots = concurrency(len(gpus), jobs, need)
    free, pending = list(gpus), list(enumerate(tasks))
    running: dict[Any, tuple[int, Any, list | None]] = {}  # result pipe -> (i, process, gpus)
    results: list[tuple[bool, Any]] = [(False, "not run")] * len(tasks)
    while pending or running:
        while pending and len(running) < slots:
            mine = take(free, need) if gpus else None
            if gpus and mine is None:
                break
            i, task = pending.pop(0)
            if mine:
                free = [g for g in free if g not in mine]
                label = labels[i] if labels else str(i)
                say(f"[study] {label:<14} on GPU {','.join(mine)}")
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(send, os.getpid(), mine, fn, tuple(task)))
            proc.start()
            send.close()  # the child holds the only write end: EOF when it dies
            running[recv] = (i, proc, mine)
        # A pipe is ready when its child answered or died; reading it first also means a large
        # answer never blocks a child that waits for us to read.
        for recv in wait(list(running)):
            i, proc, mine = running.pop(recv)
            try:
                results[i] = recv.recv()
                proc.join(timeout=60)
                if proc.is_alive():  # answered but stuck on its way out
                    proc.kill()
                    proc.join()
            except EOFError:
                proc.join()
                results[i] = (False, f"run process died (exit status {proc.exitcode})")
            recv.close()
            if mine:
                free = [g for g in gpus if g in free or g in mine]  # back in their order
    return results


# ----------------------------------------------------------------------------- SLURM
try:  # optional: pip install "bsmamba[cluster]"
    from submitit.helpers import Checkpointable as _Requeueable
except ImportError:  # pragma: no cover - the slurm launcher says how to install it
    _Requeueable = object


class StudyJob(_Requeueable):
    """One system x seed as a submitit job: ``StudyJob(run, train)(cfg_dict, system, seed, args)``.

    Every task of the job (one per GPU and node) trains (DDP through Lightning's SLURM
    environment); rank 0 alone writes the stage records and enhances and scores. On a time
    limit submitit calls ``checkpoint`` and requeues the same call, which resumes the run from
    its ``last.ckpt`` (training checkpoints every ``train.ckpt_every_n_steps`` steps).
    """

    def __init__(self, run, train):
        # run(cfg_dict, system, seed, args, stream, launcher) and train(cfg_dict, system, seed,
        # args): the runner's entry points, handed in (module functions pickle by name).
        self.run, self.train = run, train

    def __call__(self, cfg_dict: dict, system: str, seed: int, args: tuple):
        rank = int(os.environ.get("SLURM_PROCID", os.environ.get("SUBMITIT_LOCAL_GLOBALID", 0)))
        # bsmamba.train writes its run files on RANK 0 only; srun sets SLURM_* names instead.
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", str(rank)))
        if rank != 0:  # the other DDP ranks only train; rank 0 records
            return self.train(cfg_dict, system, seed, args)
        return self.run(cfg_dict, system, seed, args, "stdout", "slurm")


# ----------------------------------------------------------------------------- a study's runs
def run_local(cfg: DictConfig, tasks: list, args: tuple, stream: str | None, echo, fn) -> list:
    """Every task in its own spawned process, ``study.jobs`` (or one per GPU) at a time:
    ``fn(cfg_dict, system, seed, args, stream, "local")`` (the runner's run of one task)."""
    from bsmamba import config

    cfg_dict = config.to_dict(cfg)
    results = run_pool(
        [(cfg_dict, s, seed, args, stream, "local") for s, seed in tasks],
        fn,
        gpus=_gpus_of(cfg),
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


def run_slurm(
    cfg: DictConfig, tasks: list, args: tuple, sdir: Path, echo, job: StudyJob, executor=None
) -> tuple[list, list]:
    """Submit the unfinished runs as one SLURM job array of ``job``; the finished ones keep
    their status."""
    from bsmamba.study.lock import describe, holder

    outcomes, todo = [], []
    for system, seed in tasks:
        rdir = sdir / system / f"s{seed}"
        st = {k: records.status(run_stage_path(rdir, k)) for k in RUN_STAGES}
        who = holder(rdir)
        scored = records.run_finished(rdir, bool(cfg.study.dnsmos))
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
        executor = slurm_executor(cfg, sdir / "slurm", len(todo))
    from bsmamba import config

    jobs = submit(executor, job, config.to_dict(cfg), todo, args)
    for (system, seed), job in zip(todo, jobs, strict=True):
        echo(f"[study] {f'{system}/s{seed}':<14} submitted as SLURM job {job.job_id}")
    echo(
        f"[study] {len(jobs)} run(s) submitted; when they are done, `bsmamba report {sdir}` "
        "builds the table (rerunning this command submits only what is not finished)"
    )
    return outcomes, jobs


def local_slots(cfg: DictConfig) -> tuple[int, bool]:
    """(runs at a time here, whether they run in child processes): ``study.jobs``, or one run
    per ``train.devices`` GPUs when 0; GPUs are pinned in children, so any GPU means children."""
    gpus = _gpus_of(cfg)
    slots = concurrency(len(gpus), int(cfg.study.jobs), max(1, int(cfg.train.devices)))
    return slots, slots > 1 or bool(gpus)


def slurm_parameters(cfg, n_runs: int) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` of a study: one array task per run, each with
    ``train.devices`` GPUs (and as many tasks) on each of ``train.num_nodes`` nodes."""
    s, t = cfg.study, cfg.train
    gpus = max(1, int(t.devices))
    params: dict[str, Any] = {
        "job_name": f"bsmamba-{s.recipe}",
        "time": int(s.slurm_time_min),
        "nodes": int(t.num_nodes),
        "ntasks_per_node": gpus,
        "gpus_per_node": gpus,
        "cpus_per_task": int(s.slurm_cpus_per_gpu),
        "mem": f"{int(s.slurm_mem_gb)}GB",
        "array_parallelism": max(1, min(n_runs, int(s.slurm_parallel) or n_runs)),
        "signal_delay_s": 120,  # time to write last.ckpt's successor before the limit
    }
    for key in ("partition", "account", "qos", "constraint"):
        value = s[f"slurm_{key}"]
        if value:
            params[key] = str(value)
    if s.slurm_setup:
        params["setup"] = [str(line) for line in s.slurm_setup]
    return params


def check_slurm() -> None:
    """Raise ``ValueError`` (before any work) when SLURM jobs cannot be submitted from here."""
    import shutil

    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ValueError(
            "study.launcher=slurm needs submitit: pip install 'bsmamba[cluster]'"
        ) from None
    for tool in ("sbatch", "srun"):
        if shutil.which(tool) is None:
            raise ValueError(
                f"study.launcher=slurm: `{tool}` is not on PATH; run the study on a SLURM login "
                "node (or use study.launcher=local)"
            )


def slurm_executor(cfg, folder, n_runs: int):
    """A ``submitit.SlurmExecutor`` for the study's jobs (logs and pickles in ``folder``)."""
    import submitit

    check_slurm()
    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=20)
    executor.update_parameters(**slurm_parameters(cfg, n_runs))
    return executor


def submit(executor, job: StudyJob, cfg_dict: dict, tasks: list, args: tuple) -> list:
    """Submit ``job`` once per (system, seed) task through ``executor``: a job array on
    SLURM (``executor.batch()``), one process each with submitit's local executor."""
    with executor.batch():
        jobs = [executor.submit(job, cfg_dict, system, seed, args) for system, seed in tasks]
    return jobs


__all__ = [
    "StudyJob",
    "check_slurm",
    "concurrency",
    "die_with_parent",
    "run_pool",
    "slurm_executor",
    "slurm_parameters",
    "submit",
    "take",
    "visible_gpus",
    "worker_info",
]
