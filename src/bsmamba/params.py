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

from bsmamba import config, schema
from bsmamba.presets import (
    CLAIM_TOLERANCE,
    CLAIMS,
    DECODER_CLAIM,
    EARLIER,
    EARLIER_CLAIMS,
    PRESETS,
)


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
                claim_holds=_near(c["total"] / 1e6, CLAIMS[name]["params_m"]),
            )
    return {
        "overrides": list(overrides),
        "by_preset": by_preset,
        "claims": _claims(by_preset, models, overrides),
    }


TOLERANCE = CLAIM_TOLERANCE


def _near(measured: float, claim: float) -> bool:
    return abs(measured / claim - 1) <= TOLERANCE


def _claims(by_preset: dict, models: dict, overrides: list[str]) -> list[dict[str, Any]]:
    """The plan's statements about sizes, each with whether our counts bear it out."""
    out = []
    p = {k: v["params"] for k, v in by_preset.items()}
    for name, v in by_preset.items():
        if name not in CLAIMS:
            continue
        out.append(
            {
                "claim": f"{name} has ~{CLAIMS[name]['params_m']}M parameters (within 5%)",
                "holds": v["claim_holds"],
                "detail": f"measured {v['params'] / 1e6:.3f}M ({v['params_diff_rel']:+.1%})",
            }
        )
    if set(CLAIMS) <= set(p):  # all of the plan's systems
        fewest = min(CLAIMS, key=p.get)
        out.append(
            {
                "claim": "abl3 has the fewest parameters (MOST EFFICIENT)",
                "holds": fewest == "abl3",
                "detail": f"fewest: {fewest} ({p[fewest] / 1e6:.3f}M)",
            }
        )
    if {"abl3", "bsrnn"} <= set(p):
        out.append(
            {
                "claim": "abl3 has fewer parameters than bsrnn",
                "holds": p["abl3"] < p["bsrnn"],
                "detail": f"abl3 {p['abl3'] / 1e6:.3f}M vs bsrnn {p['bsrnn'] / 1e6:.3f}M",
            }
        )
    if {"abl2", "abl3"} <= set(p):
        uni, ada = _n(models["abl2"].decoder), _n(models["abl3"].decoder)
        saving = 1 - ada / uni
        out.append(
            {
                "claim": f"the adaptive decoder is ~{DECODER_CLAIM['saving']:.0%} smaller than "
                "the uniform one (within 5 points)",
                "holds": abs(saving - DECODER_CLAIM["saving"]) <= TOLERANCE,
                "detail": f"measured {saving:.1%} smaller",
            }
        )
        out.append(
            {
                "claim": f"the decoders have {DECODER_CLAIM['adaptive_m']}M (adaptive) and "
                f"{DECODER_CLAIM['uniform_m']}M (uniform) parameters",
                "holds": _near(ada / 1e6, DECODER_CLAIM["adaptive_m"])
                and _near(uni / 1e6, DECODER_CLAIM["uniform_m"]),
                "detail": f"measured {ada / 1e6:.3f}M and {uni / 1e6:.3f}M",
            }
        )
    if not overrides:
        for name, claim_m in EARLIER_CLAIMS.items():
            if name in p:
                n = _n(_build(name, [f"{k}={v}" for k, v in EARLIER.items()]))
                out.append(
                    {
                        "claim": f"{name} had {claim_m}M parameters with the earlier settings "
                        f"({', '.join(f'{k}={v}' for k, v in EARLIER.items())})",
                        "holds": _near(n / 1e6, claim_m),
                        "detail": f"measured {n / 1e6:.3f}M",
                    }
                )
    return out


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
