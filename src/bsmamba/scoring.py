"""What the two folder scorers share: ``evaluate`` (intrusive metrics against clean twins) and
``dnsmos`` (no-reference). Which files a folder holds, a pool of spawned scoring processes, the
per-file CSV, and scores that are never lost when their folder cannot be written.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bsmamba import files

_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def wav_files(folder: Path | None, leave_out: Path | None = None) -> dict[str, Path]:
    """Relative posix path -> file of every .wav below ``folder`` (subfolders too, sorted).

    Left out: ``leave_out`` (the output folder) and subfolders ``enhance`` wrote into.
    """
    if folder is None:
        return {}
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    skip = leave_out.resolve() if leave_out is not None else None
    out = {}
    for root, subdirs, names in os.walk(folder):
        subdirs[:] = sorted(
            d
            for d in subdirs
            if (Path(root) / d).resolve() != skip
            and not (Path(root) / d / files.ENHANCED_MARKER).is_file()
        )
        for n in names:
            if n.lower().endswith(".wav") and not n.startswith("."):
                p = Path(root) / n
                out[p.relative_to(folder).as_posix()] = p
    return dict(sorted(out.items()))


def run_pool(
    score: Callable[[dict], dict], jobs: list[dict], workers: int, threads: int, label: str,
    progress: bool = False,
) -> list[dict]:  # fmt: skip
    """``[score(job) for job in jobs]`` in ``workers`` spawned processes (0: in this one), in
    order, with a progress bar named ``label`` when ``progress``. ``score`` must be a module-level
    function that never raises (problems go into its row)."""
    import multiprocessing

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeRemainingColumn(), disable=not progress,
                   transient=True)  # fmt: skip
    rows = []
    with bar:
        task = bar.add_task(label, total=len(jobs))
        if workers <= 0:
            for job in jobs:
                rows.append(score(job))
                bar.advance(task)
            return rows
        # Workers are the parallelism: each must use ``threads`` BLAS threads (1 by default), or
        # PESQ/STOI's small matrix products spin-wait against each other (2.5-3x slower on 2
        # cores: docs/metrics.md). BLAS reads these variables at import, so the workers are
        # spawned (not forked) while they are set.
        saved = {v: os.environ.get(v) for v in _BLAS_VARS}
        os.environ.update(dict.fromkeys(_BLAS_VARS, str(max(1, threads))))
        try:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                chunk = max(1, min(16, len(jobs) // (4 * workers)))
                for row in pool.map(score, jobs, chunksize=chunk):
                    rows.append(row)
                    bar.advance(task)
        finally:
            for v, value in saved.items():
                if value is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = value
    return rows


def rows_csv(rows: list[dict], cols: list[str]) -> str:
    """Per-file rows as CSV text with columns ``cols``: floats in 6 significant digits, a
    non-finite or missing value as an empty cell."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _fmt(r.get(c)) for c in cols})
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return "" if v is None else v


class NotWritten(OSError):
    """The scores were computed but could not be written; ``summary`` and ``rows`` hold them."""

    def __init__(self, e: OSError, summary: dict, rows: list[dict]):
        super().__init__(e.errno, e.strerror, e.filename)
        self.summary, self.rows = summary, rows


def rescue(lost: NotWritten, write: Callable[[Path, list[dict], dict], None], prefix: str) -> str:
    """Write the scores ``lost`` holds into a new temp folder with ``write(folder, rows,
    summary)``; returns the one-line error for stderr, saying where they are (if anywhere)."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix))
        write(folder, lost.rows, lost.summary)
        where = f"the scores are in {folder} instead"
    except OSError:
        where = "nor anywhere else: the table above is all that is left"
    return f"bsmamba evaluate: error: could not write {files.error_line(lost)}; {where}"
