"""Every number and comparison in the user's plan, beside what the study measured.

Verdicts are plain words: ``holds``, ``fails``, ``not significant`` (a ranking whose paired
bootstrap interval contains 0), ``not measurable on this data`` (absolute PESQ on the demo set),
and ``not measured`` (the stage that would measure it did not finish). Tolerances are stated in
each row's note; they are ours, the plan gives none. The size claims (counts, the decoder) are
judged by :mod:`bsmamba.claims`, the same judge as ``bsmamba params``'.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bsmamba.claims import FAILS, HOLDS, NOT_MEASURED, size_claims
from bsmamba.claims import row as _row
from bsmamba.presets import CLAIMS
from bsmamba.study.stats import paired_bootstrap, paired_n_needed, utterance_means

NOT_SIGNIFICANT = "not significant"
NOT_MEASURABLE = "not measurable on this data"

POINT_PESQ_TOL = 0.05  # a single expected PESQ (e.g. 3.00) is read as +-0.05
PLAN_BIDIR_GAIN = 0.3  # "+0.3 PESQ expected"
PLAN_BATCH = 6
MIN_PAIRED = 10  # fewer paired utterances than this: a bootstrap interval means nothing


def ranking_verdict(ci: dict, gain: float = 0.0) -> str:
    """``a >= b + gain`` judged on the paired interval of a - b.

    ``fails`` when the whole interval lies below ``gain`` (the claimed size is ruled out, or for
    gain 0, b is better); ``holds`` when it excludes 0 and does not lie wholly below ``gain``;
    else ``not significant``.
    """
    if ci["mean_diff"] is None:
        return NOT_MEASURED
    if ci["n"] < MIN_PAIRED:
        return NOT_SIGNIFICANT
    if ci["ci_high"] < gain:
        return FAILS
    if ci["ci_low"] > 0:
        return HOLDS
    return NOT_SIGNIFICANT


def check(results: dict, utts: dict[str, list], n_boot: int = 2000) -> list[dict[str, Any]]:
    """Claims rows for a study's ``results`` (collect.collect) and per-utterance ``utts``."""
    by = results["by_system"]
    systems = [s for s in results["systems"] if s in CLAIMS]
    rows = size_claims(
        {s: by[s].get("params") for s in results["systems"]},
        {s: (by[s].get("per_component_params") or {}).get("decoder") for s in results["systems"]},
        {s: by[s].get("earlier_params") for s in results["systems"]},
    )
    rows += _memory_claims(results, systems)
    rows += _pesq_range_claims(results, systems)
    rows += _ranking_claims(results, utts, n_boot)
    return rows


def _memory_claims(results: dict, systems: list[str]) -> list[dict]:
    """ "fits with batch size 6" per system: the plan's verdict at the plan's shape."""
    by, shape, rows = results["by_system"], results["plan_shape"], []
    for s in systems:
        r = by[s]
        claim = f"{s} fits in memory with batch size {PLAN_BATCH}"
        if r.get("fits_plan_shape") is None:
            rows.append(_row(claim, "fits", "-", NOT_MEASURED))
            continue
        measured = f"{r['memory_verdict']} at batch {shape['batch_size']} x "
        measured += f"{shape['segment_s']:g} s"
        note = f"budget {r.get('memory_budget')}"
        if shape["batch_size"] != PLAN_BATCH:
            note += f"; measured at batch {shape['batch_size']}, not the plan's {PLAN_BATCH}"
        rungs = [e for e in r.get("ladder_events") or [] if e.get("event") == "step_down"]
        if rungs:
            note += f"; fits after {len(rungs)} ladder rung(s): " + ", ".join(
                str(e.get("rung", e.get("reason", "?"))) for e in rungs
            )
        if r.get("ladder_error"):
            note += f"; ladder: {r['ladder_error']}"
        verdict = HOLDS if r["fits_plan_shape"] else FAILS
        rows.append(_row(claim, "fits", measured, verdict, note))
    return rows


def _pesq_range_claims(results: dict, systems: list[str]) -> list[dict]:
    rows = []
    for s in systems:
        lo, hi = CLAIMS[s]["pesq"]
        claimed = f"{lo:.2f}" if lo == hi else f"{lo:.2f}–{hi:.2f}"
        claim = f"{s} PESQ (VB-DMD) ≈ {claimed}"
        m = (results["by_system"][s].get("metrics") or {}).get("pesq", {})
        if m.get("mean") is None:
            rows.append(_row(claim, claimed, "-", NOT_MEASURED))
            continue
        measured = f"{m['mean']:.2f}"
        if results["is_demo_data"]:
            note = "demo-set PESQ after a short CPU training is not VB-DMD PESQ"
            rows.append(_row(claim, claimed, measured, NOT_MEASURABLE, note))
            continue
        if lo == hi:
            lo, hi = lo - POINT_PESQ_TOL, hi + POINT_PESQ_TOL
        verdict = HOLDS if lo <= m["mean"] <= hi else FAILS
        note = (
            f"single values read as ±{POINT_PESQ_TOL}"
            if CLAIMS[s]["pesq"][0] == CLAIMS[s]["pesq"][1]
            else ""
        )
        rows.append(_row(claim, claimed, measured, verdict, note))
    return rows


def _ranking_claims(results: dict, utts: dict[str, list], n_boot: int) -> list[dict]:
    pesq = {s: utterance_means(u, "pesq") for s, u in utts.items() if s != "noisy" and u}
    demo = " (on the demo set)" if results["is_demo_data"] else ""
    if len(results.get("seeds", [])) == 1:
        # Utterances are resampled, trainings are not: one seed cannot show training variance.
        demo += "; one seed: the interval ignores training randomness (use --seeds 3)"

    def compare(
        a: str, b: str, claim: str, claimed: str, note: str = "", gain: float = 0.0
    ) -> dict | None:
        if a not in results["systems"] or b not in results["systems"]:
            return None
        if a not in pesq or b not in pesq:
            return _row(claim, claimed, "-", NOT_MEASURED, "both systems must be scored")
        ci = paired_bootstrap(pesq[a], pesq[b], n_boot=n_boot)
        if ci["mean_diff"] is None:
            return _row(claim, claimed, "-", NOT_MEASURED, "no utterance scored by both")
        measured = (
            f"ΔPESQ {ci['mean_diff']:+.3f}, 95% CI [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]"
        )
        boot = f"paired bootstrap over {ci['n']} utterances, {ci['n_boot']} resamples{demo}"
        if ci["n"] < MIN_PAIRED:
            boot += f"; fewer than {MIN_PAIRED} utterances: no verdict beyond not significant"
        verdict = ranking_verdict(ci, gain)
        need = paired_n_needed(pesq[a], pesq[b])
        boot += _n_needed_note(need, "utterances", _seed_n_needed(utts, a, b, results))
        return _row(claim, claimed, measured, verdict, f"{boot}{note}", bootstrap=ci, n_needed=need)

    rows = [
        compare("abl3", "abl2", "Ranking: abl3 ≥ abl2 (PESQ)", "abl3 ≥ abl2"),
        compare("abl2", "abl1", "Ranking: abl2 ≥ abl1 (PESQ)", "abl2 ≥ abl1"),
        compare("abl3", "bsrnn", "Ablation 3 beats the BSRNN baseline (PESQ)", "abl3 ≥ bsrnn"),
        compare(
            "abl2",
            "modified",
            "Bidirectional Mamba beats unidirectional (+0.3 PESQ): abl2 vs modified",
            f"+{PLAN_BIDIR_GAIN} PESQ",
            f"; fails when the whole interval lies below +{PLAN_BIDIR_GAIN}",
            gain=PLAN_BIDIR_GAIN,
        ),
    ]
    pair = [r for r in rows[:2] if r is not None]
    if len(pair) == 2:
        verdicts = {r["verdict"] for r in pair}
        if FAILS in verdicts:
            v = FAILS
        elif verdicts == {HOLDS}:
            v = HOLDS
        elif NOT_MEASURED in verdicts:
            v = NOT_MEASURED
        else:
            v = NOT_SIGNIFICANT
        rows.insert(
            2,
            _row(
                "Ranking: abl3 ≥ abl2 ≥ abl1 (PESQ)",
                "abl3 ≥ abl2 ≥ abl1",
                "-" if v == NOT_MEASURED else "; ".join(r["verdict"] for r in pair),
                v,
                "both pairwise comparisons above must hold",
            ),
        )
    return [r for r in rows if r is not None]


def _seed_n_needed(utts: dict[str, list], a: str, b: str, results: dict) -> dict | None:
    """``paired_n_needed`` over seeds (per-seed mean PESQ), when every seed of both is scored."""
    seeds = results.get("seeds", [])
    if len(seeds) < 2 or not len(utts.get(a) or []) == len(utts.get(b) or []) == len(seeds):
        return None

    def per_seed(s: str) -> dict[int, float]:
        return {i: float(np.nanmean([u[n]["pesq"] for n in u])) for i, u in enumerate(utts[s])}

    return paired_n_needed(per_seed(a), per_seed(b))


def _n_needed_note(need: dict, unit: str, seeds: dict | None = None) -> str:
    """The note's sentence on how many pairs a difference of the observed size would need."""
    pw = f"{need['power']:.0%} power, two-sided {need['alpha']:.0%}"
    if need["n_needed"] is None:
        if need["mean_diff"] == 0.0:
            return f"; no difference between the {unit}: no number of them would show one"
        return ""
    text = f"; about {need['n_needed']:,} {unit}"
    if seeds and seeds["n_needed"] is not None:
        text += f" (or about {seeds['n_needed']:,} seeds on this test set)"
    sd = f"sd of the paired difference {need['sd_diff']:.3f} over {need['n']} {unit}"
    return text + f" would make a difference of this size significant ({pw}; {sd})"
