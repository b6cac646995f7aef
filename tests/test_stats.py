"""The study's statistics: summaries as `evaluate` writes them, means over seeds, pairs needed."""

import math

import numpy as np
import pytest

from bsmamba.schema import METRIC_KEYS
from bsmamba.study import stats


def _utts(values):
    return {f"u{i:03d}.wav": float(v) for i, v in enumerate(values)}


def test_summary_leaves_failures_out_and_counts_them():
    s = stats.summary([1.0, 2.0, math.nan, 4.0])
    assert s["count"] == 3 and s["failures"] == 1
    assert s["mean"] == pytest.approx(7 / 3) and s["std"] == pytest.approx(
        np.std([1, 2, 4], ddof=1)
    )
    assert stats.summary([3.0])["std"] is None and stats.summary([])["mean"] is None


def test_mean_std_is_over_seeds_of_utterance_means():
    def seed(a, b):
        return {"a": dict.fromkeys(METRIC_KEYS, a), "b": dict.fromkeys(METRIC_KEYS, b)}

    seeds = [seed(1.0, 3.0), seed(4.0, math.nan)]
    cells, over = stats.mean_std(seeds)
    assert over == "seeds"
    # seed means 2.0 and 4.0 (the failed one left out, and counted)
    assert cells["pesq"] == {"mean": 3.0, "std": pytest.approx(math.sqrt(2)), "n": 2, "failures": 1}
    one, over = stats.mean_std(seeds[:1])
    assert over == "utterances" and one["stoi"]["std"] == pytest.approx(math.sqrt(2))
    assert stats.utterance_means(seeds, "pesq") == {"a": 2.5, "b": 3.0}


def test_snr_groups_are_nominal_levels_else_5_db_bins():
    assert stats.snr_bin(7.9, [2.5, 7.5, 12.5]) == "7.5 dB"
    assert stats.snr_bin(7.9) == "5 to 10 dB" and stats.snr_bin(-0.1) == "-5 to 0 dB"
    seeds = [{"a": dict.fromkeys(METRIC_KEYS, 1.0), "b": dict.fromkeys(METRIC_KEYS, 3.0)}]
    groups = stats.by_snr(seeds, {"a": 1.0, "b": 11.0, "c": 12.0}, None)
    assert list(groups) == ["0 to 5 dB", "10 to 15 dB"]
    assert groups["10 to 15 dB"]["pesq"] == 3.0 and groups["10 to 15 dB"]["n_utterances"] == 1


def test_pairs_needed_for_significance_give_the_stated_power():
    # Paired differences with mean exactly 0.1 and sample std exactly 0.5.
    z = np.random.default_rng(3).normal(size=30)
    d = 0.1 + 0.5 * (z - z.mean()) / z.std(ddof=1)
    base = np.linspace(1.5, 3.0, 30)
    need = stats.paired_n_needed(_utts(base + d), _utts(base))
    assert need["n"] == 30
    assert need["mean_diff"] == pytest.approx(0.1) and need["sd_diff"] == pytest.approx(0.5)
    # ((1.959964 + 0.841621) * 0.5 / 0.1)^2 = 196.2 -> 197 pairs
    assert need["n_needed"] == 197
    # The sign does not matter; a smaller spread needs fewer pairs.
    assert stats.paired_n_needed(_utts(base), _utts(base + d))["n_needed"] == 197
    tight = stats.paired_n_needed(_utts(base + 0.1 + 0.5 * (d - 0.1)), _utts(base))
    assert tight["n_needed"] == 50  # (2.8016 * 0.25 / 0.1)^2 = 49.05 -> 50
    # At that size a two-sided 5% test of the same effect rejects about 80% of the time.
    rng = np.random.default_rng(4)
    n = need["n_needed"]
    sims = rng.normal(0.1, 0.5, size=(4000, n))
    t = sims.mean(1) / (sims.std(1, ddof=1) / np.sqrt(n))
    assert np.mean(np.abs(t) > 1.96) == pytest.approx(0.8, abs=0.03)
    # Nothing to estimate from: no difference at all, or fewer than 2 pairs.
    assert stats.paired_n_needed(_utts(base), _utts(base))["n_needed"] is None
    assert stats.paired_n_needed(_utts(base[:1] + 1), _utts(base[:1]))["n_needed"] is None
    assert stats.paired_n_needed({}, {})["n"] == 0
