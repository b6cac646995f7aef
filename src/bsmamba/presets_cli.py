"""`bsmamba presets`: the resolved constructor arguments of every preset."""

from __future__ import annotations

import argparse
import json

from bsmamba import config, schema
from bsmamba.presets import PRESETS, diff_from_bsrnn


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
