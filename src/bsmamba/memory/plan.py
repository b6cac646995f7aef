"""The plan: a step's measured and predicted peak against a memory budget, and the verdict.

``plan`` runs both (``memory.measure`` and ``memory.predict``) and judges the budget; ``max_batch``
and ``card_table`` search the largest batch that fits. The command is in ``memory/cli.py``.
"""

from __future__ import annotations

from typing import Any

import torch

from bsmamba.memory.measure import measure as _measure  # plan()'s ``measure`` flag shadows it
from bsmamba.memory.predict import CUDA_CONTEXT_BYTES, predict
from bsmamba.memory.step import StepOptions, check_device
from bsmamba.units import fmt_bytes, parse_bytes


def plan(
    model_kwargs: dict[str, Any],
    batch_size: int,
    segment_s: float,
    budget: str | int = "24GiB",
    device: str = "cpu",
    measure: bool = True,
    options: StepOptions | None = None,
) -> dict[str, Any]:
    """Predict (and on a present device, measure) one training step's peak; judge the budget.

    The verdict uses the measured peak when there is one, else the prediction; on CUDA it adds
    the CUDA context, since the card must hold it too. Returns a JSON-ready dict:
    ``measured_peak_bytes`` (None when not measured), ``predicted_peak_bytes``, ``breakdown``,
    ``top_layers``, ``budget_bytes``, ``verdict`` ("fits" | "does_not_fit") and more.
    ``options``: what the run trains beside the generator (``StepOptions.of(cfg)``: MetricGAN's
    discriminator, the weight average); None counts the generator's step alone.
    """
    device = check_device(device)
    budget_bytes = parse_bytes(budget)
    options = options or StepOptions()
    pred = predict(model_kwargs, batch_size, segment_s, device, options=options)
    can_run = device == "cpu" or torch.cuda.is_available()
    meas = (
        _measure(model_kwargs, batch_size, segment_s, device, options=options)
        if measure and can_run
        else None
    )
    peak = meas["peak_bytes"] if meas else pred["peak_bytes"]
    needed = peak + (CUDA_CONTEXT_BYTES if device == "cuda" else 0)
    return {
        "preset": model_kwargs.get("preset"),
        "batch_size": batch_size,
        "segment_s": segment_s,
        "device": device,
        "metricgan": options.metricgan,
        "ema": options.ema,
        "measured_peak_bytes": meas["peak_bytes"] if meas else None,
        "predicted_peak_bytes": pred["peak_bytes"],
        "prediction_error": (pred["peak_bytes"] / meas["peak_bytes"] - 1) if meas else None,
        "needed_bytes": needed,
        "budget_bytes": budget_bytes,
        "verdict": "fits" if needed <= budget_bytes else "does_not_fit",
        "verdict_basis": "measured" if meas else "predicted",
        "estimate": pred["estimate"],
        "step_time_s": meas["step_time_s"] if meas else None,
        "measure_method": meas["method"] if meas else None,
        "breakdown": pred["breakdown"],
        "lstm_correction_bytes": pred["lstm_correction_bytes"],
        "top_layers": pred["top_layers"],
        "assumptions": pred["assumptions"],
    }


def max_batch(
    model_kwargs: dict[str, Any],
    segment_s: float,
    budget: str | int = "24GiB",
    device: str = "cpu",
    limit: int = 4096,
    options: StepOptions | None = None,
) -> dict[str, Any]:
    """Largest batch whose predicted step fits ``budget``: two predictions give the per-item
    slope; the candidate is then verified by predictions at exactly that batch (it fits) and
    one more (it does not), walking down or up as needed.

    Returns ``max_batch_size`` (0 when even batch 1 does not fit) and ``by_batch``: the
    predicted bytes (verdict basis, so with the CUDA context on CUDA) of every batch tried.
    """
    tried: dict[int, int] = {}
    best = _largest(model_kwargs, segment_s, parse_bytes(budget), device, limit, tried, options)
    return {"max_batch_size": best, "by_batch": {str(k): v for k, v in sorted(tried.items())}}


def _largest(kwargs, segment_s, budget_bytes: int, device: str, limit: int, tried: dict, options):
    """Largest batch fitting ``budget_bytes``; ``tried`` caches predictions (batch -> bytes)."""
    extra = CUDA_CONTEXT_BYTES if device == "cuda" else 0

    def fits(b: int) -> bool:
        if b not in tried:
            tried[b] = predict(kwargs, b, segment_s, device, options=options)["peak_bytes"] + extra
        return tried[b] <= budget_bytes

    if not fits(1):
        return 0
    fits(2)
    slope = max(1, tried[2] - tried[1])
    b = max(1, min(limit, 1 + (budget_bytes - tried[1]) // slope))
    while b > 1 and not fits(b):  # activations are nearly, not exactly, linear in the batch
        b = max(1, min(b - 1, int(b * budget_bytes / tried[b])))
    while b < limit and fits(b + 1):
        b += 1
    return int(b)


# Common GPU memory sizes (GiB): 11 (1080 Ti, 2080 Ti), 16 (V100, T4), 24 (3090, 4090, A10,
# L4), 40 (A100-40G), 80 (A100-80G, H100).
CARDS_GIB = (11, 16, 24, 40, 80)


def card_table(
    configs: dict[str, dict[str, Any]],
    segment_s: float,
    cards_gib: tuple[float, ...] = CARDS_GIB,
    device: str = "cuda",
    options: StepOptions | None = None,
) -> dict[str, dict[str, Any]]:
    """The largest training batch of every config (name -> model kwargs) on every card size.

    A trace costs time in proportion to the batch (about 1.3 s per item for abl3 at 2 s on one
    core), so large batches are not traced one by one: the peak is affine in the batch size
    (activations grow with it, parameters and optimizer state do not), and traces at batch 1
    and 4 give the line; batch 2 checks it (``line_error``: its relative distance from the
    line). On CUDA the context is added, an estimate without a GPU. Returns ``{name:
    {"by_card": {"24GiB": {"max_batch_size", "predicted_bytes"}}, "bytes_per_item",
    "fixed_bytes", "line_error", "device", "segment_s", "verdict_basis", "estimate"}}``.
    """
    device = check_device(device)
    extra = CUDA_CONTEXT_BYTES if device == "cuda" else 0
    out: dict[str, dict[str, Any]] = {}
    for name, kwargs in configs.items():
        p = {
            b: predict(kwargs, b, segment_s, device, options=options)["peak_bytes"] + extra
            for b in (1, 2, 4)
        }
        slope = (p[4] - p[1]) / 3
        fixed = p[1] - slope
        by_card = {}
        for gib in cards_gib:
            b = max(0, int((gib * 2**30 - fixed) // slope)) if slope > 0 else 0
            by_card[f"{gib:g}GiB"] = {
                "max_batch_size": b,
                "predicted_bytes": int(fixed + slope * b) if b else None,
            }
        out[name] = {
            "by_card": by_card,
            "bytes_per_item": int(slope),
            "fixed_bytes": int(fixed),
            "line_error": abs(p[2] - (fixed + 2 * slope)) / p[2],
            "device": device,
            "segment_s": segment_s,
            "verdict_basis": "predicted",
            "estimate": device == "cuda" and not torch.cuda.is_available(),
        }
    return out


def card_configs(cfg) -> dict[str, dict[str, Any]]:
    """Every preset's model kwargs, and each Mamba one again at the plan's earlier settings (4
    layers, d_state 16: the ones that ran out of memory at batch 5), each with the model
    overrides of config ``cfg`` carried over (``config.with_preset``: stft, scan backend ...)."""
    from bsmamba import config
    from bsmamba.presets import EARLIER, PRESETS

    configs = {}
    for name in PRESETS:
        kwargs = config.model_kwargs(config.with_preset(cfg, name))
        configs[name] = kwargs
        if kwargs["mixer"] != "lstm":
            configs[earlier_name(name)] = {**kwargs, **EARLIER}
    return configs


def earlier_name(preset: str) -> str:
    """The table name of ``preset`` at the plan's earlier settings (``presets.EARLIER``)."""
    from bsmamba.presets import EARLIER

    return f"{preset} earlier ({', '.join(f'{k}={v}' for k, v in EARLIER.items())})"


def verdict_text(r: dict[str, Any]) -> str:
    """'fits on cuda (predicted 3.1 GiB, an estimate, vs budget 24.00 GiB)': the verdict with
    its device, budget and basis, as every place that prints a verdict should say it."""
    basis = r["verdict_basis"] + (", an estimate," if r.get("estimate") else "")
    return (
        f"{r['verdict'].replace('_', ' ')} on {r['device']} ({basis} "
        f"{fmt_bytes(r['needed_bytes'])} vs budget {fmt_bytes(r['budget_bytes'])})"
    )
