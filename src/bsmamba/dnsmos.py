"""No-reference scores for recordings that have no clean twin: DNSMOS.

    bsmamba evaluate --enhanced DIR [--noisy DIR]          (no --clean)

DNSMOS P.835 (Reddy et al., ICASSP 2022) predicts, from the audio alone, the three ratings of an
ITU-T P.835 listening test: SIG (speech signal), BAK (background noise), OVRL (overall), each on
a 1-5 scale; the P.808 model beside it predicts one overall MOS (``p808``). The models are the
ONNX files that the ``speechmos`` wheel ships (no download), run by its own code: a file is
scored in 9.01 s windows hopped by 1 s and the window scores are averaged; a file shorter than
9.01 s is tiled (repeated) to that length first. Audio must be 16 kHz mono in [-1, 1].

The files are those the intrusive metrics would score (every .wav below the folder, as
:func:`bsmamba.scoring.wav_files` finds them). Each is scored in a worker process; a bad file
(unreadable, another rate without ``--resample``, samples beyond [-1, 1], digital silence) is
reported by name and counted, and the run goes on. As ``evaluate``: the output folder is checked
before any scoring, scores that cannot be written after all go to a temp folder, and the exit
status is 0 when every file scored, 1 when any did not (0 with ``--allow-partial`` if some did),
2 for unusable arguments. Outputs in ``--out`` (default ``<enhanced>/evaluation``), beside
those of the intrusive metrics and not over them:

    dnsmos.csv     one row per file: input (enhanced | noisy), status, seconds, sig, bak, ovrl,
                   p808, error
    dnsmos.json    schema kind "dnsmos": mean/std/count/failures per score and input

Needs the ``nr`` extra (speechmos, onnxruntime, librosa); importing bsmamba never does.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bsmamba import files, schema
from bsmamba.data import audio
from bsmamba.scoring import NotWritten, rescue, rows_csv, run_pool, wav_files
from bsmamba.study.stats import summary as stats_of  # mean/std/count/failures, as evaluate

SAMPLE_RATE = 16000
KEYS = ("sig", "bak", "ovrl", "p808")
LABELS = {"sig": "SIG", "bak": "BAK", "ovrl": "OVRL", "p808": "P.808"}
_SPEECHMOS_KEYS = {"sig": "sig_mos", "bak": "bak_mos", "ovrl": "ovrl_mos", "p808": "p808_mos"}
_EXTRA = "pip install 'bsmamba[nr]' (from a checkout: pip install -e \".[nr]\")"


def require(what: str, otherwise: str) -> tuple:
    """(onnxruntime, speechmos.dnsmos), or a one-line ``ValueError``: ``what`` needs the missing
    package, the extra that brings it, then ``otherwise`` (the way around it)."""
    try:
        import onnxruntime
        from speechmos import dnsmos
    except ImportError as e:
        raise ValueError(f"{what} needs the '{e.name}' package: {_EXTRA}; {otherwise}") from None
    return onnxruntime, dnsmos


def _modules():
    return require("no-reference scoring (evaluate without --clean)",
                   "or give --clean DIR for the intrusive metrics")  # fmt: skip


_scorer = None  # one per worker process: the two ONNX sessions, made on the first file


def _get_scorer(threads: int):
    """speechmos's DNSMOS scorer with sessions of ``threads`` intra-op threads each (its own
    constructor gives every session all cores, which workers running side by side fight over).
    """
    global _scorer
    if _scorer is None:
        ort, dnsmos = _modules()
        folder = Path(dnsmos.__file__).parent / "dnsmos_models"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = max(1, threads), 1
        scorer = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)  # its __init__, with our session options
        scorer.primary_model_path = str(folder / "sig_bak_ovr.onnx")
        scorer.onnx_sess = ort.InferenceSession(scorer.primary_model_path, opts)
        scorer.p808_onnx_sess = ort.InferenceSession(str(folder / "model_v8.onnx"), opts)
        _scorer = scorer
    return _scorer


def _score_file(job: dict) -> dict:
    """Score one file (runs in a worker). Never raises: problems become ``error`` strings."""
    row: dict[str, Any] = {"file": job["name"], "input": job["input"], "status": "ok", "error": ""}
    try:
        wav = audio.read(job["path"], SAMPLE_RATE, resample=job["resample"])
        peak = float(np.abs(wav).max())
        if peak > 1.0:
            raise ValueError(
                f"{job['path']}: samples beyond [-1, 1] (peak {peak:.3g}); DNSMOS scores audio "
                "in [-1, 1]: scale the file down first"
            )
        if peak == 0.0:
            raise ValueError(f"{job['path']}: digital silence, nothing for DNSMOS to score")
        out = _get_scorer(job["threads"])(wav, SAMPLE_RATE, False)
    except (OSError, ValueError) as e:
        row.update(status="error", error=str(e))
        return row
    row["seconds"] = len(wav) / SAMPLE_RATE
    row.update({k: float(out[_SPEECHMOS_KEYS[k]]) for k in KEYS})
    return row


def _wavs(folder: Path, out_dir: Path | None) -> dict[str, Path]:
    """Relative path -> file of every .wav below ``folder``, found as ``evaluate`` finds them."""
    found = wav_files(folder, out_dir)
    if not found:
        raise FileNotFoundError(f"{folder}: no .wav files to score")
    return found


def score_dirs(
    enhanced_dir: str | Path,
    noisy_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    workers: int = 2,
    resample: bool = False,
    threads: int = 1,
    progress: bool = False,
) -> dict:
    """DNSMOS of every .wav in ``enhanced_dir`` (and ``noisy_dir``); returns the summary.

    ``workers`` spawned processes with ``threads`` onnxruntime threads each (0: in this
    process). Writes ``dnsmos.csv`` and ``dnsmos.json`` into ``out_dir`` when given. Raises
    only for unusable folders or a missing extra, before any scoring, and
    :class:`bsmamba.scoring.NotWritten` (holding the scores) if they cannot be written.
    """
    _modules()
    folders = {"enhanced": Path(enhanced_dir)}
    if noisy_dir:
        folders["noisy"] = Path(noisy_dir)
    out_dir = Path(out_dir) if out_dir is not None else None
    found = {kind: _wavs(folder, out_dir) for kind, folder in folders.items()}
    if out_dir is not None:  # before the scoring, not after it: the scores would be lost
        files.check_writable(out_dir)
    jobs = [
        {"name": name, "input": kind, "path": str(p), "resample": resample, "threads": threads}
        for kind, wavs in found.items()
        for name, p in wavs.items()
    ]
    t0 = time.perf_counter()
    rows = run_pool(_score_file, jobs, workers, threads, "DNSMOS", progress)
    elapsed = time.perf_counter() - t0
    stats = {}
    for kind in folders:
        mine = [r for r in rows if r["input"] == kind and r["status"] == "ok"]
        stats[kind] = {k: stats_of([r[k] for r in mine]) for k in KEYS}
    summary = schema.document(
        "dnsmos",
        enhanced_dir=str(folders["enhanced"]),
        noisy_dir=str(folders["noisy"]) if noisy_dir else None,
        sample_rate=SAMPLE_RATE,
        model="DNSMOS P.835 (sig_bak_ovr.onnx) and P.808 (model_v8.onnx), as shipped by speechmos",
        std_over="files",
        files=len(rows),
        scored=sum(r["status"] == "ok" for r in rows),
        failed=sum(r["status"] != "ok" for r in rows),
        elapsed_s=round(elapsed, 3),
        workers=workers,
        metrics=stats,
        problems=[
            {"file": r["file"], "input": r["input"], "error": r["error"]}
            for r in rows
            if r["error"]
        ],
    )
    if out_dir is not None:
        write_outputs(out_dir, rows, summary)
    return summary


def write_outputs(out_dir: str | Path, rows: list[dict], summary: dict) -> None:
    """dnsmos.csv and dnsmos.json into ``out_dir``; :class:`NotWritten` if that fails."""
    try:
        files.write_text(Path(out_dir) / "dnsmos.csv", _csv(rows))
        files.write_json(Path(out_dir) / "dnsmos.json", summary)
    except OSError as e:
        raise NotWritten(e, summary, rows) from None


def _csv(rows: list[dict]) -> str:
    return rows_csv(rows, ["file", "input", "status", "seconds", *KEYS, "error"])


def table(summary: dict) -> str:
    """The summary as a table: one row per input folder, mean +/- std per score."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"DNSMOS: {summary['scored']} of {summary['files']} files scored, "
              "16 kHz (std across files)")  # fmt: skip
    t.add_column("input")
    for k in KEYS:
        t.add_column(LABELS[k], justify="right")
    for name, stats in summary["metrics"].items():
        t.add_row(name, *(_cell(stats[k]) for k in KEYS))
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    console.print(t)
    lines = [console.file.getvalue().rstrip()]
    lines.append("SIG, BAK, OVRL: DNSMOS P.835; P.808: DNSMOS P.808; 1-5, higher is better")
    for p in summary["problems"][:20]:
        lines.append(f"  error: {p['error']}")
    if len(summary["problems"]) > 20:
        lines.append(f"  ... {len(summary['problems']) - 20} more in dnsmos.csv")
    return "\n".join(lines)


def _cell(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    std = f" ± {s['std']:.2f}" if s["std"] is not None else ""
    return f"{s['mean']:.2f}{std}"


def main(args: argparse.Namespace) -> int:
    """``bsmamba evaluate`` without ``--clean`` (its arguments; --convention unused)."""
    if args.sample_rate != SAMPLE_RATE:
        raise ValueError(f"DNSMOS scores 16 kHz audio; drop --sample-rate {args.sample_rate}")
    out = Path(args.out) if args.out else Path(args.enhanced) / "evaluation"
    lost = None
    try:
        summary = score_dirs(
            args.enhanced,
            args.noisy,
            out,
            workers=args.workers,
            resample=args.resample,
            threads=max(1, args.threads),
            progress=not args.json and sys.stderr.isatty(),
        )
    except NotWritten as e:  # scored, then the disk filled up or went away: keep the scores
        summary, lost = e.summary, e
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    if lost is not None:
        print(rescue(lost, write_outputs, "bsmamba-dnsmos-"), file=sys.stderr)
        return 2
    if not args.json:
        print(f"wrote {out / 'dnsmos.csv'} and {out / 'dnsmos.json'} "
              f"({summary['elapsed_s']:.1f} s)")  # fmt: skip
    if summary["failed"]:
        print(f"bsmamba evaluate: {summary['failed']} of {summary['files']} file(s) not scored "
              "(named above)", file=sys.stderr)  # fmt: skip
    return 1 if summary["failed"] and not (args.allow_partial and summary["scored"]) else 0
