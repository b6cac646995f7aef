"""Metrics against published and golden values, identity input and silence."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba import metrics
from bsmamba.schema import METRIC_KEYS

DATA = Path(__file__).parent / "data"


def _int16(name):
    return sf.read(DATA / name, dtype="int16")[0] / 32768.0


@pytest.fixture(scope="module")
def noizeus():
    return _int16("sp09.wav"), _int16("enhanced_logmmse.wav")  # 8 kHz, different lengths


@pytest.fixture(scope="module")
def arctic():
    clean = _int16("arctic_a0007.wav")
    return clean, clean + 0.3 * _int16("arctic_a0009.wav")


def test_noizeus_matches_published_composite_m(noizeus):
    # The example printed in Loizou's composite.m (MATLAB), NOIZEUS sp09 + logMMSE, 8 kHz.
    c = metrics.composite(*noizeus, fs=8000)
    assert c["llr"] == pytest.approx(0.681368, abs=1e-6)
    assert c["ssnr"] == pytest.approx(3.991727, abs=1e-6)
    assert c["wss"] == pytest.approx(49.671978, abs=1e-6)
    assert c["pesq"] == pytest.approx(2.255732, abs=1e-5)  # raw P.862 (inverse P.862.1)
    assert c["csig"] == pytest.approx(3.3050, abs=5e-5)
    assert c["cbak"] == pytest.approx(2.6160, abs=5e-5)
    assert c["covl"] == pytest.approx(2.7133, abs=5e-5)
    assert metrics.pesq(*noizeus, fs=8000) == pytest.approx(1.862744, abs=1e-5)  # MOS-LQO


def test_arctic_golden_pair(arctic):
    c = metrics.composite(*arctic, fs=16000)
    for key, want in dict(wss=22.8429, llr=0.3504, ssnr=11.3866, pesq=1.4418).items():
        assert c[key] == pytest.approx(want, abs=1e-4), key
    for key, want in dict(csig=3.3963, cbak=2.8806, covl=2.4153).items():
        assert c[key] == pytest.approx(want, abs=1e-4), key
    assert metrics.stoi(*arctic, fs=16000) == pytest.approx(0.8865, abs=1e-4)
    legacy = metrics.composite(*arctic, fs=16000, convention="cmgan")
    assert legacy["wss"] == pytest.approx(17.2933, abs=1e-4)
    for key, want in dict(csig=3.4462, cbak=2.9194, covl=2.4542).items():
        assert legacy[key] == pytest.approx(want, abs=1e-4), key
    with pytest.raises(ValueError, match="valid: matlab, cmgan"):
        metrics.composite(*arctic, convention="pysepm")


def test_score_keys_and_values(arctic):
    s = metrics.score(*arctic)
    assert tuple(s) == METRIC_KEYS
    assert s["pesq"] == pytest.approx(1.4418, abs=1e-4) and s["csig"] == pytest.approx(3.3963, 1e-4)
    # SI-SDR of clean + 0.3 * other: the interference is nearly orthogonal to the target.
    clean, deg = arctic
    expected = 10 * np.log10(np.sum(clean**2) / np.sum((deg - clean) ** 2))
    assert s["si_sdr"] == pytest.approx(expected, abs=0.2)


def test_identity_is_perfect(arctic):
    clean = arctic[0]
    s = metrics.score(clean, clean)
    assert s["pesq"] == pytest.approx(4.644, abs=1e-3)
    assert s["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert s["csig"] == s["cbak"] == s["covl"] == 5.0 and s["ssnr"] == 35.0
    assert s["si_sdr"] > 100


def test_silence_gives_nan_and_a_reason_not_a_crash(arctic):
    silent = np.zeros(32000)
    errors = {}
    s = metrics.score(silent, silent, errors=errors)
    assert np.isnan(s["pesq"]) and np.isnan(s["csig"]) and np.isnan(s["stoi"])
    assert "PESQ" in errors["pesq"] and "silent" in errors["stoi"]
    with pytest.raises(metrics.MetricError):
        metrics.pesq(silent, silent)
    with pytest.warns(UserWarning, match="pesq"):  # no errors dict: a warning instead
        metrics.score(arctic[0], np.zeros_like(arctic[0]))


def test_length_mismatch_and_nan(arctic):
    clean, deg = arctic
    errors = {}
    s = metrics.score(clean, deg[:-10], errors=errors)
    assert all(np.isnan(v) for v in s.values()) and "length mismatch" in errors["pesq"]
    bad = deg.copy()
    bad[5] = np.inf
    errors = {}
    metrics.score(clean, bad, errors=errors)
    assert "NaN or Inf" in errors["stoi"]
