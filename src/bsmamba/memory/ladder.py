"""The out-of-memory ladder: rungs of config overrides tried in order until a run fits.

The ladder is data (``memory.ladder`` in the config), e.g. the plan's own advice::

    ["train.batch_size=4", "model.d_state=8", "model.checkpointing=true"]

A rung applies only if it lowers memory: a number must go down (a batch of 2 never becomes 4),
anything else must change; ``model.d_state`` rungs skip LSTM presets, which have no state size.
``fit(cfg)`` walks the ladder before the first step until the plan's prediction fits the budget;
``step_down(cfg, reason)`` takes one rung after a caught out-of-memory error. Each rung returns an
event (JSON-ready) that says what changed and whether training must restart from step 0 (a rung
that changes parameter shapes, like ``d_state``, cannot keep the trained weights).

Batch rungs with ``memory.keep_effective_batch``: the batch becomes the largest divisor of
``batch_size * grad_accumulate`` not above the rung, and accumulation makes up the rest, so the
effective batch is exactly kept: 6 -> 3 x 2 (a batch of 4 cannot make 6 with whole steps).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bsmamba import config, env

# Keys a rung may change without invalidating trained weights (training continues in place).
_KEEPS_WEIGHTS = ("train.", "data.", "model.checkpointing", "model.scan_backend")


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error on any device (CUDA, CPU allocator, MPS, Python)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text
    )


# Tests only: "STEP" or "STEP:RANK" makes training raise an out-of-memory error at that step (on
# that distributed rank). An environment variable, not a config key: it reaches torchrun's
# workers and never appears in a run's config.yaml.
INJECT_OOM_ENV = "BSMAMBA_TEST_INJECT_OOM"


def inject_oom(step: int, rank: int = 0) -> None:
    """Raise ``torch.OutOfMemoryError`` at ``step`` if ``$BSMAMBA_TEST_INJECT_OOM`` asks for it
    (on ``rank``, or every rank without ``:RANK``). It fires once: the variable is removed, so
    the step after a step-down, or a restart in this process, runs normally."""
    spec = os.environ.get(INJECT_OOM_ENV, "")
    if not spec:
        return
    at, _, who = spec.partition(":")
    if int(at) == step and (not who or int(who) == rank):
        del os.environ[INJECT_OOM_ENV]
        raise torch.OutOfMemoryError(f"injected out-of-memory error at step {step}")


def _parse(rung: str, cfg: DictConfig) -> tuple[str, Any]:
    if "=" not in rung:
        raise ValueError(f"memory.ladder rung {rung!r} is not of the form section.key=value")
    key = rung.split("=", 1)[0].strip()
    if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
        raise ValueError(
            f"memory.ladder rung {rung!r}: unknown key {key!r}; rungs override config keys "
            "such as train.batch_size, model.d_state, model.checkpointing"
        )
    value = OmegaConf.select(OmegaConf.from_dotlist([rung]), key)
    return key, value


def _lowers(key: str, old: Any, new: Any, cfg: DictConfig) -> bool:
    if key == "model.d_state" and cfg.model.mixer == "lstm":
        return False  # LSTM presets have no state size
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        return new < old
    return new != old


def _changes_for(key: str, new: Any, cfg: DictConfig) -> dict[str, Any]:
    """The config updates one rung makes (a batch rung may also set grad accumulation)."""
    if key != "train.batch_size" or not cfg.memory.keep_effective_batch:
        return {key: new}
    effective = cfg.train.batch_size * cfg.train.grad_accumulate
    batch = max(d for d in range(1, int(new) + 1) if effective % d == 0)
    return {"train.batch_size": batch, "train.grad_accumulate": effective // batch}


def step_down(cfg: DictConfig, reason: str) -> tuple[DictConfig, dict[str, Any]] | None:
    """The config after the next applicable rung of ``cfg.memory.ladder``, and its event.

    Returns None when no rung lowers memory any more. The input ``cfg`` is not modified.
    """
    for rung in cfg.memory.ladder:
        key, value = _parse(rung, cfg)
        old = OmegaConf.select(cfg, key)
        if not _lowers(key, old, value, cfg):
            continue
        updates = _changes_for(key, value, cfg)
        new = copy.deepcopy(cfg)
        changes = []
        for k, v in updates.items():
            changes.append({"key": k, "from": OmegaConf.select(cfg, k), "to": v})
            OmegaConf.update(new, k, v, merge=False)
        restart = any(not c["key"].startswith(_KEEPS_WEIGHTS) for c in changes)
        event = {
            "event": "step_down",
            "rung": rung,
            "reason": reason,
            "changes": changes,
            "restart": restart,
            "effective_batch": new.train.batch_size * new.train.grad_accumulate,
        }
        return new, event
    return None


def plan_device(cfg: DictConfig) -> str:
    """Where the plan judges memory: ``memory.device``, else the training device (``auto``: what
    ``env.resolve_device`` picks)."""
    device = cfg.memory.device or cfg.train.device
    if device == "auto":
        device = env.resolve_device("auto")
    return "cuda" if device == "cuda" else "cpu"  # mps/other: judged like host memory


def fit(cfg: DictConfig) -> tuple[DictConfig, list[dict[str, Any]]]:
    """Step down the ladder until the predicted training step fits ``memory.budget``.

    Prediction only (a meta trace, seconds), so it is cheap before the first step. Returns the
    final config and the events: one ``plan`` event per configuration judged and a
    ``step_down`` event per rung taken. Raises ``ValueError`` if the last rung still does not fit.
    Does nothing (no events) when ``memory.check`` is false.
    """
    from bsmamba.memory.plan import plan
    from bsmamba.memory.step import StepOptions
    from bsmamba.units import fmt_bytes

    if not cfg.memory.check:
        return cfg, []
    for rung in cfg.memory.ladder:  # fail on a bad rung now, not after an OOM hours in
        _parse(rung, cfg)
    device = plan_device(cfg)
    events: list[dict[str, Any]] = []
    while True:
        p = plan(
            config.model_kwargs(cfg),
            cfg.train.batch_size,
            cfg.data.segment_s,
            cfg.memory.budget,
            device,
            measure=False,
            options=StepOptions.of(cfg),
        )
        events.append(
            {
                "event": "plan",
                "device": device,
                "batch_size": cfg.train.batch_size,
                "predicted_peak_bytes": p["predicted_peak_bytes"],
                "needed_bytes": p["needed_bytes"],
                "budget_bytes": p["budget_bytes"],
                "verdict": p["verdict"],
            }
        )
        if p["verdict"] == "fits":
            return cfg, events
        reason = (
            f"plan: {fmt_bytes(p['needed_bytes'])} needed > budget {fmt_bytes(p['budget_bytes'])}"
        )
        stepped = step_down(cfg, reason)
        if stepped is None:
            raise ValueError(
                f"{cfg.model.preset} at batch {cfg.train.batch_size} x {cfg.data.segment_s} s "
                f"needs {fmt_bytes(p['needed_bytes'])} on {device} even after every rung of "
                f"memory.ladder; budget memory.budget={cfg.memory.budget}. Raise the budget, "
                "add rungs (e.g. train.batch_size=1, data.segment_s=1.0) or set memory.check=false"
            )
        cfg, event = stepped
        event["restart"] = False  # nothing trained yet: there is nothing to restart
        events.append(event)


def describe(event: dict[str, Any]) -> str:
    """One log line for an event of ``fit`` or ``step_down``."""
    from bsmamba.units import fmt_bytes

    if event["event"] == "plan":
        return (
            f"memory plan ({event['device']}, batch {event['batch_size']}): predicted "
            f"{fmt_bytes(event['needed_bytes'])} needed, budget {fmt_bytes(event['budget_bytes'])}"
            f": {event['verdict'].replace('_', ' ')}"
        )
    what = ", ".join(f"{c['key']} {c['from']} -> {c['to']}" for c in event["changes"])
    tail = "; restarting from step 0 (parameter shapes change)" if event["restart"] else ""
    return f"memory ladder: {what} ({event['reason']}){tail}"
