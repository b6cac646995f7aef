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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: F401  (MISSING re-exported)


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
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    devices: int = 1
    threads: int = 0  # 0 = torch default
    precision: str = "32-true"  # 32-true | bf16-mixed
    out: str = ""  # run dir; "" = runs/<preset>-<data>-s<seed>/
    num_nodes: int = 1
    # generator loss: w_ri * complex L1 + w_mag * L1(|S|^c) (+ w_wave * L1(wave)) (+ adversarial)
    complex_loss: str = "plain"  # plain (published: mean |S_est - S_ref|) | compressed (earlier)
    loss_ri_weight: float = 0.5
    loss_mag_weight: float = 0.5
    loss_wave_weight: float = 0.0
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
    inject_oom_at_step: int = -1  # tests: raise torch.OutOfMemoryError once at this step
    inject_oom_rank: int = -1  # tests: only this distributed rank raises it (-1: every rank)


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
    jobs: int = 1  # runs trained at once, each in its own process (use train.threads=1 then)


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
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name], preset=name)


def load(
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    schema: type = Config,
) -> DictConfig:
    """Resolve a config: defaults -> preset -> file -> overrides. Returns a typed DictConfig.

    Raises ``ValueError`` naming the key for an unknown key or a value of the wrong type.
    """
    overrides = list(overrides or [])
    layers = [OmegaConf.load(file)] if file else []
    try:
        layers.append(OmegaConf.from_dotlist(overrides))
        # First pass only to learn which preset is asked for.
        probe = OmegaConf.merge(OmegaConf.structured(schema), *layers)
        base = OmegaConf.structured(schema)
        if "model" in base:
            base = OmegaConf.merge(base, {"model": _preset_args(probe.model.preset)})
        cfg = OmegaConf.merge(base, *layers)
    except ValueError:
        raise
    except Exception as e:  # omegaconf's ValidationError / ConfigKeyError carry the key
        raise ValueError(f"bad configuration: {e}".split("\n    full_key")[0]) from None
    OmegaConf.set_readonly(cfg, False)
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


def model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The model section as plain constructor kwargs (what a checkpoint embeds)."""
    return to_dict(cfg.model if "model" in cfg else cfg)
