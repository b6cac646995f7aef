"""Claims against measurements: bootstrap intervals and verdicts on constructed measurements."""

import numpy as np
import pytest

from bsmamba.presets import CLAIMS
from bsmamba.study import claims, stats


def _utts(values):
    return {f"u{i:03d}.wav": float(v) for i, v in enumerate(values)}


def test_paired_bootstrap_interval_and_verdicts():
    rng = np.random.default_rng(1)
    base = rng.uniform(1.5, 3.0, 60)
    noise = rng.normal(0, 0.05, 60)
    better = stats.paired_bootstrap(_utts(base + 0.3 + noise), _utts(base), n_boot=500)
    assert better["n"] == 60
    assert better["ci_low"] < better["mean_diff"] < better["ci_high"]
    assert better["mean_diff"] == pytest.approx(0.3 + noise.mean())
    assert claims.ranking_verdict(better) == claims.HOLDS
    worse = stats.paired_bootstrap(_utts(base), _utts(base + 0.3 + noise), n_boot=500)
    assert claims.ranking_verdict(worse) == claims.FAILS
    # Zero-mean paired differences: the interval straddles 0.
    same = stats.paired_bootstrap(_utts(base + noise - noise.mean()), _utts(base), n_boot=500)
    assert same["ci_low"] < 0 < same["ci_high"]
    assert claims.ranking_verdict(same) == claims.NOT_SIGNIFICANT
    # Deterministic for a seed; only utterances scored by both systems are paired.
    again = stats.paired_bootstrap(_utts(base + 0.3 + noise), _utts(base), n_boot=500)
    assert again == better
    partial = stats.paired_bootstrap(_utts(base[:10]), _utts(base), n_boot=50)
    assert partial["n"] == 10 and partial["mean_diff"] == 0.0
    # Too few pairs: even a consistent gain is no more than "not significant".
    few = stats.paired_bootstrap(_utts(base[:3] + 1.0), _utts(base[:3]), n_boot=50)
    assert few["ci_low"] > 0 and claims.ranking_verdict(few) == claims.NOT_SIGNIFICANT
    assert claims.ranking_verdict(stats.paired_bootstrap({}, {})) == claims.NOT_MEASURED


def test_a_claimed_gain_is_judged_on_its_size_too():
    rng = np.random.default_rng(2)
    base = rng.uniform(1.5, 3.0, 60)
    noise = rng.normal(0, 0.05, 60)
    small = stats.paired_bootstrap(_utts(base + 0.1 + noise), _utts(base), n_boot=500)
    big = stats.paired_bootstrap(_utts(base + 0.35 + noise), _utts(base), n_boot=500)
    # +0.1 is above 0 (the direction holds) but wholly below the claimed +0.3: the claim fails
    assert small["ci_low"] > 0 and small["ci_high"] < 0.3
    assert claims.ranking_verdict(small) == claims.HOLDS
    assert claims.ranking_verdict(small, gain=0.3) == claims.FAILS
    assert claims.ranking_verdict(big, gain=0.3) == claims.HOLDS
    # an interval reaching +0.3 from above 0 is consistent with the claim: it holds
    wide = stats.paired_bootstrap(_utts(base + 0.25 + 8 * noise), _utts(base), n_boot=500)
    assert wide["ci_low"] > 0 and wide["ci_high"] > 0.3
    assert claims.ranking_verdict(wide, gain=0.3) == claims.HOLDS


def _results(params, demo=True, pesq=None, fits=None, decoders=None):
    systems = list(params)
    by = {}
    for s in systems:
        row = {"params": params[s]}
        if decoders and s in decoders:
            row["per_component_params"] = {"encoder": 1000, "decoder": decoders[s]}
        if fits is not None:
            row.update(
                fits_plan_shape=fits[s],
                memory_verdict=f"{'fits' if fits[s] else 'does not fit'} on cpu (measured ...)",
                peak_bytes=(1 if fits[s] else 40) * 2**30,
                peak_source="measured",
                memory_budget="24GiB",
                ladder_events=[] if fits[s] else [{"rung": "batch_size"}],
            )
        if pesq and s in pesq:
            row["metrics"] = {"pesq": {"mean": pesq[s], "std": 0.1, "n": 5}}
        by[s] = row
    return {
        "systems": systems,
        "by_system": by,
        "is_demo_data": demo,
        "plan_shape": {"batch_size": 6, "segment_s": 2.0},
    }


def _find(rows, text):
    hit = [r for r in rows if text in r["claim"]]
    assert len(hit) == 1, (text, [r["claim"] for r in rows])
    return hit[0]


def test_parameter_memory_and_decoder_claims():
    # bsrnn within 5% of its 2.4M claim; abl2 far below 3.7M; abl3 not the smallest.
    params = {"bsrnn": 2_330_000, "abl2": 1_700_000, "abl3": 1_200_000, "abl1": 1_100_000}
    res = _results(
        params,
        fits={"bsrnn": True, "abl2": True, "abl3": True, "abl1": False},
        decoders={"abl2": 1_000_000, "abl3": 520_000},
    )
    rows = claims.check(res, {})
    assert _find(rows, "bsrnn has ~2.4M")["verdict"] == claims.HOLDS
    assert _find(rows, "abl2 has ~3.7M")["verdict"] == claims.FAILS
    assert _find(rows, "fewest parameters")["verdict"] == claims.FAILS  # abl1 is smaller
    assert "abl1" in _find(rows, "fewest parameters")["measured"]
    assert _find(rows, "< BSRNN")["verdict"] == claims.HOLDS
    assert _find(rows, "abl1 fits in memory")["verdict"] == claims.FAILS
    assert _find(rows, "abl3 fits in memory")["verdict"] == claims.HOLDS
    # 1 - 520k/1M = 48%: within 5 points of the claimed 46%; absolute sizes are far off.
    saving = _find(rows, "Adaptive decoder")
    assert saving["verdict"] == claims.HOLDS and "48.0%" in saving["measured"]
    assert _find(rows, "Decoders: adaptive 1.85M")["verdict"] == claims.FAILS
    assert _find(rows, "abl2 with the earlier settings")["verdict"] == claims.NOT_MEASURED
    res["by_system"]["abl3"]["params"] = 1_000_000
    res["by_system"]["abl2"]["earlier_params"] = 5_300_000  # -1.9% from "5.4M"
    res["by_system"]["abl1"]["earlier_params"] = 3_000_000  # -30% from "4.31M"
    rows = claims.check(res, {})
    assert _find(rows, "fewest parameters")["verdict"] == claims.HOLDS
    assert _find(rows, "abl2 with the earlier settings")["verdict"] == claims.HOLDS
    assert _find(rows, "abl1 with the earlier settings")["verdict"] == claims.FAILS


def test_missing_measurements_are_not_measured_never_guessed():
    res = _results({"abl1": None, "abl2": None, "abl3": None})
    rows = claims.check(res, {})
    assert {r["verdict"] for r in rows} == {claims.NOT_MEASURED}
    assert all(r["measured"] == "-" for r in rows)


def test_pesq_ranges_depend_on_the_data_and_rankings_use_the_bootstrap():
    systems = ["abl1", "abl2", "abl3"]
    params = dict.fromkeys(systems, 2_000_000)
    pesq = {"abl1": 2.95, "abl2": 3.3, "abl3": 3.05}
    rng = np.random.default_rng(0)
    base = rng.uniform(2.0, 3.0, 40)
    per_utt = {
        "abl1": _utts(base),
        "abl2": _utts(base + 0.4 + rng.normal(0, 0.02, 40)),
        "abl3": _utts(base + 0.4 + rng.normal(0, 0.02, 40)),
    }
    # report.collect's shape: {system: [one {utterance: {metric: value}} per seed]}
    utts = {s: [{n: {"pesq": v} for n, v in u.items()}] for s, u in per_utt.items()}
    demo = claims.check(_results(params, demo=True, pesq=pesq), utts, n_boot=300)
    assert _find(demo, "abl1 PESQ")["verdict"] == claims.NOT_MEASURABLE
    vb = claims.check(_results(params, demo=False, pesq=pesq), utts, n_boot=300)
    lo, hi = CLAIMS["abl2"]["pesq"]
    assert not lo <= pesq["abl2"] <= hi
    assert _find(vb, "abl2 PESQ")["verdict"] == claims.FAILS
    assert _find(vb, "abl1 PESQ")["verdict"] == claims.HOLDS
    assert _find(vb, "Ranking: abl2 ≥ abl1 (PESQ)")["verdict"] == claims.HOLDS
    assert _find(vb, "Ranking: abl3 ≥ abl2 (PESQ)")["verdict"] == claims.NOT_SIGNIFICANT
    chain = _find(vb, "abl3 ≥ abl2 ≥ abl1")
    assert chain["verdict"] == claims.NOT_SIGNIFICANT
    assert "95% CI" in _find(vb, "Ranking: abl2 ≥ abl1 (PESQ)")["measured"]
    # Every ranking row says how many utterances its difference would need (80% power).
    for row in (_find(vb, "Ranking: abl2 ≥ abl1 (PESQ)"), _find(vb, "Ranking: abl3 ≥ abl2 (PESQ)")):
        need = row["n_needed"]
        assert need == claims.paired_n_needed(*(per_utt[s] for s in row["claimed"].split(" ≥ ")))
        assert f"about {need['n_needed']:,} utterances would make" in row["note"]
    assert (
        _find(vb, "Ranking: abl2 ≥ abl1 (PESQ)")["n_needed"]["n_needed"]
        < 40
        < (_find(vb, "Ranking: abl3 ≥ abl2 (PESQ)")["n_needed"]["n_needed"])
    )


def test_with_several_seeds_the_note_also_counts_seeds():
    systems = ["abl1", "abl2"]
    rng = np.random.default_rng(5)
    base = rng.uniform(2.0, 3.0, 20)
    # Three seeds; abl2's per-seed mean gain is 0.1, 0.2, 0.3 (sd 0.1 across seeds).
    utts = {
        "abl1": [{f"u{i}": {"pesq": v} for i, v in enumerate(base)} for _ in range(3)],
        "abl2": [
            {f"u{i}": {"pesq": v + g} for i, v in enumerate(base + rng.normal(0, 0.3, 20))}
            for g in (0.1, 0.2, 0.3)
        ],
    }
    res = _results(dict.fromkeys(systems, 2_000_000), demo=False)
    res["seeds"] = [0, 1, 2]
    row = _find(claims.check(res, utts, n_boot=100), "Ranking: abl2 ≥ abl1 (PESQ)")
    seed_means = {
        s: {i: np.mean([x["pesq"] for x in u.values()]) for i, u in enumerate(utts[s])}
        for s in systems
    }
    k = claims.paired_n_needed(seed_means["abl2"], seed_means["abl1"])["n_needed"]
    assert k is not None and f"(or about {k:,} seeds on this test set)" in row["note"]
    res["seeds"] = [0]  # one seed: nothing to say about seeds
    row = _find(claims.check(res, {s: u[:1] for s, u in utts.items()}, n_boot=100), "abl2 ≥ abl1")
    assert "seeds on this test set" not in row["note"] and "utterances would make" in row["note"]


def test_params_and_the_study_judge_the_size_claims_alike():
    from bsmamba import params

    rep = params.report(["bsrnn", "abl2", "abl3"], ["dim=16"])
    counts = {s: r["params"] for s, r in rep["by_preset"].items()}
    decoders = {s: r["params_by_component"]["decoder"] for s, r in rep["by_preset"].items()}
    rows = claims.check(_results(counts, decoders=decoders), {})
    study = {r["claim"]: r["verdict"] for r in rows}
    shared = [c for c in rep["claims"] if c["claim"] in study]
    assert len(shared) == len(rep["claims"]) >= 6  # every size claim of params, in the study too
    assert all(study[c["claim"]] == c["verdict"] for c in shared)
    assert {c["verdict"] for c in shared} == {claims.HOLDS, claims.FAILS}
