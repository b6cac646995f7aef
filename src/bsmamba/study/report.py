"""`bsmamba report STUDY_DIR`: the study's table, per-SNR breakdown, claims and plots.

Everything here is read back from the files the runner wrote (``study.json``, ``<system>/*.json``,
``<system>/s<seed>/stages/*.json`` and the per-utterance CSVs); nothing is recomputed but means,
standard deviations and bootstrap intervals. Conventions (DECISIONS.md, "Metrics"):

- ``mean ± std``: the mean over utterances per seed, then mean and sample std across seeds; with
  one seed the std is across utterances (the table says which).
- A measurement that failed on an utterance (e.g. PESQ found no speech in a silent output) is
  left out of that mean and counted: the cell says "(n failed)", since the systems are compared
  on the same utterances.
- Peak memory is at the plan's shape (batch 6 x 2 s); step time is at the training shape.

Every record is checked before it is used: a JSON record that does not parse, or a per-utterance
CSV whose rows do not match its stage record (count, fields, numbers, a cut-off last line), is
reported by file with how to recompute it, and never averaged.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bsmamba import files, schema
from bsmamba.study.runner import _fits

METRIC_LABELS = schema.METRIC_LABELS
# Digits per metric in tables (STOI as a fraction, like VB-DMD tables).
_DIGITS = {"pesq": 2, "csig": 2, "cbak": 2, "covl": 2, "ssnr": 2, "stoi": 3, "si_sdr": 2}
_NAME_COLUMNS = ("file", "name", "utterance", "filename", "path")


# ----------------------------------------------------------------------------- reading runs
_FIX = "delete it and rerun the study with the same arguments to recompute it"


class DamagedRecord(ValueError):
    """A record that exists but cannot be trusted; the message names the file."""


def _read(path: Path, damaged: list[str] | None = None, fix: str = _FIX) -> dict:
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


def read_utterances(csv_path: Path, record: dict | None = None) -> dict[str, dict[str, float]]:
    """Per-utterance scores ``{file name: {metric: value}}`` from an evaluation CSV.

    Empty cells (a metric that failed on that file) become NaN. Raises :class:`DamagedRecord`
    naming the file and line for a row with missing or extra fields, a cell that is not a
    number, a repeated name or a cut-off last line, and, when the stage ``record`` (its
    ``summary``) is given, for a row count or per-metric count that differs from it.
    """
    text = Path(csv_path).read_text()
    if text and not text.endswith("\n"):  # every row the writer writes ends with one
        raise DamagedRecord(f"{csv_path}: the last line is cut off (truncated file)")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return {}
    name_col = next((c for c in _NAME_COLUMNS if c in header), None)
    if name_col is None:
        raise DamagedRecord(f"{csv_path}: no file-name column (expected one of {_NAME_COLUMNS})")
    out = {}
    for cells in reader:
        line = reader.line_num
        if len(cells) != len(header):
            raise DamagedRecord(
                f"{csv_path}: line {line} has {len(cells)} fields, the header {len(header)}"
            )
        r = dict(zip(header, cells, strict=True))
        name = Path(r[name_col]).name
        if name in out:
            raise DamagedRecord(f"{csv_path}: line {line} repeats {name}")
        out[name] = {k: _cell_value(r.get(k), csv_path, line, k) for k in schema.METRIC_KEYS}
    summary = (record or {}).get("summary") or {}
    if isinstance(summary.get("pairs"), int) and summary["pairs"] != len(out):
        raise DamagedRecord(
            f"{csv_path}: {len(out)} rows, its stage record says {summary['pairs']} pairs"
        )
    stats = (summary.get("metrics") or {}).get("enhanced") or {}
    for k, st in stats.items():
        have = sum(math.isfinite(u[k]) for u in out.values()) if k in schema.METRIC_KEYS else None
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


def _utterances_of(
    eval_record: dict, base: Path, damaged: list[str], fix: str
) -> dict[str, dict[str, float]] | None:
    """The per-utterance scores of a finished evaluate record; None if not finished or damaged
    (then the reason and ``fix`` are noted in ``damaged``)."""
    rel = eval_record.get("per_utterance_csv")
    if eval_record.get("status") != "done" or not rel:
        return None
    try:
        return read_utterances(base / rel, eval_record)
    except (DamagedRecord, FileNotFoundError) as e:
        damaged.append(f"{e}; {fix}")
        return None


# ----------------------------------------------------------------------------- statistics
def mean_std(per_seed: list[dict[str, dict[str, float]]]) -> tuple[dict, str]:
    """``{metric: {mean, std, n}}`` and what the std is over ("seeds" or "utterances")."""
    out = {}
    over = "seeds" if len(per_seed) > 1 else "utterances"
    for k in schema.METRIC_KEYS:
        seed_vals = [np.array([u[k] for u in utts.values()], float) for utts in per_seed]
        failures = int(sum((~np.isfinite(v)).sum() for v in seed_vals))  # over every seed
        seed_vals = [v[np.isfinite(v)] for v in seed_vals]
        seed_vals = [v for v in seed_vals if v.size]
        if not seed_vals:
            out[k] = {"mean": None, "std": None, "n": 0, "failures": failures}
            continue
        if over == "seeds":
            means = np.array([v.mean() for v in seed_vals])
            std = float(means.std(ddof=1)) if means.size > 1 else None
            out[k] = {"mean": float(means.mean()), "std": std, "n": int(means.size)}
        else:
            v = seed_vals[0]
            std = float(v.std(ddof=1)) if v.size > 1 else None
            out[k] = {"mean": float(v.mean()), "std": std, "n": int(v.size)}
        out[k]["failures"] = failures
    return out, over


def utterance_means(per_seed: list[dict[str, dict[str, float]]], metric: str) -> dict[str, float]:
    """Per-utterance ``metric`` averaged over seeds (the unit of the paired bootstrap)."""
    names = set.intersection(*(set(u) for u in per_seed)) if per_seed else set()
    out = {}
    for n in sorted(names):
        vals = np.array([u[n][metric] for u in per_seed], float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[n] = float(vals.mean())
    return out


def snr_bin(snr_db: float, levels: list[float] | None = None) -> str:
    """Label of the SNR group of an utterance: the nearest nominal level, else a 5 dB bin."""
    if levels:
        lv = min(levels, key=lambda x: abs(x - snr_db))
        return f"{lv:g} dB"
    lo = 5 * math.floor(snr_db / 5)
    return f"{lo:g} to {lo + 5:g} dB"


def _nominal_snr(data_root: str, damaged: list[str]) -> dict[str, float]:
    """Nominal mixing SNR per test file, where the data manifest records it (the demo set)."""
    fix = "the per-SNR groups use the measured input SNR instead"
    man = _read(Path(data_root) / "manifest.json", damaged, fix) if data_root else {}
    return {
        e["file"]: float(e["snr_db"])
        for e in man.get("files", [])
        if e.get("dir") == "noisy_testset_wav" and e.get("snr_db") is not None
    }


def by_snr(
    per_seed: list[dict[str, dict[str, float]]], snr: dict[str, float], levels
) -> dict[str, dict]:
    """Per SNR group: mean of every metric over utterances (and seeds), and the count."""
    groups: dict[str, list[str]] = {}
    for name, s in snr.items():
        groups.setdefault(snr_bin(s, levels), []).append(name)
    out = {}
    for label in sorted(groups, key=lambda g: float(g.split()[0])):
        names = groups[label]
        row: dict[str, Any] = {}
        for k in schema.METRIC_KEYS:
            vals = np.array([u[n][k] for u in per_seed for n in names if n in u], float)
            vals = vals[np.isfinite(vals)]
            row[k] = float(vals.mean()) if vals.size else None
        row["n_utterances"] = sum(1 for n in names if any(n in u for u in per_seed))
        out[label] = row
    return out


# ----------------------------------------------------------------------------- build
def collect(study_dir: str | Path) -> tuple[dict, dict]:
    """Read a study folder: (results without claims/plots, per-utterance data for claims)."""
    sdir = Path(study_dir)
    meta = _read(sdir / "study.json")  # damaged: an error naming it (nothing to report without)
    if not meta:
        raise FileNotFoundError(f"{sdir / 'study.json'} not found: is {sdir} a study directory?")
    damaged: list[str] = []  # records that exist but are not used, with how to recompute them
    snr = _read(sdir / "test_snr.json", damaged).get("by_file", {})
    nominal = _nominal_snr(meta.get("data_root", ""), damaged)
    levels = None
    if snr and all(n in nominal for n in snr):  # group by the mixing SNR where it is recorded
        snr = {n: nominal[n] for n in snr}
        levels = sorted(set(snr.values()))

    noisy_rec = _read(sdir / "noisy" / "evaluation.json", damaged)
    fix = f"delete {sdir / 'noisy' / 'evaluation.json'} and rerun the study to recompute it"
    noisy_utts = _utterances_of(noisy_rec, sdir / "noisy", damaged, fix)
    noisy = {"status": noisy_rec.get("status", "missing"), "error": noisy_rec.get("error")}
    if noisy_utts:
        noisy["metrics"], _ = mean_std([noisy_utts])
        noisy["by_snr"] = by_snr([noisy_utts], snr, levels)

    systems, utts = {}, {"noisy": [noisy_utts] if noisy_utts else []}
    std_over = set()
    for system in meta["systems"]:
        pr = _read(sdir / system / "params.json", damaged)
        mem = _read(sdir / system / "memory.json", damaged)
        row: dict[str, Any] = {"stages": {"params": pr.get("status", "missing")}}
        row["stages"]["memory"] = mem.get("status", "missing")
        errors = {}
        for rec, stage in ((pr, "params"), (mem, "memory")):
            if rec.get("error"):
                errors[stage] = rec["error"]
        if pr.get("status") == "done":
            counts = pr["params"]
            row["params"] = _total_params(counts)
            row["earlier_params"] = pr.get("earlier_params")
            row["per_component_params"] = counts.get(
                "by_component", {k: v for k, v in counts.items() if k != "total"}
            )
        if mem.get("status") == "done":
            plan = mem["plan"]
            measured = plan.get("measured_peak_bytes")
            row["peak_bytes"] = (
                measured if measured is not None else plan.get("predicted_peak_bytes")
            )
            row["peak_source"] = "measured" if measured is not None else "predicted"
            row["predicted_peak_bytes"] = plan.get("predicted_peak_bytes")
            row["fits_plan_shape"] = _fits(plan)
            row["memory_budget"] = mem.get("budget")
            row["ladder_events"] = mem.get("ladder_events", [])
            row["ladder_error"] = mem.get("ladder_error")
        per_seed, step_times, rtfs, seeds_status = [], [], [], {}
        for seed in meta["seeds"]:
            rdir = sdir / system / f"s{seed}"
            st = {
                s: _read(rdir / "stages" / f"{s}.json", damaged)
                for s in ("train", "enhance", "evaluate")
            }
            seeds_status[str(seed)] = {s: r.get("status", "missing") for s, r in st.items()}
            for s, r in st.items():
                if r.get("error"):
                    errors[f"s{seed}/{s}"] = r["error"]
            tr = st["train"].get("results") or {}
            if st["train"].get("status") == "done" and tr.get("step_time_s") is not None:
                step_times.append(float(tr["step_time_s"]))
            if st["enhance"].get("status") == "done" and st["enhance"].get("rtf") is not None:
                rtfs.append(float(st["enhance"]["rtf"]))
            fix = f"delete {rdir / 'stages' / 'evaluate.json'} and rerun the study to recompute it"
            before = len(damaged)
            u = _utterances_of(st["evaluate"], rdir, damaged, fix)
            if len(damaged) > before:  # never averaged: this seed's scores are left out
                seeds_status[str(seed)]["evaluate"] = "damaged"
            if u:
                per_seed.append(u)
        row["stages"]["by_seed"] = seeds_status
        row["per_stage_error"] = errors
        row["seeds_scored"] = len(per_seed)
        row["step_time_s"] = float(np.mean(step_times)) if step_times else None
        row["rtf"] = float(np.mean(rtfs)) if rtfs else None
        if per_seed:
            row["metrics"], over = mean_std(per_seed)
            std_over.add(over)
            row["by_snr"] = by_snr(per_seed, snr, levels)
        systems[system] = row
        utts[system] = per_seed

    results = {
        "recipe": meta["recipe"],
        "data": meta.get("data"),
        "data_root": meta.get("data_root"),
        "is_demo_data": meta.get("data") == "demo",
        "systems": meta["systems"],
        "seeds": meta["seeds"],
        "n_test_utterances": len(snr),
        "std_over": (
            sorted(std_over)[0]
            if len(std_over) == 1
            else "mixed"
            if std_over
            else ("seeds" if len(meta["seeds"]) > 1 else "utterances")
        ),
        "plan_shape": meta["plan_shape"],
        "train_shape": meta["train_shape"],
        "train_budget_s": meta.get("train_budget_s"),
        "train_max_steps": meta.get("train_max_steps"),
        "train_threads": meta.get("train_threads"),
        "jobs": meta.get("jobs", 1),
        "snr_grouping": "nominal mixing SNR (data manifest)"
        if levels
        else "measured input SNR, 5 dB bins",
        "noisy": noisy,
        "by_system": systems,
        "warnings": meta.get("warnings", []),
        "damaged": damaged,
    }
    return results, utts


def _total_params(counts: dict) -> int | None:
    for key in ("total", "params", "total_params"):
        if isinstance(counts.get(key), int):
            return counts[key]
    return None


def build(study_dir: str | Path) -> dict:
    """Write ``report.md``, ``results.csv``, ``results.json`` (kind "study_results") and the plots
    and audio examples into ``study_dir``; return the results document."""
    from bsmamba.study import claims, html, plots

    sdir = Path(study_dir)
    results, utts = collect(sdir)
    results["claims"] = claims.check(results, utts, n_boot=_n_boot(sdir))
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


def _n_boot(sdir: Path) -> int:
    cfg = _read(sdir / "study.json", []).get("config", {})
    return int(cfg.get("study", {}).get("bootstrap", 2000))


# ----------------------------------------------------------------------------- formatting
def fmt_metric(m: dict | None, key: str) -> str:
    """``mean ± std`` of one metric cell (``-`` when not measured)."""
    if not m or m.get(key, {}).get("mean") is None:
        return "-"
    d, cell = _DIGITS[key], m[key]
    failed = f" ({cell['failures']} failed)" if cell.get("failures") else ""
    if cell.get("std") is None:
        return f"{cell['mean']:.{d}f}{failed}"
    return f"{cell['mean']:.{d}f} ± {cell['std']:.{d}f}{failed}"


def fmt_params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def fmt_seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f} s"


def fmt_rtf(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}"


TABLE_HEADER = [
    "System",
    *METRIC_LABELS.values(),
    "Params",
    "Peak memory",
    "Step time",
    "RTF",
]


def table_rows(doc: dict) -> list[list[str]]:
    """The main table: the noisy row, then one row per system, in paper column order."""
    noisy = doc["noisy"].get("metrics")
    rows = [
        ["Noisy input", *(fmt_metric(noisy, k) for k in schema.METRIC_KEYS), "-", "-", "-", "-"]
    ]
    for system in doc["systems"]:
        r = doc["by_system"][system]
        rows.append(
            [
                system,
                *(fmt_metric(r.get("metrics"), k) for k in schema.METRIC_KEYS),
                fmt_params(r.get("params")),
                fmt_bytes(r.get("peak_bytes"))
                + (" (pred.)" if r.get("peak_source") == "predicted" else ""),
                fmt_seconds(r.get("step_time_s")),
                fmt_rtf(r.get("rtf")),
            ]
        )
    return rows


def shapes_note(doc: dict) -> str:
    p, t = doc["plan_shape"], doc["train_shape"]
    budget = doc.get("train_budget_s")
    steps = doc.get("train_max_steps")
    limit = f", {budget:g} s per system" if budget else ""
    limit += f", at most {steps} steps" if steps and steps > 0 else ""
    if doc.get("train_threads"):
        limit += f", {doc['train_threads']} thread(s)"
    if (doc.get("jobs") or 1) > 1:
        limit += f", {doc['jobs']} runs at a time"
    std = {
        "seeds": "std across seeds (of per-seed means over utterances)",
        "utterances": "one seed: std across utterances",
    }.get(doc["std_over"], "std over seeds or utterances (mixed)")
    return (
        f"Metrics: mean ± std ({std}); {doc['n_test_utterances']} test utterances. "
        "Params and peak memory (live tensor bytes of one training step; measured, or "
        "predicted where marked pred.) at the plan's shape: "
        f"batch {p['batch_size']} x {p['segment_s']:g} s. "
        f"Training and step time at batch {t['batch_size']} x {t['segment_s']:g} s{limit}. "
        "RTF: enhancement wall time / audio duration, CPU."
    )


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def table_text(doc: dict) -> str:
    """The main table as aligned plain text (what the CLI prints)."""
    rows = [TABLE_HEADER, *table_rows(doc)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n" + shapes_note(doc)


def snr_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Per-SNR breakdown: one row per (SNR group, system incl. noisy), PESQ..SI-SDR means."""
    header = ["SNR", "System", *METRIC_LABELS.values(), "Utterances"]
    rows = []
    entries = [("Noisy input", doc["noisy"].get("by_snr") or {})]
    entries += [(s, doc["by_system"][s].get("by_snr") or {}) for s in doc["systems"]]
    labels = []
    for _, groups in entries:
        labels += [g for g in groups if g not in labels]
    labels.sort(key=lambda g: float(g.split()[0]))
    for label in labels:
        for name, groups in entries:
            g = groups.get(label)
            if not g:
                continue
            cells = ["-" if g[k] is None else f"{g[k]:.{_DIGITS[k]}f}" for k in schema.METRIC_KEYS]
            rows.append([label, name, *cells, str(g["n_utterances"])])
    return header, rows


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
    out += ["## Results", "", _md_table(TABLE_HEADER, table_rows(doc)), "", shapes_note(doc), ""]
    failures = [
        f"- `{s}` {stage}: {err}"
        for s in doc["systems"]
        for stage, err in (doc["by_system"][s].get("per_stage_error") or {}).items()
    ]
    if doc["noisy"].get("error"):
        failures.insert(0, f"- noisy input evaluate: {doc['noisy']['error']}")
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
    header, rows = snr_rows(doc)
    if rows:
        out += [
            "## Per-SNR breakdown",
            "",
            f"Grouped by {doc['snr_grouping']}; means over utterances (and seeds).",
            "",
            _md_table(header, rows),
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
    cells = [doc["noisy"].get("metrics")] + [
        doc["by_system"][s].get("metrics") for s in doc["systems"]
    ]
    return any(c.get("failures") for m in cells if m for c in m.values())


def results_csv(doc: dict) -> str:
    """One row per system (and the noisy input): means, stds, params, memory, time, RTF."""
    cols = ["system"]
    for k in schema.METRIC_KEYS:
        cols += [k, f"{k}_std"]
    cols += ["params", "peak_bytes", "peak_source", "step_time_s", "rtf", "seeds_scored"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    entries = [("noisy", {"metrics": doc["noisy"].get("metrics")})]
    entries += [(s, doc["by_system"][s]) for s in doc["systems"]]
    for name, r in entries:
        row = {c: "" for c in cols}
        row["system"] = name
        for k in schema.METRIC_KEYS:
            cell = (r.get("metrics") or {}).get(k) or {}
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
    doc = build(args.study_dir)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(table_text(doc))
        print(f"report: {Path(args.study_dir) / 'report.md'}")
    for line in doc.get("damaged", []):
        print(f"bsmamba report: damaged, not used: {line}", file=sys.stderr)
    return 1 if doc.get("damaged") else 0
