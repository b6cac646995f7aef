"""Parameter counts and multiply-accumulates of the models, beside the plan's claims.

``count(model)`` splits the parameters by component (encoder, each layout block and its passes,
decoder). ``macs_per_s(model)`` counts multiply-accumulates for one second of audio with forward
hooks on a real forward pass: Linear, Conv1d, LSTM (4 gates x hidden x (input + hidden) per step
and direction), the selective scan (3 per state element and step: delta*B*u, decay*h + ., C.h)
and the 3-tap complex mask (3 complex = 12 real per bin and frame). Not counted: norms,
activations, exp, the STFT and iSTFT. ``bsmamba params`` prints both beside the plan's claims.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from torch import nn

from bsmamba import claims, config, schema
from bsmamba.presets import CLAIM_TOLERANCE, CLAIMS, EARLIER, EARLIER_CLAIMS, PRESETS


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count(model: nn.Module) -> dict[str, Any]:
    """Parameters of a ``BandSplitEnhancer``: total, encoder, per layout block, decoder.

    ``layers[i]`` is block i's count; ``passes[i]`` splits it by axis (``time``, ``band``).
    """
    blocks = list(model.layout.blocks)
    return {
        "total": _n(model),
        "encoder": _n(model.encoder),
        "layers": [_n(b) for b in blocks],
        "passes": [{p.axis: _n(p) for p in b} for b in blocks],
        "decoder": _n(model.decoder),
    }


def _hook_macs(macs: list[int]):
    from bsmamba.sequence.mamba import Mamba

    def hook(module, inputs, output):
        x = inputs[0]
        if isinstance(module, nn.Linear):
            macs[0] += x.numel() // module.in_features * module.in_features * module.out_features
        elif isinstance(module, nn.Conv1d):
            k = module.kernel_size[0] * module.in_channels // module.groups
            # the causal conv keeps L of its L + d_conv - 1 padded outputs: count those L
            macs[0] += output.shape[0] * output.shape[1] * x.shape[-1] * k
        elif isinstance(module, nn.LSTM):
            batch, steps = x.shape[:2]
            dirs = 2 if module.bidirectional else 1
            h, i = module.hidden_size, module.input_size
            macs[0] += batch * steps * dirs * 4 * h * (i + h)
        elif isinstance(module, Mamba):  # what runs beside its hooked submodules:
            batch, steps = x.shape[:2]
            macs[0] += 3 * batch * steps * module.d_inner * module.d_state  # the scan
            # dt_proj: the block multiplies by its weight directly (the bias goes into the scan)
            macs[0] += batch * steps * module.dt_rank * module.d_inner

    return hook


@torch.no_grad()
def macs_per_s(model: nn.Module) -> int:
    """Multiply-accumulates of one forward pass over one second of audio (batch 1)."""
    from bsmamba.sequence.mamba import Mamba

    macs = [0]
    hook = _hook_macs(macs)
    kinds = (nn.Linear, nn.Conv1d, nn.LSTM, Mamba)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    try:
        model.eval()
        sr = model.frontend.sample_rate
        wav = torch.randn(1, sr, generator=torch.Generator().manual_seed(0))
        est = model.forward_spectral(wav)
        macs[0] += 12 * est.numel()  # the 3-tap complex filter
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(macs[0])


def _build(name: str, overrides: list[str]):
    from bsmamba.model import BandSplitEnhancer

    cfg = config.load(overrides=[f"model.preset={name}", *[f"model.{o}" for o in overrides]])
    return BandSplitEnhancer(**config.model_kwargs(cfg))


def report(names: list[str], overrides: list[str] = ()) -> dict[str, Any]:
    """Per preset: counts, MACs/s and the plan's claim; then the plan's other claims, checked."""
    overrides = [o.removeprefix("model.") for o in overrides]
    by_preset, models = {}, {}
    for name in names:
        model = _build(name, overrides)
        models[name] = model
        c = count(model)
        by_preset[name] = {
            "params": c["total"],
            "params_by_component": c,
            "macs_per_s": macs_per_s(model),
        }
        if name in CLAIMS:  # a preset outside the plan (causal) has no claimed size
            claim = CLAIMS[name]["params_m"] * 1e6
            by_preset[name].update(
                claimed_params=int(claim),
                params_diff=c["total"] - int(claim),
                params_diff_rel=c["total"] / claim - 1,
                claim_holds=abs(c["total"] / claim - 1) <= CLAIM_TOLERANCE,
            )
    return {
        "overrides": list(overrides),
        "by_preset": by_preset,
        "claims": _claims(by_preset, models, overrides),
    }


def _claims(by_preset: dict, models: dict, overrides: list[str]) -> list[dict[str, Any]]:
    """The plan's size claims on these counts (bsmamba.claims, the study's judge too), each
    with ``holds`` and a ``detail``; the earlier settings' counts only without overrides."""
    earlier = {}
    if not overrides:
        settings = [f"{k}={v}" for k, v in EARLIER.items()]
        earlier = {n: _n(_build(n, settings)) for n in EARLIER_CLAIMS if n in by_preset}
    rows = claims.size_claims(
        {n: v["params"] for n, v in by_preset.items()},
        {n: _n(m.decoder) for n, m in models.items()},
        earlier,
    )
    return [
        {
            **r,
            "holds": r["verdict"] == claims.HOLDS,
            "detail": f"measured {r['measured']}" + (f"; {r['note']}" if r["note"] else ""),
        }  # fmt: skip
        for r in rows
        if r["verdict"] != claims.NOT_MEASURED
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "items",
        nargs="*",
        metavar="PRESET|key=value",
        help="presets to report (default: all) and model overrides such as d_state=16",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON document")


def main(args: argparse.Namespace) -> int:
    names = [i for i in args.items if "=" not in i] or list(PRESETS)
    overrides = [i for i in args.items if "=" in i]
    for bad in set(names) - set(PRESETS):
        raise ValueError(f"unknown preset {bad!r}; valid presets: {', '.join(PRESETS)}")
    rep = report(names, overrides)
    if args.json:
        print(json.dumps(schema.document("params", **rep), indent=2))
        return 0
    print(f"{'preset':<9} {'params':>10} {'claimed':>9} {'diff':>8} {'encoder':>8} "
          f"{'layers':>9} {'decoder':>9} {'GMAC/s':>7}")  # fmt: skip
    for name, r in rep["by_preset"].items():
        c = r["params_by_component"]
        claimed, diff = ("-", "-")
        if "claimed_params" in r:
            claimed, diff = f"{r['claimed_params'] / 1e6:.2f}M", f"{r['params_diff_rel']:+.1%}"
        print(
            f"{name:<9} {r['params']:>10,} {claimed:>9} "
            f"{diff:>8} {c['encoder']:>8,} {sum(c['layers']):>9,} "
            f"{c['decoder']:>9,} {r['macs_per_s'] / 1e9:>7.2f}"
        )
    if rep["overrides"]:
        print("overrides: " + ", ".join(rep["overrides"]))
    print("\nThe plan's claims:")
    for c in rep["claims"]:
        print(f"  [{'holds' if c['holds'] else 'DOES NOT HOLD'}] {c['claim']}: {c['detail']}")
    return 0
