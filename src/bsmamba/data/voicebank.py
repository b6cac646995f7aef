"""VoiceBank+DEMAND at 16 kHz: the folder layout, its datasets, and ``prepare-voicebank``.

Layout (what ``bsmamba prepare-voicebank SRC DST`` writes and the demo set imitates)::

    DST/clean_trainset_28spk_wav/p226_001.wav   16 kHz mono; speaker id = prefix before "_"
        noisy_trainset_28spk_wav/p226_001.wav   same name = the clean file's noisy twin
        clean_testset_wav/p232_001.wav          824 pairs, speakers p232 and p257
        noisy_testset_wav/p232_001.wav
        manifest.json                           file, duration, sha256, resampler + version

The validation split holds out whole training speakers (p226 and p287 by default); the test set
is never used for model selection.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bsmamba.data import TEST_DIRS, TRAIN_DIRS, audio, manifest_snrs, segments

FS = 16000
LAYOUT = TRAIN_DIRS + TEST_DIRS
VALID_SPEAKERS = ("p226", "p287")
SPLITS = ("train", "valid")


def speaker(name: str) -> str:
    """Speaker id of a file name: the prefix before the first ``_`` (``p226_001.wav`` -> p226)."""
    return Path(name).name.split("_", 1)[0]


def read_manifest(root: str | Path) -> dict:
    """The ``manifest.json`` of a prepared folder ({} if it has none)."""
    path = Path(root) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def snr_by_name(root: str | Path, subset: str = "test") -> dict[str, float]:
    """File name -> mixture SNR (dB) in ``subset`` ("train"/"test"), where the manifest has it."""
    return manifest_snrs(Path(root) / (TEST_DIRS if subset == "test" else TRAIN_DIRS)[1])


def check_root(root: str | Path) -> Path:
    """Check that ``root`` is a prepared 16 kHz folder; errors say how to make one."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder; pass --data demo or the output folder of "
            "`bsmamba prepare-voicebank SRC DST`"
        )
    missing = [d for d in LAYOUT if not (root / d).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{root}: not a prepared VoiceBank+DEMAND folder (missing {', '.join(missing)}); "
            "run `bsmamba prepare-voicebank SRC DST` on the 48 kHz release and pass DST"
        )
    if not (root / "manifest.json").is_file():
        first = next(iter(sorted((root / TEST_DIRS[0]).glob("*.wav"))), None)
        rate = audio.sf.info(str(first)).samplerate if first else None
        hint = f" (its files are at {rate} Hz: the raw release)" if rate and rate != FS else ""
        raise ValueError(
            f"{root}: no manifest.json{hint}; this is not `prepare-voicebank` output. Run "
            f"`bsmamba prepare-voicebank {root} DST` and pass DST as --data"
        )
    return root


def _pairs(root: Path, dirs: tuple[str, str]) -> list[tuple[str, Path, Path]]:
    """(name, noisy, clean) for every clean file; a missing noisy twin is an error."""
    clean_dir, noisy_dir = root / dirs[0], root / dirs[1]
    out = []
    for clean in sorted(clean_dir.glob("*.wav")):
        noisy = noisy_dir / clean.name
        if not noisy.is_file():
            raise FileNotFoundError(f"{clean}: its noisy twin {noisy} is missing")
        out.append((clean.name, noisy, clean))
    if not out:
        raise FileNotFoundError(f"{clean_dir}: no .wav files")
    return out


class TrainSet(Dataset):
    """Training or validation pairs as ``(noisy, clean)`` float32 tensors ``(S,)``.

    ``S = segment_s * 16000``. ``split="train"``: a random crop per access (torch's global RNG,
    so ``lightning.seed_everything`` and DataLoader worker seeding make it reproducible);
    utterances shorter than S are tiled (see :mod:`bsmamba.data.segments`).
    ``split="valid"``: the held-out speakers, one fixed crop per utterance (from ``seed``).
    ``valid_speakers=None`` (or ``()``) means the dataset's own choice: the manifest's
    ``valid_speakers`` (VoiceBank: p226, p287; demo set: cards).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        segment_s: float = 2.0,
        valid_speakers: tuple[str, ...] | list[str] | None = VALID_SPEAKERS,
        seed: int = 0,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        root = Path(root)
        pairs = _pairs(root, TRAIN_DIRS)
        present = sorted({speaker(n) for n, _, _ in pairs})
        declared = tuple(read_manifest(root).get("valid_speakers") or VALID_SPEAKERS)
        held = tuple(valid_speakers or declared)
        if not set(held) & set(present) and tuple(held) == VALID_SPEAKERS:
            held = declared  # the VoiceBank default on another dataset means "its default"
        if not set(held) & set(present):
            raise ValueError(
                f"valid_speakers {list(held)} not found in {root / TRAIN_DIRS[0]}; "
                f"speakers there: {', '.join(present)}"
            )
        keep = (lambda s: s in held) if split == "valid" else (lambda s: s not in held)
        self.pairs = [p for p in pairs if keep(speaker(p[0]))]
        if not self.pairs:
            raise ValueError(f"split {split!r} of {root} is empty (valid_speakers={list(held)})")
        self.root, self.split, self.valid_speakers = root, split, held
        self.length = int(round(segment_s * FS))
        self.seed = seed
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # Small sets (the demo) are kept in memory; VoiceBank is read per access.
        self._use_cache = len(self.pairs) <= 2000

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i in self._cache:
            return self._cache[i]
        name, noisy_path, clean_path = self.pairs[i]
        noisy, clean = audio.read(noisy_path), audio.read(clean_path)
        if len(noisy) != len(clean):
            raise ValueError(f"{noisy_path}: {len(noisy)} samples, its clean twin {len(clean)}")
        if self._use_cache:
            self._cache[i] = (noisy, clean)
        return noisy, clean

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, clean = self._load(i)
        n = segments.num_starts(len(noisy), self.length)
        if self.split == "train":
            start = int(torch.randint(n, ()).item())
        else:
            start = int(np.random.default_rng((self.seed, i)).integers(n))
        noisy, clean = segments.crop_pair(noisy, clean, self.length, start)
        return torch.from_numpy(noisy.copy()), torch.from_numpy(clean.copy())


class TestSet(Dataset):
    """The test pairs, full length: items ``(name, noisy (S,), clean (S,))`` float32 tensors."""

    __test__ = False  # not a pytest class

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.pairs = _pairs(self.root, TEST_DIRS)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        name, noisy_path, clean_path = self.pairs[i]
        noisy, clean = audio.read(noisy_path), audio.read(clean_path)
        return name, torch.from_numpy(noisy), torch.from_numpy(clean)


# ---------------------------------------------------------------- bsmamba prepare-voicebank


def _snr_logs(src: Path) -> dict[str, tuple[str, float]]:
    """name -> (noise, snr_db) from the release's logfiles/*.txt ("p232_001 bus 7.5"), if any."""
    out = {}
    for log in sorted(src.glob("logfiles/*.txt")):
        for line in log.read_text(errors="replace").splitlines():
            parts = line.split()
            try:
                out[parts[0] + ".wav"] = (parts[1], float(parts[-1]))
            except (IndexError, ValueError):
                continue
    return out


def prepare(src: str | Path, dst: str | Path, workers: int = 2) -> dict:
    """Resample the 48 kHz release once to 16 kHz (soxr HQ) into ``dst`` + ``manifest.json``.

    Checks every noisy file has its clean twin (and back) before writing anything. Rerunnable:
    finished files (atomic writes, so an existing file is complete) are skipped, and the
    manifest is rewritten last. Returns a summary dict (files, resampled, skipped).
    """
    import hashlib
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import soxr

    from bsmamba import files, schema

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    missing = [d for d in LAYOUT if not (src / d).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{src}: missing {', '.join(missing)}; SRC must hold the four folders of the "
            "VoiceBank+DEMAND release (clean/noisy trainset_28spk_wav, clean/noisy testset_wav)"
        )
    names = {d: sorted(p.name for p in (src / d).glob("*.wav")) for d in LAYOUT}
    for clean_d, noisy_d in (TRAIN_DIRS, TEST_DIRS):
        lonely = sorted(set(names[noisy_d]) ^ set(names[clean_d]))
        if lonely:
            raise ValueError(
                f"{src}: {len(lonely)} file(s) without their twin between {clean_d} and "
                f"{noisy_d}, e.g. {', '.join(lonely[:5])}; re-download or remove them"
            )
    for stale in dst.glob("*/.*.tmp"):  # temp files of a killed run (writes are atomic)
        stale.unlink()
    todo = [(d, n) for d in LAYOUT for n in names[d] if not (dst / d / n).is_file()]
    total = sum(len(v) for v in names.values())
    srcs = [str(src / d / n) for d, n in todo]
    dsts = [str(dst / d / n) for d, n in todo]
    if workers <= 1:
        for a, b in zip(srcs, dsts, strict=True):
            audio.convert(a, b, FS)
    elif todo:
        # spawn: the workers import only bsmamba.data.audio, not torch
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            list(pool.map(audio.convert, srcs, dsts, [FS] * len(todo), chunksize=16))
    logs = _snr_logs(src)
    entries = []
    for d in LAYOUT:
        for n in names[d]:
            path = dst / d / n
            info = audio.sf.info(str(path))
            entry = {
                "dir": d,
                "file": n,
                "kind": "clean" if d.startswith("clean") else "noisy",
                "speaker": speaker(n),
                "duration_s": round(info.frames / info.samplerate, 4),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
            if entry["kind"] == "noisy" and n in logs:
                entry["noise"], entry["snr_db"] = logs[n]
            entries.append(entry)
    rate = audio.sf.info(str(src / TEST_DIRS[0] / names[TEST_DIRS[0]][0])).samplerate
    files.write_json(
        dst / "manifest.json",
        schema.document(
            "manifest",
            dataset="voicebank",
            source=str(src),
            source_sample_rate=rate,
            sample_rate=FS,
            resampler=audio.RESAMPLER,
            resampler_version=f"soxr {soxr.__version__}",
            valid_speakers=list(VALID_SPEAKERS),
            files=entries,
        ),
    )
    return {"files": total, "resampled": len(todo), "skipped": total - len(todo)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="the 48 kHz release: folder holding the four *_wav folders")
    parser.add_argument("dst", help="output folder (16 kHz); rerun to resume a half-done run")
    parser.add_argument("--workers", type=int, default=2, help="parallel resampling processes")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(args: argparse.Namespace) -> int:
    summary = prepare(args.src, args.dst, workers=args.workers)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"prepared {summary['files']} files ({summary['resampled']} resampled now, "
            f"{summary['skipped']} already done) into {args.dst}"
        )
    return 0
