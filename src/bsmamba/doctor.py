"""`bsmamba doctor`: what this machine will run on, in one screen (or one JSON document).

Versions of the stack, the device a run would pick, thread counts, which selective-scan backend
``auto`` picks there and why, and whether mamba-ssm imports (and the error if not).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from bsmamba import env, schema


def diagnose() -> dict[str, Any]:
    """The doctor's findings as a plain dict (the ``--json`` document's fields)."""
    from bsmamba.scan import available_backends, choose_backend
    from bsmamba.scan import cuda as scan_cuda

    device = env.resolve_device("auto")  # what train.device=auto picks
    backend, why = choose_backend(device)
    return {
        "environment": env.environment(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "scan_backend": backend,
        "scan_backend_reason": why,
        "scan_backends_available": available_backends(),
        "mamba_ssm_import_error": scan_cuda.IMPORT_ERROR,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON document")


def main(args: argparse.Namespace) -> int:
    d = diagnose()
    if args.json:
        print(json.dumps(schema.document("doctor", **d), indent=2))
        return 0
    e = d["environment"]
    rows = [
        ("bsmamba", f"{e['bsmamba']} (git {e['git_revision'] or 'n/a'})"),
        ("python", e["python"]),
        ("torch", e["torch"]),
        ("lightning", e["lightning"] or "not installed"),
        ("mamba-ssm", e["mamba_ssm"] or "not installed"),
        ("platform", e["platform"]),
        ("device", d["device"] + (f" ({e['cuda_device']})" if e["cuda_device"] else "")),
        ("threads", f"{d['torch_threads']} torch, {e['cpu_count']} CPUs"),
        ("scan backend", f"{d['scan_backend']}: {d['scan_backend_reason']}"),
        ("scan backends", ", ".join(d["scan_backends_available"])),
    ]
    if d["mamba_ssm_import_error"] and e["mamba_ssm"]:
        rows.append(("mamba-ssm error", d["mamba_ssm_import_error"]))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0
