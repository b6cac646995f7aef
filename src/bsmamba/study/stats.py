"""The statistics of the measurement side: summaries, means over seeds, the paired bootstrap.

Conventions (DECISIONS.md, "Metrics"): a value that is not finite is a failed measurement; it is
left out of a mean and counted. ``summary`` is what ``bsmamba evaluate`` writes per metric;
``mean_std`` is the study's cell (the mean over utterances per seed, then mean and sample std
across seeds; with one seed the std is across utterances). Utterance scores are
``{utterance name: {metric: value}}``, one such dict per seed.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from bsmamba.schema import METRIC_KEYS

Scores = dict[str, dict[str, float]]  # {utterance: {metric: value}} of one seed


def summary(values) -> dict[str, Any]:
    """``{mean, std, count, failures}`` of ``values``: std across them (ddof=1), NaN = failed."""
    arr = np.asarray(values, dtype=np.float64)
    ok = arr[np.isfinite(arr)]
    return {
        "mean": float(ok.mean()) if ok.size else None,
        "std": float(ok.std(ddof=1)) if ok.size > 1 else None,
        "count": int(ok.size),
        "failures": int(arr.size - ok.size),
    }


def mean_std(per_seed: list[Scores], keys=METRIC_KEYS) -> tuple[dict, str]:
    """``{metric: {mean, std, n, failures}}`` of the metrics ``keys`` and what the std is over
    ("seeds" or "utterances"); ``failures`` counts failed measurements over every seed."""
    out = {}
    over = "seeds" if len(per_seed) > 1 else "utterances"
    for k in keys:
        seed_vals = [np.array([u[k] for u in utts.values()], float) for utts in per_seed]
        failures = int(sum((~np.isfinite(v)).sum() for v in seed_vals))
        seed_vals = [v[np.isfinite(v)] for v in seed_vals]
        seed_vals = [v for v in seed_vals if v.size]
        if not seed_vals:
            out[k] = {"mean": None, "std": None, "n": 0, "failures": failures}
            continue
        # Over seeds: the spread of per-seed means; one seed: the spread over its utterances.
        s = summary([v.mean() for v in seed_vals] if over == "seeds" else seed_vals[0])
        out[k] = {"mean": s["mean"], "std": s["std"], "n": s["count"], "failures": failures}
    return out, over


def utterance_means(per_seed: list[Scores], metric: str) -> dict[str, float]:
    """Per-utterance ``metric`` averaged over seeds (the unit of the paired bootstrap)."""
    names = set.intersection(*(set(u) for u in per_seed)) if per_seed else set()
    out = {}
    for n in sorted(names):
        vals = np.array([u[n][metric] for u in per_seed], float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[n] = float(vals.mean())
    return out


# ----------------------------------------------------------------------------- SNR groups
def snr_bin(snr_db: float, levels: list[float] | None = None) -> str:
    """Label of the SNR group of an utterance: the nearest nominal level, else a 5 dB bin."""
    if levels:
        lv = min(levels, key=lambda x: abs(x - snr_db))
        return f"{lv:g} dB"
    lo = 5 * math.floor(snr_db / 5)
    return f"{lo:g} to {lo + 5:g} dB"


def by_snr(per_seed: list[Scores], snr: dict[str, float], levels) -> dict[str, dict]:
    """Per SNR group (``snr``: {utterance: dB}): every metric's mean over utterances and seeds,
    and ``n_utterances``; groups in rising SNR order."""
    groups: dict[str, list[str]] = {}
    for name, s in snr.items():
        groups.setdefault(snr_bin(s, levels), []).append(name)
    out = {}
    for label in sorted(groups, key=lambda g: float(g.split()[0])):
        names = groups[label]
        row: dict[str, Any] = {
            k: summary([u[n][k] for u in per_seed for n in names if n in u])["mean"]
            for k in METRIC_KEYS
        }
        row["n_utterances"] = sum(1 for n in names if any(n in u for u in per_seed))
        out[label] = row
    return out


# ----------------------------------------------------------------------------- paired tests
def _paired_diffs(a: dict[str, float], b: dict[str, float]) -> np.ndarray:
    names = sorted(set(a) & set(b))
    d = np.array([a[n] - b[n] for n in names], float)
    return d[np.isfinite(d)]


def paired_bootstrap(
    a: dict[str, float], b: dict[str, float], n_boot: int = 2000, seed: int = 0, level=0.95
) -> dict[str, Any]:
    """CI of mean(a - b) over the utterances both score, resampling utterances with replacement.

    ``a``, ``b``: ``{utterance: score}``. Returns ``{mean_diff, ci_low, ci_high, n, n_boot}``;
    the interval is the percentile interval at ``level``.
    """
    d = _paired_diffs(a, b)
    if d.size == 0:
        return {"mean_diff": None, "ci_low": None, "ci_high": None, "n": 0, "n_boot": n_boot}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))  # (resample, utterance)
    boot = d[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return {
        "mean_diff": float(d.mean()),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n": int(d.size),
        "n_boot": n_boot,
    }


def paired_n_needed(
    a: dict[str, float], b: dict[str, float], power: float = 0.8, alpha: float = 0.05
) -> dict[str, Any]:
    """Pairs needed for a paired difference of the observed size to be significant.

    ``a``, ``b``: ``{utterance (or seed): score}``, paired by key. With the observed mean ``m``
    and sample std ``sd`` of ``a - b``, the normal-approximation size of a two-sided paired test
    at level ``alpha`` with ``power``: ``n = ((z_{1-alpha/2} + z_{power}) * sd / |m|)^2``, rounded
    up. Returns ``{n_needed, mean_diff, sd_diff, n, power, alpha}``; ``n_needed`` is None when it
    cannot be estimated (fewer than 2 pairs, or no difference at all).
    """
    d = _paired_diffs(a, b)
    out = {"n_needed": None, "mean_diff": None, "sd_diff": None, "n": int(d.size)}
    out.update(power=power, alpha=alpha)
    if d.size < 2:
        return out
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    out.update(mean_diff=mean, sd_diff=sd)
    if mean == 0.0:
        return out
    z = NormalDist().inv_cdf
    out["n_needed"] = max(2, math.ceil(((z(1 - alpha / 2) + z(power)) * sd / abs(mean)) ** 2))
    return out
