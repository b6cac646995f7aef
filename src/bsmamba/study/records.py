"""The study's records on disk: stage records (JSON) and per-utterance scores (CSV).

Every record is written by :func:`write_stage` and read by :func:`read` / :func:`read_utterances`
through the one definition of its fields in :mod:`bsmamba.schema` (``STAGE_FIELDS``). A record
that exists but does not parse, or a per-utterance CSV whose rows do not match its stage record
(count, fields, numbers, a cut-off last line), is :class:`DamagedRecord`: named by file with how
to recompute it, and never used.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from bsmamba import files, schema
from bsmamba.schema import DONE, FAILED, RECORD_VERSION, SKIPPED, STAGES  # noqa: F401

# Statuses of a run this command did not finish: queued on SLURM, or another process has it.
SUBMITTED, RUNNING_ELSEWHERE = "submitted", "running_elsewhere"
RUN_STAGES = STAGES[2:]  # train, enhance, evaluate: the stages of one system x seed
FIX = "delete it and rerun the study with the same arguments to recompute it"
UTTERANCE_CSV = "per_utterance.csv"  # what `bsmamba evaluate` writes into its out folder
DNSMOS_CSV = "dnsmos.csv"  # what its no-reference scoring (bsmamba.dnsmos) writes beside it
_NAME_COLUMN = "file"  # ... and their utterance column


class DamagedRecord(ValueError):
    """A record that exists but cannot be trusted; the message names the file."""


def write_stage(path: Path, stage: str, status: str, fields: dict[str, Any]) -> dict:
    """Write the stage record of ``stage`` atomically; its fields are checked by the schema."""
    rec = schema.stage_record(stage, status, **fields)
    files.write_json(path, rec)
    return rec


def read(path: Path, damaged: list[str] | None = None, fix: str = FIX) -> dict:
    """A JSON record, ``{}`` when missing; a damaged one is noted in ``damaged`` (when given)
    and read as ``{"status": "damaged"}``, so that nothing of it is used."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        msg = f"{path}: damaged record ({e})"
        if damaged is None:
            raise DamagedRecord(msg) from None
        damaged.append(f"{msg}; {fix}")
        return {"status": "damaged"}
    return doc if isinstance(doc, dict) else {}


def status(path: Path) -> str:
    """The ``status`` of the record at ``path`` ("missing" when there is none)."""
    return read(path, []).get("status", "missing")


def run_stage_path(run_dir: Path, stage: str) -> Path:
    """Where the record of ``stage`` (one of RUN_STAGES) of a system x seed run lies."""
    return Path(run_dir) / "stages" / f"{stage}.json"


def run_finished(run_dir: Path, dnsmos: bool) -> bool:
    """Whether a system x seed run has nothing left to do: its evaluate record (and, when the
    study asks for DNSMOS, its dnsmos record) is done with scores the report can read."""
    need = ("evaluate", "dnsmos") if dnsmos else ("evaluate",)
    for stage in need:
        rec = read(run_stage_path(run_dir, stage), [])
        if rec.get("status") != DONE or scores_damage(rec, run_dir):
            return False
    return True


def fits(plan: dict) -> bool:
    """Whether a memory plan (``memory.plan.plan``'s result) fits its budget."""
    return plan.get("verdict") == "fits"


# ----------------------------------------------------------------------------- utterances
def utterance_csv(out_dir: Path, name: str = UTTERANCE_CSV) -> str:
    """The per-utterance CSV ``name`` of an evaluate ``out_dir``, relative to the folder above
    it (the ``per_utterance_csv`` of an evaluate or dnsmos record)."""
    out_dir = Path(out_dir)
    return str((out_dir / name).relative_to(out_dir.parent))


def _score_columns(record: dict | None) -> tuple[tuple[str, ...], str]:
    """The score columns of a record's per-utterance CSV and the summary field that counts its
    rows: a dnsmos record's (``bsmamba.dnsmos``), else an evaluate record's."""
    if (record or {}).get("stage") == "dnsmos":
        return schema.DNSMOS_KEYS, "files"
    return schema.METRIC_KEYS, "pairs"


def read_utterances(csv_path: Path, record: dict | None = None) -> dict[str, dict[str, float]]:
    """Per-utterance scores ``{file name: {metric: value}}`` from an evaluation CSV (the DNSMOS
    CSV when ``record`` is a dnsmos stage record: its SIG, BAK, OVRL columns).

    Empty cells (a metric that failed on that file) become NaN. Raises :class:`DamagedRecord`
    naming the file and line for a row with missing or extra fields, a cell that is not a
    number, a repeated name or a cut-off last line, and, when the stage ``record`` (its
    ``summary``) is given, for a row count or per-metric count that differs from it.
    """
    keys, count_field = _score_columns(record)
    text = Path(csv_path).read_text()
    if text and not text.endswith("\n"):  # every row the writer writes ends with one
        raise DamagedRecord(f"{csv_path}: the last line is cut off (truncated file)")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return {}
    if _NAME_COLUMN not in header:
        raise DamagedRecord(f"{csv_path}: no {_NAME_COLUMN!r} column (not written by evaluate)")
    out = {}
    for cells in reader:
        line = reader.line_num
        if len(cells) != len(header):
            raise DamagedRecord(
                f"{csv_path}: line {line} has {len(cells)} fields, the header {len(header)}"
            )
        r = dict(zip(header, cells, strict=True))
        name = Path(r[_NAME_COLUMN]).name
        if name in out:
            raise DamagedRecord(f"{csv_path}: line {line} repeats {name}")
        out[name] = {k: _cell_value(r.get(k), csv_path, line, k) for k in keys}
    summary = (record or {}).get("summary") or {}
    n = summary.get(count_field)
    if isinstance(n, int) and n != len(out):
        raise DamagedRecord(f"{csv_path}: {len(out)} rows, its stage record says {n} {count_field}")
    stats = (summary.get("metrics") or {}).get("enhanced") or {}
    for k, st in stats.items():
        have = sum(math.isfinite(u[k]) for u in out.values()) if k in keys else None
        if have is not None and isinstance(st, dict) and st.get("count") not in (None, have):
            raise DamagedRecord(
                f"{csv_path}: {have} {k} values, its stage record says {st['count']}"
            )
    return out


def _cell_value(v: Any, path: Path, line: int, key: str) -> float:
    """A metric cell: a number, or empty / NaN for a failed measurement."""
    if v is None or v.strip() == "":
        return math.nan
    try:
        f = float(v)
    except ValueError:
        raise DamagedRecord(f"{path}: line {line}: {key}={v!r} is not a number") from None
    return f if math.isfinite(f) else math.nan


def utterances_of(
    eval_record: dict, base: Path, damaged: list[str], fix: str
) -> dict[str, dict[str, float]] | None:
    """The per-utterance scores of a finished evaluate record; None if not finished or damaged
    (then the reason and ``fix`` are noted in ``damaged``)."""
    rel = eval_record.get("per_utterance_csv")
    if eval_record.get("status") != DONE or not rel:
        return None
    try:
        return read_utterances(Path(base) / rel, eval_record)
    except (DamagedRecord, FileNotFoundError) as e:
        damaged.append(f"{e}; {fix}")
        return None


def scores_damage(eval_record: dict, base: Path) -> str | None:
    """Why the per-utterance scores of a ``done`` evaluate record cannot be used (read as the
    report reads them), or None when they can."""
    rel = eval_record.get("per_utterance_csv")
    if not rel:
        return "its record names no per-utterance CSV"
    try:
        read_utterances(Path(base) / rel, eval_record)
    except (DamagedRecord, FileNotFoundError) as e:
        return str(e)
    return None
