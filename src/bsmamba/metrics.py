"""The standard speech-enhancement metrics: PESQ, STOI, SI-SDR and the composite measures.

``composite`` follows Loizou's MATLAB ``composite.m`` (Hu & Loizou 2008) exactly: float input
in [-1, 1] plus eps, 30 ms Hann-like frames with a quarter-frame hop, WSS over 25 fixed critical
bands, LLR from order-10 (order-16 at >= 10 kHz) LPC, segSNR clipped to [-10, 35] dB, WSS and LLR
averaged over the best 95 % of frames, and

    CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS
    CBAK = 1.634 + 0.478 PESQ - 0.007 WSS + 0.063 segSNR
    COVL = 1.594 + 0.805 PESQ - 0.512 LLR - 0.007 WSS          each clipped to [1, 5].

The PESQ inside is raw P.862 narrow-band at 8 kHz (as ``composite.m``) and wide-band MOS-LQO at
16 kHz (as the VoiceBank+DEMAND literature). ``convention="cmgan"`` reproduces the widely copied
Python scripts (CMGAN, MP-SENet, SEMamba) that divide the audio by 32768 before WSS; it inflates
CSIG/CBAK/COVL and exists only to compare with papers that used it.

Every measure is vectorised over frames (NumPy); nothing loops over frames in Python.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bsmamba.schema import METRIC_KEYS

EPS = np.finfo(np.float64).eps  # MATLAB's eps
CONVENTIONS = ("matlab", "cmgan")

# composite.m's 25 critical bands (Hz): centres and bandwidths.
_CENTRES = np.array(
    [50, 120, 190, 260, 330, 400, 470, 540, 617.372, 703.378, 798.717, 904.128, 1020.38,
     1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08, 2446.71, 2701.97,
     2978.04, 3276.17, 3597.63]
)  # fmt: skip
_BANDWIDTHS = np.array(
    [70, 70, 70, 70, 70, 70, 70, 77.3724, 86.0056, 95.3398, 105.411, 116.256, 127.914,
     140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631, 255.255, 276.072,
     298.126, 321.465, 346.136]
)  # fmt: skip


class MetricError(ValueError):
    """A metric that cannot be computed for this input (silence, too short, ...)."""


def _as_pair(ref, deg, lengths: str = "equal") -> tuple[np.ndarray, np.ndarray]:
    """float64 copies; ``lengths``: "equal" (mismatch is an error), "trim" (cut), "any"."""
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    deg = np.asarray(deg, dtype=np.float64).reshape(-1)
    if len(ref) != len(deg) and lengths != "any":
        if lengths == "equal":
            raise MetricError(f"length mismatch: reference {len(ref)}, degraded {len(deg)}")
        n = min(len(ref), len(deg))
        ref, deg = ref[:n], deg[:n]
    if not (np.isfinite(ref).all() and np.isfinite(deg).all()):
        raise MetricError("NaN or Inf samples")
    return ref, deg


# ------------------------------------------------------------------------------ PESQ / STOI


def pesq(ref, deg, fs: int = 16000, raw: bool = False) -> float:
    """PESQ of ``deg`` against ``ref`` (float (S,) in [-1, 1]): ITU-T P.862 via ``pesq``.

    16 kHz: wide-band MOS-LQO (P.862.2). 8 kHz: narrow-band MOS-LQO (P.862.1), or the raw P.862
    score with ``raw=True`` (what ``composite.m`` uses). Raises :class:`MetricError` on input
    PESQ rejects (silence, under ~0.25 s). Lengths may differ (P.862 aligns the signals).
    """
    from pesq import pesq as _pesq

    ref, deg = _as_pair(ref, deg, lengths="any")
    if fs not in (8000, 16000):
        raise MetricError(f"PESQ needs 8000 or 16000 Hz, got {fs}")
    # P.862 finds no utterance in silence; the C code then fails with "No utterances detected"
    # (reference) or "cannot convert float NaN to integer" (degraded). Say what happened.
    for name, x in (("reference", ref), ("degraded (enhanced) signal", deg)):
        if not np.any(x):
            raise MetricError(f"PESQ found no speech: the {name} is silent (all zeros)")
    try:
        with np.errstate(all="ignore"):
            mos = float(_pesq(fs, ref, deg, "wb" if fs == 16000 else "nb"))
    except Exception as e:  # the C code raises several types, some of them plain ValueError
        if "No utterances" in str(e):
            raise MetricError("PESQ found no speech in the reference") from None
        if "NaN" in str(e):
            raise MetricError("PESQ found no speech in the degraded (enhanced) signal") from None
        raise MetricError(f"PESQ failed: {type(e).__name__}: {e}".strip(": ")) from None
    if raw and fs == 8000:
        return _p862_1_inverse(mos)
    return mos


def _p862_1_inverse(mos_lqo: float) -> float:
    """Raw P.862 score from a narrow-band MOS-LQO (inverse of the P.862.1 mapping)."""
    return (4.6607 - math.log(4.0 / (mos_lqo - 0.999) - 1.0)) / 1.4945


def stoi(ref, deg, fs: int = 16000, extended: bool = False) -> float:
    """Short-time objective intelligibility in [0, 1] (pystoi; ``extended`` = ESTOI)."""
    from pystoi import stoi as _stoi

    ref, deg = _as_pair(ref, deg)
    if not np.any(ref):
        raise MetricError("STOI undefined: the reference is silent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(ref, deg, fs, extended=extended))
    # pystoi only warns (and returns ~1e-5) when silence leaves too few frames: make it an error.
    for w in caught:
        if "frames" in str(w.message):
            raise MetricError(f"STOI undefined: {w.message}")
    return value


def si_sdr(ref, deg) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean first."""
    ref, deg = _as_pair(ref, deg)
    ref, deg = ref - ref.mean(), deg - deg.mean()
    energy = np.sum(ref * ref)  # sums, not np.dot: no BLAS threads for a 1-D product
    if energy <= 0:
        raise MetricError("SI-SDR undefined: the reference is silent")
    target = np.sum(deg * ref) / energy * ref
    noise = deg - target
    return float(10 * np.log10(np.sum(target**2) / (np.sum(noise**2) + EPS) + EPS))


# ------------------------------------------------------------------------- composite.m parts


def _frames(x: np.ndarray, fs: int) -> np.ndarray:
    """composite.m framing -> (num_frames, W) windowed frames; W = round(0.03 fs), hop W // 4."""
    w = round(0.030 * fs)
    hop = w // 4
    n = int(np.floor((len(x) - w) / hop))  # MATLAB: 1:(L/hop - W/hop)
    if n < 1:
        raise MetricError(f"signal of {len(x)} samples is shorter than one {w}-sample frame")
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, w + 1) / (w + 1)))
    return sliding_window_view(x, w)[: n * hop : hop][:n] * window


def _crit_filters(fs: int, n_fft: int) -> np.ndarray:
    """(25, n_fft/2) Gaussian critical-band weights of composite.m's ``wss``."""
    half = n_fft // 2
    f0 = np.floor(_CENTRES / (fs / 2) * half)[:, None]
    bw = (_BANDWIDTHS / (fs / 2) * half)[:, None]
    norm = np.log(_BANDWIDTHS[0]) - np.log(_BANDWIDTHS)[:, None]
    j = np.arange(half)[None, :]
    filt = np.exp(-11 * ((j - f0) / bw) ** 2 + norm)
    return filt * (filt > np.exp(-30.0 / (2.0 * 2.303)))  # cut below the -30 dB point


def _n_fft(w: int) -> int:
    return 2 ** math.ceil(math.log2(2 * w))


def _power(frames: np.ndarray) -> np.ndarray:
    """(F, W) frames -> (F, n_fft/2 + 1) power spectra, n_fft = 2^ceil(log2(2W))."""
    return np.abs(np.fft.rfft(frames, _n_fft(frames.shape[1]), axis=1)) ** 2


def _wss(p_ref: np.ndarray, p_deg: np.ndarray, fs: int) -> np.ndarray:
    """Weighted spectral slope distance per frame (Klatt 1982, composite.m's ``wss``) from
    (F, n_fft/2 + 1) power spectra."""
    n_fft = 2 * (p_ref.shape[1] - 1)
    filt = _crit_filters(fs, n_fft)  # (25, n_fft/2)

    def band_db(power):  # (F, n_fft/2 + 1) -> (F, 25) band energies in dB
        return 10 * np.log10(np.maximum(power[:, : n_fft // 2] @ filt.T, 1e-10))

    er, ed = band_db(p_ref), band_db(p_deg)
    sr, sd = np.diff(er, axis=1), np.diff(ed, axis=1)  # (F, 24) spectral slopes
    k_max, k_locmax = 20.0, 1.0

    def weights(e, s):
        peak = _local_peaks(e, s)
        w_max = k_max / (k_max + e.max(axis=1, keepdims=True) - e[:, :-1])
        w_loc = k_locmax / (k_locmax + peak - e[:, :-1])
        return w_max * w_loc

    wt = (weights(er, sr) + weights(ed, sd)) / 2
    return (wt * (sr - sd) ** 2).sum(axis=1) / wt.sum(axis=1)


def _local_peaks(e: np.ndarray, s: np.ndarray) -> np.ndarray:
    """composite.m's nearest local peak of band energies ``e`` (F, 25) for each slope ``s`` (F, 24).

    Rising slope: search right to the first non-rising slope n (or the end) and take
    energy(n - 1) in MATLAB's 1-based indexing; falling: search left to the last rising slope n
    (or 0) and take energy(n + 1). Running min/max over index arrays instead of loops.
    """
    f, m = s.shape  # m = 24 slopes
    idx = np.broadcast_to(np.arange(m), (f, m))
    # 0-based index of the first slope j >= i that does not rise (m if none) ...
    stop = np.where(s <= 0, idx, m)
    first_flat = np.minimum.accumulate(stop[:, ::-1], axis=1)[:, ::-1]
    # ... and of the last slope j <= i that rises (-1 if none).
    rise = np.where(s > 0, idx, -1)
    last_rise = np.maximum.accumulate(rise, axis=1)
    # MATLAB reads energy(n - 1) resp. energy(n + 1) at 1-based n = j + 1: 0-based e[j - 1]
    # (one band left of the true peak: a quirk kept for exactness) and e[j + 1].
    pick = np.where(s > 0, first_flat - 1, last_rise + 1)
    return np.take_along_axis(e, pick, axis=1)


def _lpc(r: np.ndarray) -> np.ndarray:
    """LPC polynomial [1, -a] (F, P+1) from autocorrelations r (F, P+1): composite.m's ``lpcoeff``.

    Levinson-Durbin, vectorised over frames (the loop runs over the model order only).
    """
    f, order = r.shape[0], r.shape[1] - 1
    a = np.zeros((f, order))
    err = r[:, 0].copy()
    for i in range(order):
        k = (r[:, i + 1] - (a[:, :i] * r[:, i:0:-1]).sum(axis=1)) / err
        if i > 0:
            a[:, :i] = a[:, :i] - k[:, None] * a[:, i - 1 :: -1][:, :i]
        a[:, i] = k
        err = (1 - k * k) * err
    return np.concatenate([np.ones((f, 1)), -a], axis=1)


def _autocorr(frames: np.ndarray, order: int) -> np.ndarray:
    """(F, W) -> (F, order + 1) autocorrelation at lags 0..order (einsum: no temporaries)."""
    w = frames.shape[1]
    return np.stack(
        [np.einsum("fw,fw->f", frames[:, : w - k], frames[:, k:]) for k in range(order + 1)], 1
    )


def _llr(f_ref: np.ndarray, f_deg: np.ndarray, fs: int) -> np.ndarray:
    """Log-likelihood ratio per frame (composite.m's ``llr``; LPC order 10, 16 at >= 10 kHz)."""
    order = 10 if fs < 10000 else 16
    r_ref = _autocorr(f_ref, order)
    a_ref, a_deg = _lpc(r_ref), _lpc(_autocorr(f_deg, order))
    lag = np.abs(np.arange(order + 1)[:, None] - np.arange(order + 1)[None, :])
    toeplitz = r_ref[:, lag]  # (F, P+1, P+1)
    num = np.einsum("fi,fij,fj->f", a_deg, toeplitz, a_deg)
    den = np.einsum("fi,fij,fj->f", a_ref, toeplitz, a_ref)
    return np.log(num / den)


def segsnr_frames(ref: np.ndarray, deg: np.ndarray, fs: int) -> np.ndarray:
    """Segmental SNR per frame in dB, clipped to [-10, 35] (composite.m's ``snr``)."""
    return _segsnr(_frames(ref, fs), _frames(deg, fs))


def _segsnr(fr: np.ndarray, fd: np.ndarray) -> np.ndarray:
    signal = (fr**2).sum(axis=1)
    noise = ((fr - fd) ** 2).sum(axis=1)
    return np.clip(10 * np.log10(signal / (noise + EPS) + EPS), -10, 35)


def _best(values: np.ndarray, alpha: float = 0.95) -> float:
    """Mean of the smallest round(alpha * N) values (composite.m drops the worst 5 %)."""
    return float(np.sort(values)[: round(len(values) * alpha)].mean())


def composite(ref, deg, fs: int = 16000, convention: str = "matlab", pesq_score=None) -> dict:
    """CSIG, CBAK, COVL and their parts for float signals (S,) in [-1, 1] at ``fs`` Hz.

    Returns ``{"csig", "cbak", "covl", "llr", "wss", "ssnr", "pesq"}`` where ``pesq`` is the
    score used inside (raw NB at 8 kHz, WB MOS-LQO at 16 kHz). Lengths are cut to the shorter
    signal, as ``composite.m`` does. ``convention``: ``"matlab"`` (default, exact) or
    ``"cmgan"`` (audio / 32768 before WSS, as CMGAN-derived scripts). ``pesq_score`` reuses
    an already computed PESQ of the same kind.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
    # composite.m scores PESQ on the files as they are, the rest on the cut, eps-shifted copies.
    p = pesq(ref, deg, fs, raw=True) if pesq_score is None else float(pesq_score)
    ref, deg = _as_pair(ref, deg, lengths="trim")
    ref, deg = ref + EPS, deg + EPS
    f_ref, f_deg = _frames(ref, fs), _frames(deg, fs)
    p_ref, p_deg = _power(f_ref), _power(f_deg)
    # cmgan: audio / 32768 before WSS = power / 32768^2 (a power of two: bit-identical)
    gain = 32768.0**-2 if convention == "cmgan" else 1.0
    wss = _best(_wss(p_ref * gain, p_deg * gain, fs))
    llr = _best(_llr(f_ref, f_deg, fs))
    ssnr = float(_segsnr(f_ref, f_deg).mean())
    csig = 3.093 - 1.029 * llr + 0.603 * p - 0.009 * wss
    cbak = 1.634 + 0.478 * p - 0.007 * wss + 0.063 * ssnr
    covl = 1.594 + 0.805 * p - 0.512 * llr - 0.007 * wss
    clip = lambda v: float(min(5.0, max(1.0, v)))
    return {
        "csig": clip(csig),
        "cbak": clip(cbak),
        "covl": clip(covl),
        "llr": llr,
        "wss": wss,
        "ssnr": ssnr,
        "pesq": p,
    }


# ------------------------------------------------------------------------------ all at once


def score(ref, deg, fs: int = 16000, convention: str = "matlab", errors: dict | None = None):
    """All metrics of one pair as ``{pesq, csig, cbak, covl, ssnr, stoi, si_sdr}`` (floats).

    ``pesq`` is WB MOS-LQO at 16 kHz, NB MOS-LQO at 8 kHz. A metric that cannot be computed
    (e.g. PESQ on silence) is NaN, never an exception: its message goes into ``errors``
    (metric -> message) when given, else into a warning. A length mismatch or NaN input makes
    every metric NaN.
    """
    out = dict.fromkeys(METRIC_KEYS, float("nan"))
    msgs: dict[str, str] = {}
    try:
        ref, deg = _as_pair(ref, deg)
    except MetricError as e:
        msgs = dict.fromkeys(METRIC_KEYS, str(e))
    else:
        try:
            mos = pesq(ref, deg, fs)
            out["pesq"] = mos
        except MetricError as e:
            msgs["pesq"] = str(e)
        inner = None if "pesq" in msgs else (_p862_1_inverse(mos) if fs == 8000 else mos)
        if inner is None:
            for k in ("csig", "cbak", "covl"):
                msgs[k] = "needs PESQ"  # the reason is pesq's message, once
        parts = {
            "stoi": lambda: stoi(ref, deg, fs),
            "si_sdr": lambda: si_sdr(ref, deg),
            # without a PESQ score only segSNR of the composite can be given
            "ssnr": lambda: float(segsnr_frames(ref + EPS, deg + EPS, fs).mean()),
        }
        if inner is not None:
            parts["composite"] = lambda: composite(ref, deg, fs, convention, pesq_score=inner)
            del parts["ssnr"]
        for key, fn in parts.items():
            try:
                with np.errstate(all="ignore"):
                    value = fn()
            except MetricError as e:
                for k in ("csig", "cbak", "covl", "ssnr") if key == "composite" else (key,):
                    msgs.setdefault(k, str(e))
                continue
            if key == "composite":
                out.update({k: value[k] for k in ("csig", "cbak", "covl", "ssnr")})
            else:
                out[key] = value
    for k in [k for k in out if k not in msgs and not math.isfinite(out[k])]:
        msgs[k] = "not finite (silent or constant input?)"
        out[k] = float("nan")
    if msgs:
        if errors is not None:
            errors.update(msgs)
        else:
            warnings.warn("; ".join(f"{k}: {v}" for k, v in msgs.items()), stacklevel=2)
    return out
