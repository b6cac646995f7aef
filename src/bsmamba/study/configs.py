"""The configs of a study: the study's (defaults -> recipe -> file -> overrides) and, resolved
from it once, each run's, saved beside the run as its ``config.yaml`` before training.

Everything downstream of a run (training, its other DDP ranks, torchrun, a resumed run) reads
that file, never a re-derivation: a rerun of the study continues an unfinished run with the
config it was started with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bsmamba import config, files
from bsmamba.study import recipes

RUN_CONFIG = "config.yaml"  # in the run dir; bsmamba.train writes it there too (same name)


def study_config(file: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Resolve a study config: defaults -> recipe -> ``file`` -> ``overrides`` (later wins).

    The recipe is ``study.recipe`` as set by the file or the overrides (default ``demo``).
    """
    overrides = list(overrides or [])
    probe = config.load(file, overrides)
    return config.load(file, recipe_layer(probe.study.recipe, file) + overrides)


def recipe_layer(name: str, file: str | Path | None) -> list[str]:
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
    run = config.with_preset(cfg, system)
    run.train.seed = seed
    run.train.out = str(out)
    return run


def resolve_run(cfg: DictConfig, system: str, seed: int, run_dir: Path) -> DictConfig:
    """The config of the run in ``run_dir``: its saved ``config.yaml`` when there is one (the
    run was started before; training may have updated it after a memory-ladder rung), else
    :func:`run_config` of the study's ``cfg``, saved there first."""
    path = Path(run_dir) / RUN_CONFIG
    if path.is_file():
        return config.load(path)
    rcfg = run_config(cfg, system, seed, run_dir)
    files.write_text(path, config.to_yaml(rcfg))
    return rcfg


def from_dict(cfg_dict: dict) -> DictConfig:
    from bsmamba.config import Config

    return OmegaConf.merge(OmegaConf.structured(Config), cfg_dict)


# ----------------------------------------------------------------------------- reruns
_FREE_TO_CHANGE = (
    "study.systems",
    "study.seeds",
    "study.out",
    "study.examples",
    "study.dnsmos",  # turned on later: only the DNSMOS stages run
    "study.bootstrap",
    "study.jobs",
    "study.launcher",
    "study.gpus",
    "study.slurm_",
)


def changed_since_last_run(sdir: Path, cfg: DictConfig, root: Path) -> list[str]:
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
