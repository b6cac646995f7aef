"""``bsmamba train`` and ``run(cfg) -> results``: one training run in one run directory.

Run directory (default ``runs/<preset>-<data>-s<seed>/``)::

    config.yaml        the resolved config (after any memory-ladder rung)
    environment.json   versions, device, threads, git revision
    logs/tensorboard/  logs/csv/metrics.csv
    checkpoints/       last.ckpt (every train.ckpt_every_n_steps and each epoch),
                       best-e<E>-s<S>-pesq=<P>.ckpt (the train.keep_best best by validation PESQ)
    ladder.json        memory-ladder events and the final config (when the ladder is used)
    results.json       written when training ends: the run is finished

``run`` on a finished run returns its results; on an unfinished one (a last.ckpt and no
results.json) it resumes from last.ckpt. Under ``torchrun`` (or with ``train.devices > 1``) the
same call trains with DDP; ``train.batch_size`` is per process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bsmamba import checkpoint as ckpt_io
from bsmamba import config, env, files, schema
from bsmamba.memory import ladder
from bsmamba.train import console

ACCELERATORS = {"cpu": "cpu", "cuda": "gpu", "mps": "mps"}  # Lightning's names


def run_dir(cfg: DictConfig) -> Path:
    """``train.out`` or ``runs/<preset>-<data>-s<seed>/`` (data = "demo" or the folder name)."""
    if cfg.train.out:
        return Path(cfg.train.out)
    data = "demo" if cfg.data.path == "demo" else Path(cfg.data.path).resolve().name
    return Path("runs") / f"{cfg.model.preset}-{data}-s{cfg.train.seed}"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume, or just report) the run of ``cfg``; returns the results.json content."""
    config.validate(cfg)  # a config built in code gets the checks the command line gets
    out = run_dir(cfg)
    done = out / "results.json"
    if done.is_file():
        return _read_results(done)
    cfg = _validate(_reconcile(cfg, out))
    if cfg.train.threads > 0:
        torch.set_num_threads(int(cfg.train.threads))
    console.quiet(not cfg.train.progress)

    events: list[dict] = []
    if cfg.memory.check and not (out / "checkpoints" / ckpt_io.LAST).exists():
        cfg, events = ladder.fit(cfg)
        console.say(cfg, *[ladder.describe(e) for e in events])
        _write_ladder(out, events, cfg)
    while True:
        try:
            return _fit(cfg, out, events)
        except Exception as e:
            if not ladder.is_oom(e):
                raise
            devices, nodes, _ = _distribution(cfg)
            if devices * nodes > 1:
                # A rung taken by one rank alone would leave the others blocked in a collective
                # (a hang until the process-group timeout) or training another model.
                raise RuntimeError(
                    f"out of memory on rank {console.rank()} of {devices * nodes} during "
                    f"distributed training ({e}). The ladder cannot step down one rank alone. "
                    "Start a new run with a smaller train.batch_size, or with memory.budget set "
                    "to one GPU's memory so that every rank's plan steps down before step 0; "
                    f"{out} keeps its checkpoints."
                ) from e
            stepped = ladder.step_down(cfg, f"out of memory during training: {e}")
            if stepped is None:
                raise
            cfg, event = stepped
            events.append(event)
            if event.get("restart") and (out / "checkpoints").exists() and console.rank() == 0:
                # New parameter shapes cannot load the old weights: start again from step 0.
                shutil.rmtree(out / "checkpoints")
            resume = "restarting from step 0" if event.get("restart") else "resuming"
            console.say(cfg, f"{ladder.describe(event)}; {resume}")
            _write_ladder(out, events, cfg)


def _read_results(path: Path) -> dict:
    """A finished run's results.json; a damaged one is an error naming the file and the fix."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is damaged ({e}); move it aside and rerun: training continues from "
            f"{path.parent / 'checkpoints' / ckpt_io.LAST} and writes it again"
        ) from None


def _check_resume(rd: Path, cfg: DictConfig) -> None:
    """``--resume`` keeps the run's model: a flag or override that changes it is an error."""
    saved = OmegaConf.load(rd / "config.yaml")
    have = OmegaConf.to_container(saved.model, resolve=True) if "model" in saved else {}
    want = config.model_kwargs(cfg)
    diff = sorted(k for k in want if k in have and want[k] != have[k])
    if diff:
        asked = ", ".join(f"model.{k}={want[k]}" for k in diff)
        raise ValueError(
            f"{rd} is a run of {have.get('preset')}; a resumed run keeps its model, so {asked} "
            "cannot apply: drop it, or start a new run (another train.out)"
        )


def _write_ladder(out: Path, events: list[dict], cfg: DictConfig) -> None:
    """ladder.json: what the memory ladder did and the config training ended up with."""
    if events and console.rank() == 0:
        files.write_json(out / "ladder.json", {"events": events, "config": config.to_dict(cfg)})


def _fit(cfg: DictConfig, out: Path, events: list[dict]) -> dict:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from bsmamba import data
    from bsmamba.env import environment
    from bsmamba.model import BandSplitEnhancer
    from bsmamba.train import callbacks as cb
    from bsmamba.train.module import EnhancementModule

    t = cfg.train
    ckdir = out / "checkpoints"
    if console.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        files.write_text(out / "config.yaml", config.to_yaml(cfg))
        files.write_json(out / "environment.json", environment())
        ckpt_io.clean_stale_temps(ckdir)
    L.seed_everything(int(t.seed), workers=True, verbose=False)

    root = data.resolve(cfg.data.path)
    d = cfg.data
    kw = dict(valid_speakers=list(d.valid_speakers), seed=int(t.seed))
    train_set = data.TrainSet(root, "train", segment_s=d.segment_s, **kw)
    valid_set = data.TrainSet(root, "valid", segment_s=d.valid_segment_s or d.segment_s, **kw)
    model = BandSplitEnhancer(**config.model_kwargs(cfg))
    module = EnhancementModule(model, cfg, train_set, valid_set)

    callbacks: list = [cb.LastCheckpoint(ckdir / ckpt_io.LAST, int(t.ckpt_every_n_steps))]
    if t.keep_best > 0:
        callbacks.append(cb.best_checkpoints(ckdir, int(t.keep_best)))
    if t.ema_decay > 0:  # validation, checkpoints and the final weights are the average's
        from lightning.pytorch.callbacks import EMAWeightAveraging

        callbacks.append(EMAWeightAveraging(decay=float(t.ema_decay)))
    devices, num_nodes, strategy = _distribution(cfg)
    trainer = L.Trainer(
        accelerator=ACCELERATORS[env.resolve_device(t.device, "train.device")],
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=t.precision,
        max_epochs=int(t.epochs),
        max_steps=int(t.max_steps),
        max_time={"seconds": float(t.max_time_s)} if t.max_time_s > 0 else None,
        limit_train_batches=int(t.limit_train_batches) or 1.0,
        limit_val_batches=int(t.limit_val_batches) or 1.0,
        check_val_every_n_epoch=int(t.val_every),
        num_sanity_val_steps=0,
        log_every_n_steps=int(t.log_every),
        use_distributed_sampler=False,  # EpochSampler shards (and resumes) by itself
        callbacks=callbacks,
        plugins=[cb.AtomicCheckpointIO()],
        logger=[
            TensorBoardLogger(out / "logs", name="tensorboard", version=""),
            # every row on disk as it is logged: a killed run's log keeps what it logged
            CSVLogger(out / "logs", name="csv", version="", flush_logs_every_n_steps=1),
        ],
        enable_checkpointing=True,
        enable_progress_bar=bool(t.progress),
        enable_model_summary=bool(t.progress),
        default_root_dir=out,
    )
    resume = ckdir / ckpt_io.LAST
    if resume.is_file():
        console.say(cfg, f"resuming from {resume}")
        state = ckpt_io.load(resume)
        ckpt_io.check_fits(resume, ckpt_io.model_state(state), model)
        if trainer.global_rank == 0:
            _keep_logged_rows(trainer.loggers, int(state["global_step"]))
    t0 = time.perf_counter()
    try:
        trainer.fit(module, ckpt_path=str(resume) if resume.is_file() else None)
    finally:
        module.close()  # the PESQ processes, also when the fit ends in an error
    wall = time.perf_counter() - t0
    if trainer.interrupted:
        raise KeyboardInterrupt("training interrupted; rerun the same command to resume")

    results = _results(cfg, out, trainer, module, callbacks, events, wall)
    if trainer.world_size > 1:
        results["ddp"] = _rank_digests(trainer, module)
    if trainer.global_rank == 0:
        files.write_json(out / "results.json", results)  # ladder.json: written by run()
        console.summary(cfg, out, results)
    if trainer.world_size > 1:
        # Leave together: a rank exiting while a peer still talks to it can abort the peer.
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return results


def _keep_logged_rows(loggers, step: int) -> None:
    """Carry metrics.csv's rows of the steps before ``step`` into a resumed run's log.

    Lightning's CSV writer deletes an existing metrics.csv when it starts; the rows a checkpoint
    already covers are handed to the new writer instead (those logged after it, which the resumed
    run logs again, are dropped), so the log of a resumed run reads as that of an unbroken one.
    """
    import csv

    from lightning.pytorch.loggers import CSVLogger

    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir, "metrics.csv")
        if not path.is_file():
            continue
        try:
            with open(path, newline="", errors="replace") as f:
                rows = [{k: v for k, v in row.items() if k and v} for row in csv.DictReader(f)]
        except csv.Error as e:  # a damaged log never stops a resume: it is kept, not read
            damaged = _unused(path.with_name(f"metrics-damaged-s{step}.csv"))
            os.replace(path, damaged)
            warnings.warn(f"{path} could not be read ({e}); kept as {damaged.name}", stacklevel=2)
            continue
        writer = logger.experiment  # created here, deleting the file: the rows are back at once
        writer.metrics[:0] = [r for r in rows if _step_of(r, step) < step]
        writer.save()


def _unused(path: Path) -> Path:
    """``path``, or ``name-2.ext``, ``name-3.ext`` ... where it exists: nothing kept is replaced."""
    n, free = 1, path
    while free.exists():
        n += 1
        free = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return free


def _step_of(row: dict, default: int) -> float:
    """A metrics.csv row's step; ``default`` where it is missing or damaged (a row cut short
    by a kill, say)."""
    try:
        return float(row.get("step", default))
    except ValueError:
        return default


def _results(cfg, out, trainer, module, callbacks, events, wall) -> dict:
    history = module.history
    best = max(
        (r for r in history if r["val_pesq"] == r["val_pesq"]),
        key=lambda r: r["val_pesq"],
        default=None,
    )
    best_ckpt = None
    for cb in callbacks:
        if getattr(cb, "monitor", None) == "val_pesq" and cb.best_model_path:
            best_ckpt = os.path.relpath(cb.best_model_path, out)
    params = sum(p.numel() for p in module.model.parameters())
    return schema.document(
        "train_results",
        preset=cfg.model.preset,
        data=cfg.data.path,
        seed=int(cfg.train.seed),
        best_val_pesq=best["val_pesq"] if best else None,
        best_val_stoi=best["val_stoi"] if best else None,
        best_epoch=best["epoch"] if best else None,
        best_checkpoint=best_ckpt,
        last_checkpoint=os.path.relpath(out / "checkpoints" / ckpt_io.LAST, out),
        steps=int(trainer.global_step),
        epochs=_epochs(trainer, cfg),
        step_time_s=module.step_time_s(),
        wall_time_s=wall,
        params=int(params),
        batch_size=int(cfg.train.batch_size),
        world_size=int(trainer.world_size),
        device=str(trainer.strategy.root_device),
        precision=str(cfg.train.precision),
        threads=torch.get_num_threads(),
        nonfinite_steps=int(module.nonfinite_steps),
        disc_skipped_steps=int(module.disc_skipped_steps),
        validation=history,
        ladder_events=events,
        config_path="config.yaml",
        environment_path="environment.json",
        model_config=dict(module.model.config),
    )


def _epochs(trainer, cfg: DictConfig) -> float | None:
    """Epochs trained, as a fraction (steps x accumulation / batches per epoch): 1.25, not 2."""
    per_epoch = trainer.num_training_batches
    if not per_epoch or per_epoch == float("inf"):
        return None
    return round(trainer.global_step * int(cfg.train.grad_accumulate) / per_epoch, 3)


def _rank_digests(trainer, module) -> dict:
    """sha256 of every rank's final weights (gathered): equal digests = ranks stayed in sync."""
    import hashlib

    import torch.distributed as dist

    flat = torch.cat([p.detach().float().cpu().reshape(-1) for p in module.model.parameters()])
    digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()
    gathered = [None] * trainer.world_size
    dist.all_gather_object(gathered, digest)
    return {"weights_sha256": gathered, "in_sync": len(set(gathered)) == 1}


def _distribution(cfg: DictConfig) -> tuple[int, int, str]:
    """(devices, num_nodes, strategy): torchrun's environment wins over train.devices."""
    t = cfg.train
    if "LOCAL_WORLD_SIZE" in os.environ and "WORLD_SIZE" in os.environ:
        local, world = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"])
        devices, nodes = local, max(1, world // local)
    else:
        devices, nodes = int(t.devices), int(t.num_nodes)
    if devices * nodes <= 1:
        return devices, nodes, "auto"
    # Each of the two backward passes of a step leaves the other network's parameters unused
    # (D before the adversarial phase, the generator in D's step): DDP must tolerate that.
    return devices, nodes, "ddp_find_unused_parameters_true" if t.metricgan else "ddp"


def _validate(cfg: DictConfig) -> DictConfig:
    from bsmamba.train.module import check_recipe

    t = cfg.train
    env.resolve_device(t.device, "train.device")
    check_recipe(t)
    rate = int(cfg.model.stft.sample_rate)
    if t.metricgan and rate != 16000:
        raise ValueError(
            f"train.metricgan needs 16 kHz audio (its targets are PESQ-WB), the model runs at "
            f"{rate} Hz; set train.metricgan=false"
        )
    for key in ("batch_size", "epochs", "val_every", "grad_accumulate"):
        if t[key] < 1:
            raise ValueError(f"train.{key} must be >= 1, got {t[key]}")
    return cfg


def _reconcile(cfg: DictConfig, out: Path) -> DictConfig:
    """Resuming an unfinished run keeps the model it was trained with.

    If the run dir's saved config has another model section, the ladder (ladder.json) may have
    changed it (then the saved model and batch win), else the request is an error.
    """
    saved_path = out / "config.yaml"
    if not (out / "checkpoints" / ckpt_io.LAST).is_file() or not saved_path.is_file():
        return cfg
    saved = OmegaConf.load(saved_path)
    want, have = config.model_kwargs(cfg), OmegaConf.to_container(saved.model, resolve=True)
    if want == have:
        return cfg
    if (out / "ladder.json").is_file():
        cfg = cfg.copy()
        cfg.model = saved.model
        cfg.train.batch_size = saved.train.batch_size
        cfg.train.grad_accumulate = saved.train.grad_accumulate
        return cfg
    older = sorted(set(want) - set(have))
    if older:  # keys this version added: no --resume can make the configs agree
        raise ValueError(
            f"{out} was trained by an older bsmamba (its config.yaml has no "
            f"model.{', model.'.join(older)}); this version cannot continue it: start a new run "
            "(another train.out)"
        )
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    raise ValueError(
        f"{out} holds an unfinished run of another model "
        f"(differs in model.{', model.'.join(diff)}); "
        f"resume it with `bsmamba train --resume {out}`, or pick another train.out"
    )


# ---- command line ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_config_arguments(
        parser, ["preset", "data", "batch_size", "device", "threads", "seed", "budget"]
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (its config.yaml + overrides); "
        "a finished run continues too, e.g. with a larger train.max_steps",
    )
    parser.add_argument("--json", action="store_true", help="print results.json to stdout")


def main(args: argparse.Namespace) -> int:
    if args.resume:
        rd = Path(args.resume)
        if not (rd / "config.yaml").is_file():
            raise FileNotFoundError(f"{rd / 'config.yaml'} not found; is {rd} a bsmamba run dir?")
        if args.config is None:
            args.config = str(rd / "config.yaml")
        args.overrides = list(args.overrides or []) + [f"train.out={rd}"]
    cfg = config.from_args(args)
    if args.print_config:
        print(config.to_yaml(cfg), end="")
        return 0
    if args.resume:
        _check_resume(rd, cfg)  # before the results below are moved: a refusal changes nothing
        done = rd / "results.json"
        if done.is_file() and console.rank() == 0:
            # --resume on a finished run continues it (e.g. with a larger train.max_steps or
            # train.epochs); the earlier results are kept beside the new ones.
            steps = _read_results(done).get("steps")
            os.replace(done, rd / f"results-s{steps}.json")
    from bsmamba.train.module import NonFiniteLossError

    try:
        results = run(cfg)
    except NonFiniteLossError as e:
        raise ValueError(str(e)) from None
    if args.json and console.rank() == 0:
        print(json.dumps(results, indent=2))
    return 0
