"""The study's tables as rows of cells, from the results document: the main table, the
per-SNR breakdown, where each run ran. ``report.py`` lays them out as markdown and text,
``html.py`` as HTML.
"""

from __future__ import annotations

from bsmamba import schema, units

METRIC_LABELS = schema.METRIC_LABELS


def fmt_metric(m: dict | None, key: str) -> str:
    """``mean ± std`` of one metric cell of a results row (``-`` when not measured)."""
    cell = (m or {}).get(key) or {}
    return units.fmt_metric(cell.get("mean"), cell.get("std"), key, cell.get("failures") or 0)


fmt_params, fmt_seconds, fmt_rtf = units.fmt_params, units.fmt_seconds, units.fmt_rtf


def fmt_bytes(n: int | None) -> str:
    return units.fmt_bytes(n, "GiB")  # one unit down a column


TABLE_HEADER = [
    "System",
    *METRIC_LABELS.values(),
    "Params",
    "Peak memory",
    "Step time",
    "RTF",
]


def fmt_dnsmos(m: dict | None, key: str) -> str:
    """``mean ± std`` of one DNSMOS cell (two places, on its 1-5 scale; ``-`` when none)."""
    cell = (m or {}).get(key) or {}
    if cell.get("mean") is None:
        return "-"
    spread = f" ± {cell['std']:.2f}" if cell.get("std") is not None else ""
    failed = f" ({cell['failures']} failed)" if cell.get("failures") else ""
    return f"{cell['mean']:.2f}{spread}{failed}"


def table_header(doc: dict) -> list[str]:
    """The main table's header: SIG, BAK, OVRL after the metrics when the study asked for them."""
    if not doc.get("dnsmos"):
        return list(TABLE_HEADER)
    n = 1 + len(METRIC_LABELS)
    return [*TABLE_HEADER[:n], *schema.DNSMOS_LABELS.values(), *TABLE_HEADER[n:]]


def table_rows(doc: dict) -> list[list[str]]:
    """The main table: the noisy row, then one row per system, in paper column order."""

    def nr(r: dict) -> list[str]:  # the DNSMOS cells, when asked for
        if not doc.get("dnsmos"):
            return []
        return [fmt_dnsmos(r.get("dnsmos_metrics"), k) for k in schema.DNSMOS_KEYS]

    noisy = doc["noisy"]
    rows = [
        [
            "Noisy input",
            *(fmt_metric(noisy.get("metrics"), k) for k in schema.METRIC_KEYS),
            *nr(noisy),
            "-",
            "-",
            "-",
            "-",
        ]  # fmt: skip
    ]
    for system in doc["systems"]:
        r = doc["by_system"][system]
        rows.append(
            [
                system,
                *(fmt_metric(r.get("metrics"), k) for k in schema.METRIC_KEYS),
                *nr(r),
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
        "Params and peak memory (live tensor bytes of one training step as the recipe trains "
        "it, with its discriminator and weight average where it has them; measured, or "
        "predicted where marked pred.) at the plan's shape: "
        f"batch {p['batch_size']} x {p['segment_s']:g} s. "
        f"Training and step time at batch {t['batch_size']} x {t['segment_s']:g} s{limit}. "
        "RTF: enhancement wall time / audio duration, CPU."
        + (
            " SIG, BAK, OVRL: DNSMOS P.835 (no reference; 1-5, higher is better), mean ± std "
            "as the metrics."
            if doc.get("dnsmos")
            else ""
        )
    )


WORKER_HEADER = ["System", "Seed", "Launcher", "Host", "GPUs", "SLURM job"]


def worker_rows(doc: dict) -> list[list[str]]:
    """Where each run trained (its train record's ``worker``): one row per system x seed;
    "-" where the record has none (a run trained before workers were recorded, or not yet)."""
    rows = []
    for system in doc["systems"]:
        for seed, run in (doc.get("runs") or {}).get(system, {}).items():
            w = run.get("worker")
            if not w:
                rows.append([system, seed, "-", "-", "-", "-"])
                continue
            gpus = ", ".join(str(g) for g in w["gpus"]) if w.get("gpus") else "CPU"
            rows.append([system, seed, w["launcher"], w["host"], gpus, w.get("job_id") or "-"])
    return rows


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
            cells = [
                "-" if g[k] is None else f"{g[k]:.{units.METRIC_DIGITS[k]}f}"
                for k in schema.METRIC_KEYS
            ]
            rows.append([label, name, *cells, str(g["n_utterances"])])
    return header, rows
