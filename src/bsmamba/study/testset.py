"""The scored test set of a study: the data folder, the (optionally cut) test pairs and
their input SNRs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from bsmamba import files


def test_dirs(cfg: DictConfig, root: Path, sdir: Path) -> tuple[Path, Path]:
    """(clean_dir, noisy_dir) of the scored test set; a sorted subset copy if test_limit > 0."""
    clean, noisy = root / "clean_testset_wav", root / "noisy_testset_wav"
    for d in (clean, noisy):
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is missing; is {root} the output of prepare-voicebank?")
    if cfg.study.test_limit <= 0:
        return clean, noisy
    names = sorted(p.name for p in noisy.glob("*.wav"))[: cfg.study.test_limit]
    sub_clean, sub_noisy = sdir / "testset" / "clean", sdir / "testset" / "noisy"
    for name in names:
        for src, dst in ((clean, sub_clean), (noisy, sub_noisy)):
            if not (dst / name).exists():
                dst.mkdir(parents=True, exist_ok=True)
                files.atomic_write(dst / name, lambda f, s=src / name: f.write(s.read_bytes()))
    return sub_clean, sub_noisy


def input_snr(clean_dir: Path, noisy_dir: Path) -> dict[str, float]:
    """Input SNR in dB of every test pair: 10 log10(|clean|^2 / |noisy - clean|^2)."""
    import soundfile as sf

    out = {}
    for p in sorted(noisy_dir.glob("*.wav")):
        n, _ = sf.read(str(p), dtype="float64")
        c, _ = sf.read(str(clean_dir / p.name), dtype="float64")
        m = min(len(n), len(c))
        noise = np.sum((n[:m] - c[:m]) ** 2)
        out[p.name] = float(10 * np.log10(np.sum(c[:m] ** 2) / max(noise, 1e-20)))
    return out


def resolve_data(cfg: DictConfig) -> Path:
    if not cfg.data.path:
        raise ValueError(
            f"the {cfg.study.recipe!r} recipe needs --data PATH: the output folder of "
            "`bsmamba prepare-voicebank` (see the README for how to get VoiceBank+DEMAND)"
        )
    from bsmamba import data

    return Path(data.resolve(cfg.data.path))
