"""A study folder read back into the results document (``bsmamba report`` tabulates it).

Everything comes from the files the runner wrote (``study.json``, ``<system>/*.json``,
``<system>/s<seed>/stages/*.json`` and the per-utterance CSVs), read through
:mod:`bsmamba.study.records`; nothing is recomputed but the statistics of
:mod:`bsmamba.study.stats`. Peak memory is at the plan's shape (batch 6 x 2 s); step time is at
the training shape. A measurement that failed on an utterance (e.g. PESQ found no speech in a
silent output) is left out of that mean and counted, since the systems are compared on the same
utterances.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bsmamba import schema
from bsmamba.data import manifest_snrs
from bsmamba.memory.plan import verdict_text
from bsmamba.study import records, stats
from bsmamba.study.records import DONE


def _nominal_snr(data_root: str, damaged: list[str]) -> dict[str, float]:
    """Nominal mixing SNR per test file, where the data manifest records it (the demo set)."""
    if not data_root:
        return {}
    try:
        return manifest_snrs(Path(data_root) / "noisy_testset_wav")
    except (ValueError, UnicodeDecodeError) as e:
        fix = "the per-SNR groups use the measured input SNR instead"
        damaged.append(f"{Path(data_root) / 'manifest.json'}: damaged record ({e}); {fix}")
        return {}


def _system_row(sdir: Path, system: str, damaged: list[str]) -> dict[str, Any]:
    """The seed-independent part of a system's row: parameter counts and the memory plan."""
    pr = records.read(sdir / system / "params.json", damaged)
    mem = records.read(sdir / system / "memory.json", damaged)
    row: dict[str, Any] = {
        "stages": {"params": pr.get("status", "missing"), "memory": mem.get("status", "missing")}
    }
    row["per_stage_error"] = {
        s: r["error"] for s, r in (("params", pr), ("memory", mem)) if r.get("error")
    }
    if pr.get("status") == DONE:
        counts = pr["params"]  # bsmamba.params.count
        row["params"] = counts["total"]
        row["earlier_params"] = pr.get("earlier_params")
        row["per_component_params"] = {k: v for k, v in counts.items() if k != "total"}
    if mem.get("status") == DONE:
        plan = mem["plan"]
        measured = plan.get("measured_peak_bytes")
        row["peak_bytes"] = measured if measured is not None else plan.get("predicted_peak_bytes")
        row["peak_source"] = "measured" if measured is not None else "predicted"
        row["predicted_peak_bytes"] = plan.get("predicted_peak_bytes")
        row["fits_plan_shape"] = records.fits(plan)
        row["memory_verdict"] = verdict_text(plan)  # names the device, budget and basis
        row["memory_budget"] = mem.get("budget")
        row["ladder_events"] = mem.get("ladder_events", [])
        row["ladder_error"] = mem.get("ladder_error")
    return row


def _scores(rdir: Path, stage: str, rec: dict, status: dict, damaged: list[str]):
    """The per-utterance scores of a run's evaluate or dnsmos record ``rec`` (None when not
    finished or damaged: then ``status[stage]`` says "damaged" and ``damaged`` says why)."""
    fix = f"delete {records.run_stage_path(rdir, stage)} and rerun the study to recompute it"
    before = len(damaged)
    u = records.utterances_of(rec, rdir, damaged, fix)
    if len(damaged) > before:  # never averaged: this seed's scores are left out
        status[stage] = "damaged"
    return u


def _seed_runs(
    sdir: Path, system: str, seeds: list[int], row: dict, damaged: list[str], dnsmos: bool
):
    """Read every seed's stage records into ``row`` (and its dnsmos records when ``dnsmos``);
    returns (the scored seeds' utterances, ``{seed: the train record's worker}``)."""
    per_seed, step_times, rtfs, seeds_status, workers = [], [], [], {}, {}
    dnsmos_per_seed = []
    for seed in seeds:
        rdir = sdir / system / f"s{seed}"
        st = {s: records.read(records.run_stage_path(rdir, s), damaged) for s in records.RUN_STAGES}
        seeds_status[str(seed)] = {s: r.get("status", "missing") for s, r in st.items()}
        workers[str(seed)] = st["train"].get("worker")  # which host / GPUs / job trained it
        for s, r in st.items():
            if r.get("error"):
                row["per_stage_error"][f"s{seed}/{s}"] = r["error"]
        tr = st["train"].get("results") or {}
        if st["train"].get("status") == DONE and tr.get("step_time_s") is not None:
            step_times.append(float(tr["step_time_s"]))
        if st["enhance"].get("status") == DONE and st["enhance"].get("rtf") is not None:
            rtfs.append(float(st["enhance"]["rtf"]))
        u = _scores(rdir, "evaluate", st["evaluate"], seeds_status[str(seed)], damaged)
        if u:
            per_seed.append(u)
        if dnsmos:
            dn = records.read(records.run_stage_path(rdir, "dnsmos"), damaged)
            seeds_status[str(seed)]["dnsmos"] = dn.get("status", "missing")
            if dn.get("error"):
                row["per_stage_error"][f"s{seed}/dnsmos"] = dn["error"]
            u = _scores(rdir, "dnsmos", dn, seeds_status[str(seed)], damaged)
            if u:
                dnsmos_per_seed.append(u)
    row["stages"]["by_seed"] = seeds_status
    row["seeds_scored"] = len(per_seed)
    if dnsmos:  # the study asked for them: mean ± std as the other metrics
        row["dnsmos_metrics"], _ = stats.mean_std(dnsmos_per_seed, schema.DNSMOS_KEYS)
        row["dnsmos_seeds_scored"] = len(dnsmos_per_seed)
    row["step_time_s"] = float(np.mean(step_times)) if step_times else None
    row["rtf"] = float(np.mean(rtfs)) if rtfs else None
    return per_seed, workers


def collect(study_dir: str | Path) -> tuple[dict, dict]:
    """Read a study folder: (results without claims/plots, per-utterance data for claims).

    The second item is ``{system or "noisy": [one {utterance: {metric: value}} per scored
    seed]}``.
    """
    sdir = Path(study_dir)
    meta = records.read(sdir / "study.json")  # damaged: an error naming it (nothing without)
    if not meta:
        raise FileNotFoundError(f"{sdir / 'study.json'} not found: is {sdir} a study directory?")
    damaged: list[str] = []  # records that exist but are not used, with how to recompute them
    snr = records.read(sdir / "test_snr.json", damaged).get("by_file", {})
    nominal = _nominal_snr(meta.get("data_root", ""), damaged)
    levels = None
    if snr and all(n in nominal for n in snr):  # group by the mixing SNR where it is recorded
        snr = {n: nominal[n] for n in snr}
        levels = sorted(set(snr.values()))

    noisy_rec = records.read(sdir / "noisy" / "evaluation.json", damaged)
    fix = f"delete {sdir / 'noisy' / 'evaluation.json'} and rerun the study to recompute it"
    noisy_utts = records.utterances_of(noisy_rec, sdir / "noisy", damaged, fix)
    noisy = {"status": noisy_rec.get("status", "missing"), "error": noisy_rec.get("error")}
    if noisy_utts:
        noisy["metrics"], _ = stats.mean_std([noisy_utts])
        noisy["by_snr"] = stats.by_snr([noisy_utts], snr, levels)
    dnsmos = bool(meta.get("config", {}).get("study", {}).get("dnsmos"))  # asked for last run
    if dnsmos:
        rec = records.read(sdir / "noisy" / "dnsmos.json", damaged)
        fix = f"delete {sdir / 'noisy' / 'dnsmos.json'} and rerun the study to recompute it"
        u = records.utterances_of(rec, sdir / "noisy", damaged, fix)
        noisy["dnsmos_status"] = rec.get("status", "missing")
        noisy["dnsmos_error"] = rec.get("error")
        noisy["dnsmos_metrics"], _ = stats.mean_std([u] if u else [], schema.DNSMOS_KEYS)

    systems, runs, utts = {}, {}, {"noisy": [noisy_utts] if noisy_utts else []}
    std_over = set()
    for system in meta["systems"]:
        row = _system_row(sdir, system, damaged)
        per_seed, workers = _seed_runs(sdir, system, meta["seeds"], row, damaged, dnsmos)
        runs[system] = {
            seed: {**st, "worker": workers[seed]} for seed, st in row["stages"]["by_seed"].items()
        }
        if per_seed:
            row["metrics"], over = stats.mean_std(per_seed)
            std_over.add(over)
            row["by_snr"] = stats.by_snr(per_seed, snr, levels)
        systems[system] = row
        utts[system] = per_seed

    if len(std_over) == 1:
        over = std_over.pop()
    else:
        over = "mixed" if std_over else ("seeds" if len(meta["seeds"]) > 1 else "utterances")
    results = {
        "recipe": meta["recipe"],
        "data": meta.get("data"),
        "data_root": meta.get("data_root"),
        "is_demo_data": meta.get("data") == "demo",
        "systems": meta["systems"],
        "seeds": meta["seeds"],
        "n_test_utterances": len(snr),
        "dnsmos": dnsmos,  # study.dnsmos: rows carry "dnsmos_metrics" (SIG, BAK, OVRL)
        "std_over": over,
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
        "runs": runs,  # {system: {seed: {stage: status, "worker": where it trained or None}}}
        "warnings": meta.get("warnings", []),
        "damaged": damaged,
    }
    return results, utts


def n_boot(study_dir: str | Path) -> int:
    """The study's ``study.bootstrap`` (resamples of the paired bootstrap)."""
    cfg = records.read(Path(study_dir) / "study.json", []).get("config", {})
    return int(cfg.get("study", {}).get("bootstrap", 2000))
