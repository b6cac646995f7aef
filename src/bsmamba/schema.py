"""One schema for every ``--json`` output and results file.

Conventions: snake_case keys, units in names (``peak_bytes``, ``step_time_s``, ``params``,
``macs_per_s``), metric keys in ``METRIC_KEYS``, and a ``schema_version`` plus ``kind`` on every
top-level document. Build documents with :func:`document`, never by hand, so they all agree.
"""

from __future__ import annotations

import math
import re
from typing import Any

SCHEMA_VERSION = 1

# Column order papers use for VB-DMD tables.
METRIC_KEYS = ("pesq", "csig", "cbak", "covl", "ssnr", "stoi", "si_sdr")
# Their column headings in tables.
METRIC_LABELS = dict(
    zip(METRIC_KEYS, ("PESQ", "CSIG", "CBAK", "COVL", "SSNR", "STOI", "SI-SDR"), strict=True)
)

KINDS = (
    "params",  # bsmamba params
    "presets",  # bsmamba presets
    "presets_diff",  # bsmamba presets --diff
    "doctor",  # bsmamba doctor
    "plan",  # bsmamba plan
    "evaluation",  # bsmamba evaluate summary
    "dnsmos",  # bsmamba evaluate without --clean (no-reference scores)
    "train_results",  # runs/<run>/results.json
    "study_results",  # studies/<recipe>/results.json
    "benchmark",  # benchmarks/*.py
    "manifest",  # prepare-voicebank / demo manifest
    "prepare",  # bsmamba prepare-voicebank --json
)

_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_keys(obj: Any, where: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str) or not _SNAKE.match(k):
                # Dict keys that are data (file names, preset names) are allowed under "by_*" maps.
                if not where.rsplit(".", 1)[-1].startswith(("by_", "per_")):
                    raise ValueError(f"schema: key {k!r} at {where or '<root>'} is not snake_case")
            _check_keys(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_keys(v, f"{where}[{i}]")


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/Inf -> None, tuples -> lists, numpy/torch scalars -> Python."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def document(kind: str, **fields: Any) -> dict[str, Any]:
    """A top-level JSON document of ``kind`` with ``schema_version``; keys are validated."""
    if kind not in KINDS:
        raise ValueError(f"schema: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    doc = {"schema_version": SCHEMA_VERSION, "kind": kind, **clean(fields)}
    _check_keys(doc)
    return doc


def metric_row(values: dict[str, Any]) -> dict[str, Any]:
    """Metric values in paper order; missing metrics are ``None``, unknown keys are an error."""
    unknown = set(values) - set(METRIC_KEYS)
    if unknown:
        raise ValueError(f"schema: unknown metric keys {sorted(unknown)}; valid: {METRIC_KEYS}")
    return {k: clean(values.get(k)) for k in METRIC_KEYS}
