"""Study figures (matplotlib, Agg backend, PNG) and a few enhanced examples per system.

``figures`` draws PESQ against parameters, PESQ against peak memory and the validation curve of
every run; ``examples`` copies the first few enhanced wavs of each system into the report folder
with a noisy / enhanced / clean spectrogram PNG beside each.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, works without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bsmamba import files  # noqa: E402
from bsmamba.study import records  # noqa: E402


def _save(fig, path: Path) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    files.atomic_write(path, lambda f: f.write(buf.getvalue()))
    return str(path)


def _scatter(results: dict, x_key: str, x_scale: float, x_label: str, title: str, path: Path):
    by = results["by_system"]
    pts = [
        (s, by[s][x_key] / x_scale, by[s]["metrics"]["pesq"])
        for s in results["systems"]
        if by[s].get(x_key) is not None
        and (by[s].get("metrics") or {}).get("pesq", {}).get("mean") is not None
    ]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for s, x, p in pts:
        ax.errorbar(x, p["mean"], yerr=p["std"] or 0, fmt="o", capsize=3)
        ax.annotate(s, (x, p["mean"]), textcoords="offset points", xytext=(5, 4))
    noisy = (results["noisy"].get("metrics") or {}).get("pesq", {}).get("mean")
    if noisy is not None:
        ax.axhline(noisy, color="grey", ls="--", lw=1, label="noisy input")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel("PESQ (WB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def validation_curve(train_record: dict) -> tuple[list, list, str, str] | None:
    """(steps, values, key, "step") of one run's validation curve: validation PESQ, or the
    validation loss where PESQ was never measured; from the train record's ``results``
    ``validation`` rows (bsmamba.train's history: epoch, step, val_loss, val_pesq, ...)."""
    hist = (train_record.get("results") or {}).get("validation") or []
    for key in ("val_pesq", "val_loss"):
        pts = [(h["step"], h[key]) for h in hist if _finite(h.get(key))]
        if pts:
            return [p[0] for p in pts], [p[1] for p in pts], key, "step"
    return None


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _noisy_validation_pesq(train_record: dict) -> list[float]:
    """[the noisy validation inputs' PESQ] as the run recorded it in its history, or []."""
    hist = (train_record.get("results") or {}).get("validation") or []
    vals = [h.get("val_pesq_noisy") for h in hist if isinstance(h, dict)]
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return vals[-1:]


def figures(results: dict, study_dir: Path) -> list[str]:
    """Write the study's PNGs under ``study_dir/plots``; return their paths relative to it."""
    out = study_dir / "plots"
    made = []
    shape = results["plan_shape"]
    at = f"batch {shape['batch_size']} x {shape['segment_s']:g} s"
    made.append(
        _scatter(
            results,
            "params",
            1e6,
            "parameters (M)",
            "PESQ vs parameters",
            out / "pesq_vs_params.png",
        )
    )
    made.append(
        _scatter(
            results,
            "peak_bytes",
            2**30,
            f"peak training memory (GiB, {at})",
            "PESQ vs peak memory",
            out / "pesq_vs_peak_memory.png",
        )
    )
    curves, noisy = [], []
    for s in results["systems"]:
        for seed in results["seeds"]:
            rdir = study_dir / s / f"s{seed}"
            rec = records.read(records.run_stage_path(rdir, "train"), [])
            c = validation_curve(rec) if rec.get("status") == records.DONE else None
            if c and c[0]:
                curves.append((f"{s}/s{seed}", *c))
                noisy += _noisy_validation_pesq(rec) if c[2] == "val_pesq" else []
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for label, x, y, _, _ in curves:
            ax.plot(x, y, marker="o", ms=3, label=label)
        if noisy:  # every run validates on the same items: one line (their mean, if seeds differ)
            level = sum(noisy) / len(noisy)
            ax.axhline(level, color="k", ls="--", lw=1, label=f"noisy input ({level:.2f})")
        ax.set_xlabel("optimizer step" if curves[0][4] == "step" else curves[0][4])
        key = curves[0][3].replace("/", "_").replace("valid_", "val_")
        ax.set_ylabel({"val_pesq": "validation PESQ", "val_loss": "validation loss"}.get(key, key))
        ax.set_title("validation curve per system", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        made.append(_save(fig, out / "validation_curves.png"))
    return [str(Path(p).relative_to(study_dir)) for p in made if p]


def _spectrogram_png(wavs: list[tuple[str, np.ndarray]], fs: int, path: Path) -> str:
    fig, axes = plt.subplots(len(wavs), 1, figsize=(6, 1.8 * len(wavs)), sharex=True)
    for ax, (title, x) in zip(np.atleast_1d(axes), wavs, strict=True):
        # (freq, frame) log-power, 32 ms Hann frames, 8 ms hop: the model's own STFT grid
        n_fft, hop = 512, 128
        if len(x) < n_fft:
            x = np.pad(x, (0, n_fft - len(x)))
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
        spec = 10 * np.log10(np.abs(np.fft.rfft(frames, axis=-1)).T ** 2 + 1e-10)
        dur = len(x) / fs
        ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            extent=(0, dur, 0, fs / 2000),
            cmap="magma",
            vmin=spec.max() - 80,
            vmax=spec.max(),
        )
        ax.set_ylabel("kHz")
        ax.set_title(title, fontsize=9)
    np.atleast_1d(axes)[-1].set_xlabel("time (s)")
    return _save(fig, path)


def examples(results: dict, study_dir: Path) -> list[dict[str, Any]]:
    """Copy up to ``study.examples`` enhanced wavs per system (first seed) into
    ``study_dir/audio/<system>/`` with a spectrogram PNG each; return their relative paths."""
    import soundfile as sf

    meta = records.read(study_dir / "study.json", [])
    n = int(meta.get("config", {}).get("study", {}).get("examples", 3))
    if n <= 0:
        return []
    clean_dir, noisy_dir = Path(meta["clean_dir"]), Path(meta["noisy_dir"])
    seed = results["seeds"][0]
    shutil.rmtree(study_dir / "audio", ignore_errors=True)  # report output only: rebuilt whole
    # Examples spread over the input SNRs (lowest to highest), not the first n by name.
    snr = records.read(study_dir / "test_snr.json", []).get("by_file", {})
    by_snr = sorted(snr, key=snr.get)
    picks = sorted({by_snr[round(i * (len(by_snr) - 1) / max(1, n - 1))] for i in range(n)})
    out = []
    for s in results["systems"]:
        enh = study_dir / s / f"s{seed}" / "enhanced"
        rec = records.read(records.run_stage_path(study_dir / s / f"s{seed}", "enhance"), [])
        if rec.get("status") != records.DONE:
            continue
        wavs = [enh / p for p in picks if (enh / p).exists()] or sorted(enh.glob("*.wav"))[:n]
        for wav in wavs:
            dst = study_dir / "audio" / s / wav.name
            files.atomic_write(dst, lambda f, w=wav: f.write(w.read_bytes()))
            x, fs = sf.read(str(wav), dtype="float32")
            panels = [("enhanced", x)]
            for title, d in (("noisy", noisy_dir), ("clean", clean_dir)):
                if (d / wav.name).exists():
                    y, _ = sf.read(str(d / wav.name), dtype="float32")
                    panels.append((title, y))
            panels.sort(key=lambda p: ("noisy", "enhanced", "clean").index(p[0]))
            png = _spectrogram_png(panels, fs, dst.with_suffix(".png"))
            out.append(
                {
                    "system": s,
                    "name": wav.name,
                    "wav": str(dst.relative_to(study_dir)),
                    "png": str(Path(png).relative_to(study_dir)),
                }
            )
    return out


__all__ = ["figures", "examples", "validation_curve"]
