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

# No-reference DNSMOS P.835 scores (1-5), the study's optional columns (study.dnsmos).
DNSMOS_KEYS = ("sig", "bak", "ovrl")
DNSMOS_LABELS = {"sig": "SIG", "bak": "BAK", "ovrl": "OVRL"}

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
                # Dict keys that are data (file names, preset names) are allowed under "by_*" maps
                # and in a study's "runs" (system, then seed).
                parts = where.split(".")
                runs = parts[0] == "runs" and len(parts) <= 2
                if not (parts[-1].startswith(("by_", "per_")) or runs):
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


# ----------------------------------------------------------------------------- study records
# A study's stage records (<system>/params.json, .../stages/train.json, ...): written by
# bsmamba.study.records.write_stage through stage_record, read back by the report through the
# same names. Every record has these; a failed or skipped stage has "error" (and a traceback).
RECORD_VERSION = 1
STAGES = ("params", "memory", "train", "enhance", "evaluate")
OPTIONAL_STAGES = ("dnsmos",)  # run only when the study asks (study.dnsmos)
DONE, FAILED, SKIPPED = "done", "failed", "skipped"
_RECORD_COMMON = ("record_version", "stage", "status", "stage_time_s", "error", "traceback")
STAGE_FIELDS = {
    # counts: bsmamba.params.count (total, encoder, layers, passes, decoder); the model kwargs;
    # the plan's earlier settings' total where the plan claims one.
    "params": ("params", "model", "earlier_params", "earlier_overrides"),
    # plan: bsmamba.memory.plan.plan's result at the plan's shape; the ladder's outcome when
    # it does not fit.
    "memory": (
        "batch_size",
        "segment_s",
        "budget",
        "plan",
        "ladder_events",
        "ladder_config",
        "ladder_error",
    ),
    # results: the run's results.json; worker: study.launchers.worker_info (host, GPUs, job).
    "train": ("results", "wall_s", "worker"),
    "enhance": ("summary", "wall_s", "audio_s", "rtf", "threads", "worker"),
    # summary: bsmamba evaluate's summary; per_utterance_csv: relative to the record's run dir.
    "evaluate": ("summary", "per_utterance_csv"),
    # summary: bsmamba.dnsmos.score_dirs's summary (kind "dnsmos"); per_utterance_csv: its
    # dnsmos.csv, relative to the record's run dir (or noisy/).
    "dnsmos": ("summary", "per_utterance_csv"),
}


def stage_record(stage: str, status: str, **fields: Any) -> dict[str, Any]:
    """A stage record of ``stage`` with ``status``; a field not in ``STAGE_FIELDS`` is an
    error (the report reads these names and no others)."""
    if stage not in STAGE_FIELDS:
        valid = ", ".join(STAGES + OPTIONAL_STAGES)
        raise ValueError(f"schema: unknown stage {stage!r}; valid: {valid}")
    if status not in (DONE, FAILED, SKIPPED):
        raise ValueError(f"schema: unknown stage status {status!r}")
    unknown = set(fields) - set(STAGE_FIELDS[stage]) - set(_RECORD_COMMON)
    if unknown:
        raise ValueError(f"schema: {stage} record has unknown fields {sorted(unknown)}")
    return {"record_version": RECORD_VERSION, "stage": stage, "status": status, **clean(fields)}
