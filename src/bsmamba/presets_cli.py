"""`bsmamba presets`: the resolved constructor arguments of every preset."""

from __future__ import annotations

import argparse
import json

from bsmamba import config, schema
from bsmamba.presets import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="presets to show (default: all)")
    parser.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    names = args.names or list(PRESETS)
    resolved = {n: config.model_kwargs(config.load(overrides=[f"model.preset={n}"])) for n in names}
    if args.json:
        print(json.dumps(schema.document("presets", by_preset=resolved), indent=2))
        return 0
    for name, kw in resolved.items():
        stft = kw.pop("stft")
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in kw.items() if k != "preset"))
        print("  stft: " + ", ".join(f"{k}={v}" for k, v in stft.items()))
    return 0
