"""`bsmamba presets`: the resolved constructor arguments of every preset."""

from __future__ import annotations

import argparse
import json

from bsmamba import config, schema
from bsmamba.model import resolve_kwargs
from bsmamba.presets import PRESETS


def diff_from_bsrnn(name: str) -> dict[str, tuple]:
    """{argument: (bsrnn's value, preset's value)} for every resolved argument that differs.

    Resolved means with ``config.ModelConfig`` defaults filled in, so arguments the LSTM ignores
    (d_state, ...) count only when a preset sets them differently from those defaults.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    base, mine = resolve_kwargs(PRESETS["bsrnn"]), resolve_kwargs(PRESETS[name])
    return {k: (base[k], mine[k]) for k in base if base[k] != mine[k] and k != "preset"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="presets to show (default: all)")
    parser.add_argument(
        "--diff", action="store_true", help="only the arguments that differ from bsrnn's"
    )
    parser.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    names = args.names or list(PRESETS)
    if args.diff:
        diffs = {n: diff_from_bsrnn(n) for n in names}
        if args.json:
            by = {n: {k: {"bsrnn": a, n: b} for k, (a, b) in d.items()} for n, d in diffs.items()}
            print(json.dumps(schema.document("presets_diff", by_preset=by), indent=2))
            return 0
        for name, d in diffs.items():
            text = ", ".join(f"{k}={b} (bsrnn: {a})" for k, (a, b) in d.items())
            print(f"{name}: {text or 'the baseline itself'}")
        return 0
    resolved = {n: config.model_kwargs(config.load(overrides=[f"model.preset={n}"])) for n in names}
    if args.json:
        print(json.dumps(schema.document("presets", by_preset=resolved), indent=2))
        return 0
    for name, kw in resolved.items():
        stft = kw.pop("stft")
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in kw.items() if k != "preset"))
        print("  stft: " + ", ".join(f"{k}={v}" for k, v in stft.items()))
    return 0
