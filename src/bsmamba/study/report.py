"""`bsmamba report STUDY_DIR`: the study's table, per-SNR breakdown, claims and plots.

Rendering only: :func:`bsmamba.study.collect.collect` reads the study folder into the results
document, :mod:`bsmamba.study.claims` judges the plan's claims; this module writes
``report.md``, ``results.csv`` and ``results.json`` from it (``html.py``: ``report.html``).
Conventions (DECISIONS.md, "Metrics"):

- ``mean ± std``: the mean over utterances per seed, then mean and sample std across seeds; with
  one seed the std is across utterances (the table says which).
- A measurement that failed on an utterance is left out of that mean and counted: the cell says
  "(n failed)", since the systems are compared on the same utterances.
- Peak memory is at the plan's shape (batch 6 x 2 s); step time is at the training shape.
- A damaged record is listed by file with how to recompute it, and never averaged.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from bsmamba import files, schema
from bsmamba.study import claims, html, tables
from bsmamba.study.collect import collect, n_boot


def build(study_dir: str | Path) -> dict:
    """Write ``report.md``, ``results.csv``, ``results.json`` (kind "study_results") and the plots
    and audio examples into ``study_dir``; return the results document."""
    from bsmamba.study import plots  # matplotlib: only when a report is built

    sdir = Path(study_dir)
    results, utts = collect(sdir)
    results["claims"] = claims.check(results, utts, n_boot=n_boot(sdir))
    try:
        results["plots"] = plots.figures(results, sdir)
        results["examples"] = plots.examples(results, sdir)
    except Exception as e:  # plots are a convenience: never lose the table for them
        results["plots"], results["examples"] = [], []
        results["plot_error"] = f"{type(e).__name__}: {e}"
    doc = schema.document("study_results", **results)
    files.write_json(sdir / "results.json", doc)
    files.write_text(sdir / "results.csv", results_csv(doc))
    files.write_text(sdir / "report.md", markdown(doc))
    html.write(doc, sdir)  # report.html: the same document, with the plots and audio embedded
    return doc


def table_text(doc: dict) -> str:
    """The main table as aligned plain text (what the CLI prints)."""
    header = tables.table_header(doc)
    rows = [header, *tables.table_rows(doc)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n" + tables.shapes_note(doc)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    """``report.md``: table, shapes, per-SNR breakdown, claims against measurements, figures."""
    out = [f"# Ablation study `{doc['recipe']}`", ""]
    out += [
        f"Data: `{doc['data']}` ({doc['data_root']}); systems: {', '.join(doc['systems'])}; "
        f"seeds: {', '.join(str(s) for s in doc['seeds'])}.",
        "",
    ]
    if doc["is_demo_data"]:
        out += [
            "> **Caution:** these scores are on the small bundled demo set after a short CPU "
            "training. Demo-set PESQ is not VB-DMD PESQ: compare systems with each other here, "
            "never with published VoiceBank+DEMAND numbers.",
            "",
        ]
    out += [
        "## Results",
        "",
        _md_table(tables.table_header(doc), tables.table_rows(doc)),
        "",
        tables.shapes_note(doc),
        "",
    ]
    failures = [
        f"- `{s}` {stage}: {err}"
        for s in doc["systems"]
        for stage, err in (doc["by_system"][s].get("per_stage_error") or {}).items()
    ]
    if doc["noisy"].get("error"):
        failures.insert(0, f"- noisy input evaluate: {doc['noisy']['error']}")
    if doc["noisy"].get("dnsmos_error"):
        failures.insert(0, f"- noisy input dnsmos: {doc['noisy']['dnsmos_error']}")
    if failures:
        out += ["### Stages that did not finish", "", *failures, ""]
    if doc.get("damaged"):
        out += ["### Damaged records (not used)", "", *(f"- {d}" for d in doc["damaged"]), ""]
    if _any_failed(doc):
        out += [
            'A cell\'s "(n failed)" counts utterances whose measurement failed (e.g. PESQ found '
            "no speech in a silent output); they are left out of that mean. The systems are "
            "compared on the same utterances, so a failure is a result, not a gap.",
            "",
        ]
    if doc.get("warnings"):
        out += ["### Warnings", "", *(f"- {w}" for w in doc["warnings"]), ""]
    header, rows = tables.snr_rows(doc)
    if rows:
        out += [
            "## Per-SNR breakdown",
            "",
            f"Grouped by {doc['snr_grouping']}; means over utterances (and seeds).",
            "",
            _md_table(header, rows),
            "",
        ]
    if tables.worker_rows(doc):
        out += [
            "## Where each run ran",
            "",
            _md_table(tables.WORKER_HEADER, tables.worker_rows(doc)),
            "",
        ]
    out += ["## Claims against measurements", ""]
    out += [
        _md_table(
            ["Claim (plan)", "Claimed", "Measured", "Verdict", "Note"],
            [
                [c["claim"], c["claimed"], c["measured"], f"**{c['verdict']}**", c.get("note", "")]
                for c in doc["claims"]
            ],
        ),
        "",
    ]
    if doc.get("plots"):
        out += ["## Figures", ""] + [f"![{Path(p).stem}]({p})" for p in doc["plots"]] + [""]
    if doc.get("examples"):
        out += ["## Audio examples", ""]
        out += [
            f"- `{e['system']}` {e['name']}: [wav]({e['wav']}) [spectrogram]({e['png']})"
            for e in doc["examples"]
        ]
        out += [""]
    return "\n".join(out)


def _any_failed(doc: dict) -> bool:
    rows = [doc["noisy"]] + [doc["by_system"][s] for s in doc["systems"]]
    cells = [r.get("metrics") for r in rows] + [r.get("dnsmos_metrics") for r in rows]
    return any(c.get("failures") for m in cells if m for c in m.values())


def results_csv(doc: dict) -> str:
    """One row per system (and the noisy input): means, stds (SIG, BAK, OVRL too when the study
    asked for DNSMOS), params, memory, time, RTF."""
    keys = schema.METRIC_KEYS + (schema.DNSMOS_KEYS if doc.get("dnsmos") else ())
    cols = ["system"]
    for k in keys:
        cols += [k, f"{k}_std"]
    cols += ["params", "peak_bytes", "peak_source", "step_time_s", "rtf", "seeds_scored"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    noisy = doc["noisy"]
    entries = [("noisy", {k: noisy.get(k) for k in ("metrics", "dnsmos_metrics")})]
    entries += [(s, doc["by_system"][s]) for s in doc["systems"]]
    for name, r in entries:
        row = {c: "" for c in cols}
        row["system"] = name
        for k in keys:
            where = "dnsmos_metrics" if k in schema.DNSMOS_KEYS else "metrics"
            cell = (r.get(where) or {}).get(k) or {}
            row[k] = _csv_num(cell.get("mean"))
            row[f"{k}_std"] = _csv_num(cell.get("std"))
        for k in ("params", "peak_bytes", "peak_source", "step_time_s", "rtf", "seeds_scored"):
            row[k] = _csv_num(r.get(k))
        w.writerow(row)
    return buf.getvalue()


def _csv_num(v: Any) -> str:
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else str(v)


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", help="a study directory (e.g. studies/demo)")
    parser.add_argument("--json", action="store_true", help="print results.json")


def main(args: argparse.Namespace) -> int:
    from bsmamba.study.lock import describe, holder

    who = holder(args.study_dir)
    if who is not None:  # the table is of what is finished so far
        print(
            f"bsmamba report: warning: a study is running in this folder: {describe(who)}; "
            "the report shows what it has finished so far",
            file=sys.stderr,
        )
    doc = build(args.study_dir)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(table_text(doc))
        print(f"report: {Path(args.study_dir) / 'report.md'}")
    for line in doc.get("damaged", []):
        print(f"bsmamba report: damaged, not used: {line}", file=sys.stderr)
    return 1 if doc.get("damaged") else 0
