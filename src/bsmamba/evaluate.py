"""Score folders of enhanced audio: ``bsmamba evaluate --clean DIR --enhanced DIR [--noisy DIR]``.

Files are paired by their path below each folder (``a.wav``, ``spk1/b.wav``: subfolders, which
``enhance`` mirrors, are searched too). Each pair is scored in a worker process (PESQ, CSIG, CBAK,
COVL, SSNR, STOI, SI-SDR; see :mod:`bsmamba.metrics`); a bad pair (unreadable file, wrong rate,
length mismatch, missing twin, a silent file PESQ finds no speech in) is reported by name and
counted, and the run goes on. A bad or missing noisy twin costs only the noisy scores. The
output folder is checked before any scoring; if the scores cannot be written after all, the table
is printed and they are written to a temp folder instead. Exit status: 0 when every pair scored
fully, 1 when any did not (0 with ``--allow-partial`` if some did), 2 for unusable arguments.
Outputs in ``--out`` (default ``<enhanced>/evaluation``):

    per_utterance.csv   one row per file: status, SNR if known, every metric (noisy_* too)
    summary.json        schema kind "evaluation": mean/std/count/failures per metric,
                        per-SNR breakdown when the dataset manifest knows the SNRs

and the table as papers print it. With ``--noisy`` the unprocessed input is scored too (the
baseline every enhancement number should be read against).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bsmamba import files, metrics, schema, units
from bsmamba.data import audio, manifest_snrs
from bsmamba.schema import METRIC_KEYS
from bsmamba.scoring import NotWritten, rescue, rows_csv, run_pool, wav_files
from bsmamba.study.stats import summary  # mean/std/count/failures, as the study reads them


def _score_pair(job: dict) -> dict:
    """Score one name (runs in a worker). Never raises: problems become ``error`` strings."""
    row: dict[str, Any] = {"file": job["name"], "status": "ok", "error": "", "note": ""}
    fs, rs = job["fs"], job["resample"]
    try:
        if job["clean"] is None:
            raise FileNotFoundError(f"{job['enhanced']}: no clean twin in the --clean folder")
        if job["enhanced"] is None:
            raise FileNotFoundError(f"{job['clean']}: no enhanced file of this name")
        clean = audio.read(job["clean"], fs, resample=rs)
        enhanced = audio.read(job["enhanced"], fs, resample=rs)
        if len(clean) != len(enhanced):
            raise ValueError(
                f"{job['enhanced']}: {len(enhanced)} samples, its clean twin {len(clean)}"
            )
    except (OSError, ValueError) as e:
        row.update(status="error", error=str(e))
        return row
    problems, notes = [], [_loud(job["clean"], clean), _loud(job["enhanced"], enhanced)]
    errors: dict[str, str] = {}
    row.update(metrics.score(clean, enhanced, fs, job["convention"], errors=errors))
    if errors:
        problems.append(f"{job['enhanced']}: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    if job["with_noisy"]:  # the noisy input is the baseline: its problems cost only its scores
        row.update({f"noisy_{k}": math.nan for k in METRIC_KEYS})
        try:
            if job["noisy"] is None:
                raise FileNotFoundError(f"{job['enhanced']}: no noisy twin in the --noisy folder")
            noisy = audio.read(job["noisy"], fs, resample=rs)
            if len(noisy) != len(clean):
                raise ValueError(f"{job['noisy']}: {len(noisy)} samples, clean {len(clean)}")
        except (OSError, ValueError) as e:
            problems.append(str(e))
        else:
            notes.append(_loud(job["noisy"], noisy))
            noisy_errors: dict[str, str] = {}
            base = metrics.score(clean, noisy, fs, job["convention"], errors=noisy_errors)
            row.update({f"noisy_{k}": v for k, v in base.items()})
            if noisy_errors:
                problems.append(
                    f"{job['noisy']}: " + "; ".join(f"{k}: {v}" for k, v in noisy_errors.items())
                )
    if problems:
        row.update(status="partial", error=" | ".join(problems))
    row["note"] = " | ".join(n for n in notes if n)
    return row


def _loud(path: str, wav: np.ndarray) -> str:
    """A note for float samples beyond +-1 (scored as they are; a 16-bit file cannot hold them)."""
    peak = float(np.max(np.abs(wav)))
    return f"{path}: samples beyond ±1 (peak {peak:.3g}), scored as they are" if peak > 1 else ""


def _snrs(*folders: Path | None) -> dict[str, float]:
    """File name -> SNR (dB) from the first of ``folders`` whose manifest knows their SNRs."""
    for folder in folders:
        out = manifest_snrs(folder) if folder is not None else {}
        if out:
            return out
    return {}


def _summarise(rows: list[dict], prefix: str = "") -> dict[str, dict]:
    return {k: summary([r.get(prefix + k, math.nan) for r in rows]) for k in METRIC_KEYS}


def evaluate_dirs(
    clean_dir: str | Path,
    enhanced_dir: str | Path,
    noisy_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    workers: int = 2,
    sample_rate: int = 16000,
    resample: bool = False,
    convention: str = "matlab",
    progress: bool = False,
    threads: int = 1,
) -> dict:
    """Score every enhanced file against its clean twin; returns the summary document.

    Pairs by file name over the union of both folders (a name in only one is a counted
    failure). ``workers`` spawned processes with ``threads`` BLAS threads each (0: in this
    process). Writes ``per_utterance.csv`` and
    ``summary.json`` into ``out_dir`` when given. Raises only for unusable folders/arguments.
    """
    if convention not in metrics.CONVENTIONS:
        raise ValueError(
            f"unknown convention {convention!r}; valid: {', '.join(metrics.CONVENTIONS)}"
        )
    clean_dir, enhanced_dir = Path(clean_dir), Path(enhanced_dir)
    noisy_dir = Path(noisy_dir) if noisy_dir else None
    out_dir = Path(out_dir) if out_dir is not None else None
    clean, noisy = wav_files(clean_dir, out_dir), wav_files(noisy_dir, out_dir)
    enhanced = wav_files(enhanced_dir, out_dir)
    if not enhanced:
        raise FileNotFoundError(f"{enhanced_dir}: no .wav files to evaluate")
    if out_dir is not None:  # before the scoring, not after it: the scores would be lost
        files.check_writable(out_dir)
    names = sorted(set(clean) | set(enhanced))
    jobs = [
        {
            "name": n,
            "clean": str(clean[n]) if n in clean else None,
            "enhanced": str(enhanced[n]) if n in enhanced else None,
            "noisy": str(noisy[n]) if n in noisy else None,
            "with_noisy": noisy_dir is not None,
            "fs": sample_rate,
            "resample": resample,
            "convention": convention,
        }
        for n in names
    ]
    t0 = time.perf_counter()
    rows = run_pool(_score_pair, jobs, workers, threads, "scoring", progress)
    elapsed = time.perf_counter() - t0
    snr = _snrs(noisy_dir, clean_dir)
    for r in rows:
        r["snr_db"] = snr.get(r["file"])
    ok = [r for r in rows if r["status"] != "error"]
    by_snr = {}
    for level in sorted({r["snr_db"] for r in ok if r["snr_db"] is not None}):
        sub = [r for r in ok if r["snr_db"] == level]
        by_snr[f"{level:g}"] = {"count": len(sub), "enhanced": _summarise(sub)}
        if noisy_dir:
            by_snr[f"{level:g}"]["noisy"] = _summarise(sub, "noisy_")
    stats = {"enhanced": _summarise(ok)}
    if noisy_dir:
        stats["noisy"] = _summarise(ok, "noisy_")
    problems = [{"file": r["file"], "status": r["status"], "error": r["error"]} for r in rows]
    problems = [p for p in problems if p["error"]]
    notes = [{"file": r["file"], "note": r["note"]} for r in rows if r.get("note")]
    summary = schema.document(
        "evaluation",
        clean_dir=str(clean_dir),
        enhanced_dir=str(enhanced_dir),
        noisy_dir=str(noisy_dir) if noisy_dir else None,
        sample_rate=sample_rate,
        pesq_kind="wide-band MOS-LQO" if sample_rate == 16000 else "narrow-band MOS-LQO",
        composite_convention=convention,
        std_over="utterances",
        pairs=len(rows),
        scored=len(ok),
        failed=len(rows) - len(ok),
        partial=sum(r["status"] == "partial" for r in rows),
        elapsed_s=round(elapsed, 3),
        workers=workers,
        metrics=stats,
        by_snr=by_snr,
        problems=problems,
        notes=notes,
    )
    if out_dir is not None:
        write_outputs(out_dir, rows, summary)
    return summary


def write_outputs(out_dir: str | Path, rows: list[dict], summary: dict) -> None:
    """per_utterance.csv and summary.json into ``out_dir``; :class:`NotWritten` if that fails."""
    out_dir = Path(out_dir)
    try:
        files.write_text(
            out_dir / "per_utterance.csv", _csv(rows, summary["noisy_dir"] is not None)
        )
        files.write_json(out_dir / "summary.json", summary)
    except OSError as e:
        raise NotWritten(e, summary, rows) from None


def _csv(rows: list[dict], with_noisy: bool) -> str:
    cols = ["file", "status", "snr_db", *METRIC_KEYS]
    cols += [f"noisy_{k}" for k in METRIC_KEYS] if with_noisy else []
    return rows_csv(rows, cols + ["error", "note"])


def table(summary: dict) -> str:
    """The summary as papers print it: one row per system, mean +/- std per metric."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{summary['scored']} of {summary['pairs']} pairs scored, "
              f"{summary['sample_rate'] // 1000} kHz (std across utterances)")  # fmt: skip
    t.add_column("input")
    for k in METRIC_KEYS:
        t.add_column(schema.METRIC_LABELS[k], justify="right")
    for name, stats in summary["metrics"].items():
        t.add_row(name, *(_cell(stats[k], k) for k in METRIC_KEYS))
    for level, part in summary.get("by_snr", {}).items():
        for name, stats in part.items():
            if name != "count":
                t.add_row(f"{name} @ {level} dB", *(_cell(stats[k], k) for k in METRIC_KEYS))
    console = Console(file=io.StringIO(), width=200, force_terminal=False)  # no wrapped cells
    console.print(t)
    lines = [console.file.getvalue().rstrip()]
    lines.append(
        f"PESQ: {summary['pesq_kind']}; CSIG/CBAK/COVL: composite.m "
        f"({summary['composite_convention']} convention); SSNR, SI-SDR in dB"
    )
    for p in summary["problems"][:20]:
        lines.append(f"  {p['status']}: {p['error']}")
    if len(summary["problems"]) > 20:
        lines.append(f"  ... {len(summary['problems']) - 20} more in per_utterance.csv")
    for n in summary.get("notes", [])[:5]:
        lines.append(f"  note: {n['note']}")
    if len(summary.get("notes", [])) > 5:
        lines.append(f"  ... {len(summary['notes']) - 5} more notes in per_utterance.csv")
    return "\n".join(lines)


def _cell(s: dict, key: str) -> str:
    return units.fmt_metric(s["mean"], s["std"], key, s["failures"])


# ----------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clean", help="folder of clean reference wavs (without it: "
                        "no-reference DNSMOS scores, bsmamba.dnsmos)")  # fmt: skip
    parser.add_argument("--enhanced", required=True, help="folder of enhanced wavs (same names)")
    parser.add_argument("--noisy", help="folder of the unprocessed inputs: also score them")
    parser.add_argument("--out", help="where to write per_utterance.csv and summary.json "
                        "(default <enhanced>/evaluation)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes (default 2; 0 = in this process)")  # fmt: skip
    parser.add_argument("--sample-rate", type=int, default=16000, choices=[8000, 16000])
    parser.add_argument("--resample", action="store_true",
                        help="resample other rates (soxr HQ) instead of failing")  # fmt: skip
    parser.add_argument("--convention", default="matlab", choices=list(metrics.CONVENTIONS),
                        help="composite: matlab (exact, default) or cmgan (/32768)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="BLAS threads per worker (0=1); "
                        "scoring runs on the CPU")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the summary JSON")
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit 0 when some pairs failed, others scored (else 1)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    for flag in ("workers", "threads"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag}={getattr(args, flag)}: out of range, valid >= 0")
    if args.clean is None:  # no clean twins: no-reference scores
        from bsmamba import dnsmos

        return dnsmos.main(args)
    out = Path(args.out) if args.out else Path(args.enhanced) / "evaluation"
    lost = None
    try:
        summary = evaluate_dirs(
            args.clean,
            args.enhanced,
            args.noisy,
            out,
            workers=args.workers,
            sample_rate=args.sample_rate,
            resample=args.resample,
            convention=args.convention,
            progress=not args.json and sys.stderr.isatty(),
            threads=max(1, args.threads),
        )
    except NotWritten as e:  # computed, then the disk filled up or went away: keep the scores
        summary, lost = e.summary, e
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    if lost is not None:
        print(rescue(lost, write_outputs, "bsmamba-evaluate-"), file=sys.stderr)
        return 2
    if not args.json:
        print(f"wrote {out / 'per_utterance.csv'} and {out / 'summary.json'} "
              f"({summary['elapsed_s']:.1f} s)")  # fmt: skip
    incomplete = summary["failed"] + summary["partial"]
    if incomplete:
        print(f"bsmamba evaluate: {incomplete} of {summary['pairs']} pair(s) not fully scored "
              "(named above)", file=sys.stderr)  # fmt: skip
    return 1 if incomplete and not (args.allow_partial and summary["scored"]) else 0
