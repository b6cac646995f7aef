"""Typed configuration for every bsmamba command.

One tree of dataclasses (OmegaConf structured configs), so that a wrong type or an unknown key is
an error rather than a silent default. Resolution order, later wins:

    dataclass defaults -> preset arguments (model section) -> --config FILE -> key=value overrides

Every key is overridable from the command line as a dotlist (``train.batch_size=4``); the flags the
CLI documents (``--preset``, ``--batch-size`` ...) are aliases of keys listed in ``FLAG_ALIASES``.

Section owners: model/stft (models), data (data), train (training), memory (planner),
study (study runner). A section may grow keys; keys are never renamed silently.
"""

from __future__ import annotations

import argparse
import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: F401  (MISSING re-exported)
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException


@dataclass
class StftConfig:
    sample_rate: int = 16000  # Hz
    n_fft: int = 512  # -> n_fft // 2 + 1 = 257 bins
    hop_length: int = 128  # samples (8 ms at 16 kHz)
    win_length: int = 512
    window: str = "hann"


@dataclass
class ModelConfig:
    """Constructor arguments of ``BandSplitEnhancer``; presets fill these in."""

    preset: str = "abl3"
    band_plan: str = "bsrnn30"  # name in bsmamba.bands.BAND_PLANS
    dim: int = 64  # N: feature width per band
    mixer: str = "bimamba"  # lstm | mamba | bimamba
    layout: str = "dual"  # stacked (published BSRNN) | dual | intra
    num_layers: int = 2  # layout blocks; dual: a time + a band pass each; stacked: L time, L band
    norm: str = "groupnorm"  # groupnorm (utterance-level, published) | layernorm (per frame)
    decoder: str = "adaptive"  # uniform | adaptive
    mask_init: str = "random"  # random (the framework's xavier init) | identity (pass-through)
    d_state: int = 12
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # 0 = ceil(dim / 16)
    merge: str = "concat"  # bimamba merge: concat (Linear 2N->N) | add
    scan_backend: str = "auto"  # reference | fused | cuda | auto
    checkpointing: bool = False  # activation checkpointing per layout block
    stft: StftConfig = field(default_factory=StftConfig)


@dataclass
class DataConfig:
    path: str = "demo"  # "demo" or the output folder of `bsmamba prepare-voicebank`
    segment_s: float = 2.0  # training crop length (seconds)
    valid_segment_s: float = 0.0  # validation crop length (seconds); 0 = segment_s
    # held-out training speakers; on a dataset without them (the demo set) this default means
    # the dataset's own choice from its manifest (demo: its declared held-out clips)
    valid_speakers: list[str] = field(default_factory=lambda: ["p226", "p287"])
    num_workers: int = 0


@dataclass
class TrainConfig:
    """The published 16 kHz BSRNN recipe by default (docs/training.md, "The recipe")."""

    batch_size: int = 6  # per process
    grad_accumulate: int = 1
    lr: float = 1e-3  # Adam, generator
    epochs: int = 120
    max_steps: int = -1  # -1 = no limit
    max_time_s: float = 0.0  # 0 = no limit; wall-clock budget for the fit
    grad_clip: float = 5.0  # grad-norm clip of the generator
    # Exponential moving average of the weights (Lightning's EMAWeightAveraging), updated every
    # step; validation, checkpoints and the final model use the average. 0 = off (published).
    ema_decay: float = 0.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    devices: int = 1
    threads: int = 0  # 0 = torch default
    precision: str = "32-true"  # 32-true | bf16-mixed
    out: str = ""  # run dir; "" = runs/<preset>-<data>-s<seed>/
    num_nodes: int = 1
    # generator loss: w_ri * complex L1 + w_mag * L1(|S|^c) (+ w_wave * L1(wave))
    # (+ w_si_sdr * -SI-SDR(wave)) (+ adversarial)
    complex_loss: str = "plain"  # plain (published: mean |S_est - S_ref|) | compressed (earlier)
    loss_ri_weight: float = 0.5
    loss_mag_weight: float = 0.5
    loss_wave_weight: float = 0.0
    loss_si_sdr_weight: float = 0.0  # weight of -SI-SDR (dB, per crop) of the waveform
    compress: float = 0.3  # power-law exponent on magnitudes; 1.0 = uncompressed
    # MetricGAN: the discriminator trains at every step from the start on real PESQ targets
    metricgan: bool = True
    metricgan_weight: float = 1.0  # weight of the generator's adversarial term
    metricgan_adv_epoch: int = -1  # adversarial term from this epoch; -1 = epochs / 2 (published)
    disc_lr: float = 1e-3  # Adam, discriminator
    disc_grad_clip: float = 5.0
    pesq_workers: int = -1  # PESQ processes for D's targets; 0 = in-process; -1 = auto
    scheduler: str = "step"  # none | step | cosine; for both optimisers
    scheduler_step_epochs: int = 10  # step: decay every this many epochs
    scheduler_gamma: float = 0.98  # step: decay factor
    max_nonfinite: int = 20  # abort after this many skipped non-finite steps
    val_every: int = 1  # validate every N epochs
    val_pesq_subset: int = 0  # PESQ/STOI on the first N validation items per epoch; 0 = all
    limit_train_batches: int = 0  # batches per epoch; 0 = all
    limit_val_batches: int = 0  # 0 = all
    keep_best: int = 3  # best-N checkpoints by validation PESQ (plus last.ckpt)
    ckpt_every_n_steps: int = 200  # last.ckpt is rewritten every N optimizer steps (and each epoch)
    log_every: int = 50  # steps between logged training losses
    progress: bool = True  # progress bars and the end summary


@dataclass
class MemoryConfig:
    budget: str = "24GiB"  # bytes, or a number with B/KiB/MiB/GiB/TiB/KB/MB/GB/TB
    check: bool = True  # plan before the first step and step down the ladder if needed
    # Rungs tried in order when the plan does not fit or a step runs out of memory; each is a
    # key=value override applied only if it lowers memory (d_state rungs skip LSTM presets).
    ladder: list[str] = field(
        default_factory=lambda: [
            "train.batch_size=4",
            "model.d_state=8",
            "model.checkpointing=true",
        ]
    )
    # Keep batch_size * grad_accumulate when a batch rung applies: the batch becomes the largest
    # divisor of the effective batch not above the rung (6 -> 3 x 2 accumulation, not 4).
    keep_effective_batch: bool = False
    device: str = ""  # device the plan is judged for: "" = train.device (auto -> cuda or cpu)


@dataclass
class StudyConfig:
    recipe: str = "demo"  # demo | smoke | voicebank
    systems: list[str] = field(
        default_factory=lambda: ["bsrnn", "modified", "abl1", "abl2", "abl3"]
    )
    seeds: int = 1
    out: str = ""  # "" = studies/<recipe>/
    # Parameters and memory are measured at the plan's shape, whatever shape training uses.
    plan_batch_size: int = 6
    plan_segment_s: float = 2.0
    plan_measure: bool = True  # False: predicted peak only (no real step at the plan's shape)
    test_limit: int = 0  # 0 = the whole test set; N = the first N utterances (sorted)
    examples: int = 3  # enhanced wavs + spectrogram PNGs per system in the report folder
    bootstrap: int = 2000  # paired-bootstrap resamples for ranking verdicts
    abl3_only_fallback: bool = False  # the plan's last resort: run abl3 alone if others don't fit
    # No-reference DNSMOS (SIG, BAK, OVRL) of every enhanced test set and the noisy input, as a
    # stage after evaluate, and their columns in the report; needs the `nr` extra.
    dnsmos: bool = False
    # Runs trained at once, each in its own process (use train.threads=1 on CPU). 0 = one run
    # per train.devices GPUs on a GPU machine, 1 on a CPU; GPUs cap it (a run never shares one).
    jobs: int = 0
    launcher: str = "local"  # local (processes here) | slurm (a job array through submitit)
    gpus: list[str] = field(default_factory=list)  # local: GPU ids; [] = every visible GPU
    # slurm: one array task per system x seed, train.devices GPUs (and tasks) per node on
    # train.num_nodes nodes; submitit's logs go to <study>/slurm/.
    slurm_partition: str = ""  # "" = the cluster's default
    slurm_time_min: int = 1440  # per job; on the limit the job is requeued and resumes
    slurm_cpus_per_gpu: int = 8  # --cpus-per-task (one task per GPU)
    slurm_mem_gb: int = 64  # --mem per node
    slurm_parallel: int = 0  # array tasks running at once; 0 = all
    slurm_account: str = ""
    slurm_qos: str = ""
    slurm_constraint: str = ""  # e.g. "a100|h100"
    slurm_setup: list[str] = field(default_factory=list)  # shell lines before the job starts


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    study: StudyConfig = field(default_factory=StudyConfig)


# CLI flag -> config key. A flag is only a shorter spelling of a key=value override.
FLAG_ALIASES: dict[str, str] = {
    "preset": "model.preset",
    "data": "data.path",
    "segment": "data.segment_s",
    "batch_size": "train.batch_size",
    "device": "train.device",
    "threads": "train.threads",
    "seed": "train.seed",
    "budget": "memory.budget",
    "recipe": "study.recipe",
    "systems": "study.systems",
    "seeds": "study.seeds",
}


def _preset_args(name: str) -> dict[str, Any]:
    from bsmamba.presets import PRESETS  # late import: presets import nothing heavy either

    if name not in PRESETS:
        raise ValueError(f"model.preset={name}: unknown preset, valid {', '.join(PRESETS)}")
    return dict(PRESETS[name], preset=name)


def load(
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    schema: type = Config,
) -> DictConfig:
    """Resolve a config: defaults -> preset -> file -> overrides. Returns a typed DictConfig.

    Raises ``ValueError`` (one line naming the key, its value and what is valid) for an unknown
    key, a value of the wrong type or a value outside :data:`RANGES`, before any work starts.
    """
    overrides = list(overrides or [])
    layers = [_load_file(Path(file))] if file else []
    try:
        layers.append(OmegaConf.from_dotlist(overrides))
        # First pass only to learn which preset is asked for.
        probe = OmegaConf.merge(OmegaConf.structured(schema), *layers)
        base = OmegaConf.structured(schema)
        if "model" in base:
            base = OmegaConf.merge(base, {"model": _preset_args(probe.model.preset)})
        cfg = OmegaConf.merge(base, *layers)
    except OmegaConfBaseException as e:  # before ValueError: omegaconf's errors are ValueErrors
        raise ValueError(_one_line(e, schema)) from None
    OmegaConf.set_readonly(cfg, False)
    return validate(cfg)


def _load_file(path: Path) -> DictConfig:
    """A YAML config file; one that does not parse, or is not a mapping, is a ``ValueError``."""
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        doc = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"{path} is not valid YAML{at} ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, DictConfig):
        raise ValueError(f"{path} is not a config: expected sections like 'train:', got a list")
    for key in _RETIRED.get("memory", ()):  # saved by older bsmamba in every run's config.yaml
        if "memory" in doc and isinstance(doc.memory, DictConfig) and key in doc.memory:
            doc.memory.pop(key)
    return doc


# Keys an older bsmamba wrote into saved configs that no longer exist (the OOM test hooks moved
# to $BSMAMBA_TEST_INJECT_OOM): dropped when a saved file is read, so old folders still load.
_RETIRED = {"memory": ("inject_oom_at_step", "inject_oom_rank")}


def _one_line(e: OmegaConfBaseException, schema: type) -> str:
    """omegaconf's multi-line error as one line: the key, its value and what it should be."""
    key = getattr(e, "full_key", None)
    first = str(e).split("\n")[0]
    if not key:
        return f"bad configuration: {first}"
    if isinstance(e, ConfigKeyError):
        section = key.rsplit(".", 1)[0] if "." in key else "the top level"
        return f"{key}: no such key in {section} (see --print-config for every key)"
    value = getattr(e, "value", None)
    try:  # the key's declared type, from the defaults
        kind = type(OmegaConf.select(OmegaConf.structured(schema), key)).__name__
    except Exception:
        kind = ""
    want = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    want = want.get(kind, "a list like [a,b]" if kind == "ListConfig" else first)
    return f"{key}={value}: not {want}" + (
        f", valid {_describe(RANGES[key])}" if key in RANGES else ""
    )


# Valid values of numeric keys, checked right after resolution (before any work): intervals,
# "[" / "]" inclusive, "(" / ")" exclusive. Floats must also be finite. Sections may add keys here.
RANGES: dict[str, str] = {
    "model.dim": "[1, inf)",
    "model.num_layers": "[1, inf)",
    "model.d_state": "[1, inf)",
    "model.d_conv": "[1, inf)",
    "model.expand": "[1, inf)",
    "model.dt_rank": "[0, inf)",  # 0 = ceil(dim / 16)
    "model.stft.sample_rate": "[1, inf)",
    "model.stft.n_fft": "[2, inf)",
    "model.stft.hop_length": "[1, inf)",
    "model.stft.win_length": "[1, inf)",
    "data.segment_s": "(0, inf)",
    "data.valid_segment_s": "[0, inf)",  # 0 = data.segment_s
    "data.num_workers": "[0, inf)",
    "train.batch_size": "[1, inf)",
    "train.grad_accumulate": "[1, inf)",
    "train.lr": "(0, inf)",
    "train.epochs": "[1, inf)",
    "train.max_steps": "[-1, inf)",  # -1 = no limit
    "train.max_time_s": "[0, inf)",  # 0 = no limit
    "train.grad_clip": "(0, inf)",  # the norm is always clipped: 0 would zero every gradient
    "train.seed": "[0, 4294967295]",  # numpy's seed range
    "train.devices": "[1, inf)",
    "train.threads": "[0, inf)",  # 0 = torch's default
    "train.num_nodes": "[1, inf)",
    "train.loss_ri_weight": "[0, inf)",
    "train.loss_mag_weight": "[0, inf)",
    "train.loss_wave_weight": "[0, inf)",
    "train.loss_si_sdr_weight": "[0, inf)",
    "train.ema_decay": "[0, 1)",
    "train.compress": "(0, 1]",
    "train.metricgan_weight": "[0, inf)",
    "train.metricgan_adv_epoch": "[-1, inf)",  # -1 = epochs / 2
    "train.disc_lr": "(0, inf)",
    "train.disc_grad_clip": "(0, inf)",  # always clipped, as grad_clip
    "train.pesq_workers": "[-1, inf)",  # -1 = auto, 0 = in-process
    "train.scheduler_step_epochs": "[1, inf)",
    "train.scheduler_gamma": "(0, 1]",
    "train.max_nonfinite": "[0, inf)",
    "train.val_every": "[1, inf)",
    "train.val_pesq_subset": "[0, inf)",  # 0 = all
    "train.limit_train_batches": "[0, inf)",  # 0 = all
    "train.limit_val_batches": "[0, inf)",
    "train.keep_best": "[0, inf)",
    "train.ckpt_every_n_steps": "[1, inf)",
    "train.log_every": "[1, inf)",
    "study.seeds": "[1, inf)",
    "study.plan_batch_size": "[1, inf)",
    "study.plan_segment_s": "(0, inf)",
    "study.test_limit": "[0, inf)",  # 0 = the whole test set
    "study.examples": "[0, inf)",
    "study.bootstrap": "[100, inf)",  # fewer resamples give no usable 95 % interval
    "study.jobs": "[0, inf)",  # 0 = one run per GPU (1 on a CPU)
    "study.slurm_time_min": "[1, inf)",
    "study.slurm_cpus_per_gpu": "[1, inf)",
    "study.slurm_mem_gb": "[1, inf)",
    "study.slurm_parallel": "[0, inf)",  # 0 = every array task at once
}


def _describe(interval: str) -> str:
    """ "[1, inf)" -> ">= 1"; "(0, 1]" -> "in (0, 1]"."""
    lo, hi = (v.strip() for v in interval[1:-1].split(","))
    if hi == "inf":
        return f"{'>=' if interval[0] == '[' else '>'} {lo}"
    return f"in {interval}"


def in_range(value: float, interval: str) -> bool:
    """Whether ``value`` lies in ``interval`` ("[1, inf)", "(0, 1]", ...); NaN/Inf never do."""
    if not math.isfinite(value):
        return False
    lo, hi = (float(v) for v in interval[1:-1].split(","))
    above = value >= lo if interval[0] == "[" else value > lo
    below = value <= hi if interval[-1] == "]" else value < hi
    return above and below


def validate(cfg: DictConfig) -> DictConfig:
    """Check every key of :data:`RANGES` that ``cfg`` has; raises ``ValueError`` naming the key,
    its value and the valid range. Returns ``cfg``."""
    for key, interval in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # not in this schema (or not numeric): nothing to check
        if not in_range(value, interval):
            what = "not a finite number" if not math.isfinite(value) else "out of range"
            raise ValueError(f"{key}={value}: {what}, valid {_describe(interval)}")
    return cfg


def add_config_arguments(parser: argparse.ArgumentParser, flags: list[str] = ()) -> None:
    """Add ``--config FILE``, trailing ``key=value`` overrides and the named alias flags."""
    parser.add_argument("--config", help="YAML config file (see `bsmamba <cmd> --print-config`)")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    for flag in flags:
        key = FLAG_ALIASES[flag]
        parser.add_argument(
            "--" + flag.replace("_", "-"), dest=flag, default=None, help=f"alias of {key}=..."
        )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def from_args(args: argparse.Namespace, schema: type = Config) -> DictConfig:
    """Build the config of a parsed command line (alias flags become overrides, flags last)."""
    overrides = list(getattr(args, "overrides", None) or [])
    for bad in [o for o in overrides if "=" not in o]:
        raise ValueError(f"override {bad!r} is not of the form section.key=value")
    for flag, key in FLAG_ALIASES.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if key in ("study.systems",):
            value = "[" + ",".join(v.strip() for v in str(value).split(",") if v.strip()) + "]"
        overrides.append(f"{key}={value}")
    return load(getattr(args, "config", None), overrides, schema)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def with_preset(cfg: DictConfig, name: str) -> DictConfig:
    """A copy of ``cfg`` whose model is preset ``name`` plus every model key ``cfg`` changed
    relative to its own preset (e.g. ``model.scan_backend``, ``model.stft``): how a study or
    ``plan --all`` carries one set of overrides to every system. Other sections are copied as
    they are. Raises ``ValueError`` for an unknown preset."""
    own = load(overrides=[f"model.preset={cfg.model.preset}"]).model
    changed = {k: cfg.model[k] for k in cfg.model if k != "preset" and cfg.model[k] != own.get(k)}
    out = copy.deepcopy(cfg)
    out.model = OmegaConf.merge(load(overrides=[f"model.preset={name}"]).model, changed)
    return out


def model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The model section as plain constructor kwargs (what a checkpoint embeds)."""
    return to_dict(cfg.model if "model" in cfg else cfg)
