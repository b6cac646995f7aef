"""VoiceBank+DEMAND at 16 kHz: the folder layout, its datasets, and ``prepare-voicebank``.

Layout (what ``bsmamba prepare-voicebank SRC DST`` writes and the demo set imitates)::

    DST/clean_trainset_28spk_wav/p226_001.wav   16 kHz mono; speaker id = prefix before "_"
        noisy_trainset_28spk_wav/p226_001.wav   same name = the clean file's noisy twin
        clean_testset_wav/p232_001.wav          824 pairs, speakers p232 and p257
        noisy_testset_wav/p232_001.wav
        manifest.json                           file, duration, sha256, resampler + version
        source.json                             the release it came from (name+size fingerprint)

The validation split holds out whole training speakers (p226 and p287 by default); the test set
is never used for model selection. torch is imported on first item, not with the module, so
``prepare-voicebank`` and the folder checks start without it (map-style datasets need only
``__len__`` and ``__getitem__``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bsmamba import files, schema
from bsmamba.data import audio, release, release_audio, segments
from bsmamba.data.layout import DIRS, TEST_DIRS, TRAIN_DIRS, speaker
from bsmamba.data.release import VALID_SPEAKERS

if TYPE_CHECKING:
    import torch

FS = 16000
SPLITS = ("train", "valid")


def read_manifest(root: str | Path) -> dict:
    """The ``manifest.json`` of a prepared folder ({} if it has none)."""
    path = Path(root) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def check_root(root: str | Path) -> Path:
    """Check that ``root`` is a prepared 16 kHz folder; errors say how to make one."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder; pass --data demo or the output folder of "
            "`bsmamba prepare-voicebank SRC DST`"
        )
    missing = [d for d in DIRS if not (root / d).is_dir()]
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
    # A manifest beside 48 kHz files (an old prepare run into its own input) is not enough.
    first = next(iter(sorted((root / TEST_DIRS[1]).glob("*.wav"))), None)
    rate = audio.sf.info(str(first)).samplerate if first else FS
    if rate != FS:
        raise ValueError(
            f"{first}: {rate} Hz, not {FS} Hz: {root} is not prepare-voicebank output (the raw "
            f"release?); run `bsmamba prepare-voicebank {root} DST` and pass DST as --data"
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


class TrainSet:
    """Training or validation pairs as ``(noisy, clean)`` float32 tensors ``(S,)``.

    ``S = segment_s * 16000``. ``split="train"``: a random crop per access (torch's global RNG,
    so ``lightning.seed_everything`` and DataLoader worker seeding make it reproducible);
    utterances shorter than S are tiled (see :mod:`bsmamba.data.segments`).
    ``split="valid"``: the held-out pairs, one fixed crop per utterance (from ``seed``).
    ``valid_speakers=None`` (or ``()``) means the dataset's own choice: the manifest's
    ``valid_files`` (the demo set: held-out clips of the training speakers) or its
    ``valid_speakers`` (VoiceBank: p226, p287).
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
        manifest = read_manifest(root)
        declared = tuple(manifest.get("valid_speakers") or VALID_SPEAKERS)
        held = tuple(valid_speakers or declared)
        default = not valid_speakers or (
            tuple(held) == VALID_SPEAKERS and not set(held) & set(present)
        )  # the VoiceBank default on another dataset means "its default"
        files = set(manifest.get("valid_files") or ())
        if default and files:  # the dataset declares validation clips, not speakers (demo)
            held = ()
            in_valid = lambda name: name in files  # noqa: E731
        else:
            held = declared if default else held
            if not set(held) & set(present):
                raise ValueError(
                    f"valid_speakers {list(held)} not found in {root / TRAIN_DIRS[0]}; "
                    f"speakers there: {', '.join(present)}"
                )
            in_valid = lambda name: speaker(name) in held  # noqa: E731
        self.pairs = [p for p in pairs if in_valid(p[0]) == (split == "valid")]
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
        import torch

        noisy, clean = self._load(i)
        n = segments.num_starts(len(noisy), self.length)
        if self.split == "train":
            start = int(torch.randint(n, ()).item())
        else:
            start = int(np.random.default_rng((self.seed, i)).integers(n))
        noisy, clean = segments.crop_pair(noisy, clean, self.length, start)
        return torch.from_numpy(noisy.copy()), torch.from_numpy(clean.copy())


# ---------------------------------------------------------------- bsmamba prepare-voicebank

SOURCE = "source.json"  # written before any audio: which release a (half-)prepared DST is from


def _prepared_wavs(dst: Path) -> dict[str, list[str]]:
    return {d: sorted(p.name for p in (dst / d).glob("*.wav")) for d in DIRS}


def _check_dst(rel, dst: Path, replace: bool) -> bool:
    """Refuse a DST that would write into the release, or that holds another release's files
    (unless ``replace``). Returns whether DST's earlier outputs must be deleted first."""
    src = rel.src
    # The sets' own folders too: one may be a link to another disk.
    inputs = [src] + [s.path.resolve() for s in rel.sets.values() if s.kind == "folder"]
    if any(dst == p or p in dst.parents for p in inputs):
        raise ValueError(
            f"{dst}: inside the release {src}; prepare-voicebank never writes into its input "
            f"(16 kHz copies there would pass for the release): choose a folder outside it, "
            f"e.g. {src.parent / (src.name + '-16k')}"
        )
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"{dst}: exists and is not a folder; choose a folder for the output")
    record = files.read_json(dst / SOURCE) or {}
    manifest = read_manifest(dst)
    have = _prepared_wavs(dst)
    n_have = sum(map(len, have.values()))
    if not record and not manifest:
        if n_have:
            raise ValueError(
                f"{dst}: holds {n_have} .wav files that prepare-voicebank did not write (no "
                f"{SOURCE}); choose a new or empty folder"
            )
        return False
    old_fp = record.get("fingerprint") or manifest.get("source_fingerprint")
    old_src = record.get("source") or manifest.get("source")
    same = old_fp == rel.fingerprint() if old_fp else Path(str(old_src)) == src
    if not same:
        if replace:
            return True
        raise ValueError(
            f"{dst}: prepared from another release ({old_src}, {record.get('files', '?')} "
            f"files; now {src}, {sum(len(s.members) for s in rel.sets.values())} files); pass "
            f"--replace to redo it from {src} (its {n_have} prepared files are deleted), "
            "or choose another folder"
        )
    extra = [f"{d}/{n}" for d in DIRS for n in have[d] if n not in rel.sets[d].members]
    if extra and not replace:
        raise ValueError(
            f"{dst}: {len(extra)} .wav file(s) not in {src} ({', '.join(extra[:3])}): training "
            "and testing would read them; remove them, or pass --replace to redo the folder"
        )
    return bool(extra)


def _convert_all(rel, todo: list[tuple[str, str]], dst: Path, workers: int) -> None:
    args = [(str(rel.sets[d].path), rel.sets[d].members[n][0], str(dst / d / n)) for d, n in todo]
    if workers <= 1 or len(todo) < 2:
        try:
            for a in args:
                release_audio.convert(*a)
        finally:
            release_audio.close_zips()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: the workers import only bsmamba.data.release_audio and its imports, not torch
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        for _ in pool.map(release_audio.convert, *zip(*args, strict=True), chunksize=16):
            pass
    except BaseException:
        # Files being written finish (or fail and remove their temp file); the rest never start.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _write_error(e: OSError, dst: Path) -> ValueError:
    """One line for a failed write (read-only or full DST) or read; finished files stay."""
    path = Path(e.filename) if e.filename else dst
    if path.name.startswith(".") and path.name.endswith(".tmp"):
        path = path.parent  # an atomic write's temp file: name the folder the user knows
    what = e.strerror or str(e)
    if path != dst and dst not in path.parents:
        return ValueError(f"{path}: {what}")
    kept = sum(map(len, _prepared_wavs(dst).values())) if dst.is_dir() else 0
    return ValueError(
        f"{path}: cannot write ({what}); the {kept} files prepared so far are kept: make "
        "room or fix the permissions, then rerun the same command to finish"
    )


def prepare(
    src: str | Path, dst: str | Path, workers: int = 2, replace: bool = False, echo=None
) -> dict:
    """Resample the 48 kHz release (zips or folders) once to 16 kHz (soxr HQ) into ``dst``.

    Before writing anything: finds the release's sets and logfiles in ``src``
    (:func:`bsmamba.data.release.survey`), checks every file is 48 kHz mono with its twin,
    and refuses a ``dst`` inside ``src`` or one prepared from another release (unless
    ``replace``). ``echo(line)`` receives what was found (warnings as lines that start with
    ``"warning: "``). Rerunnable: finished files (atomic writes) are skipped; ``manifest.json``
    is written last. Returns a summary dict (files, resampled, skipped, release: the survey).
    """
    import hashlib

    import soxr

    from bsmamba import __version__

    dst = Path(dst).expanduser().resolve()
    rel = release.survey(src)
    clear = _check_dst(rel, dst, replace)
    release_audio.check_audio(rel)
    say = echo or (lambda line: None)
    for line in rel.lines():
        say(line)
    for w in rel.warnings:
        say(f"warning: {w}")
    names = {d: sorted(rel.sets[d].members) for d in DIRS}
    total = sum(map(len, names.values()))
    try:
        if clear:  # the manifest first: a half-cleared folder must not look prepared
            (dst / "manifest.json").unlink(missing_ok=True)
            for d, have in _prepared_wavs(dst).items():
                for n in have:
                    (dst / d / n).unlink()
        files.write_json(
            dst / SOURCE,
            {"source": str(rel.src), "fingerprint": rel.fingerprint(), "files": total,
             "bsmamba": __version__},
        )  # fmt: skip
        for stale in dst.glob("*/.*.tmp"):  # temp files of a killed run (writes are atomic)
            stale.unlink()
        todo = [(d, n) for d in DIRS for n in names[d] if not (dst / d / n).is_file()]
        say(f"resampling {len(todo)} files to {FS} Hz ({total - len(todo)} already done)")
        _convert_all(rel, todo, dst, workers)
        entries = []
        for d in DIRS:
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
                if entry["kind"] == "noisy" and n in rel.snr:
                    entry["noise"], entry["snr_db"] = rel.snr[n]
                entries.append(entry)
        summary = rel.summary()
        files.write_json(
            dst / "manifest.json",
            schema.document(
                "manifest",
                dataset="voicebank",
                source=str(rel.src),
                source_fingerprint=summary.pop("fingerprint"),
                source_sample_rate=release_audio.RATE,
                sample_rate=FS,
                resampler=audio.RESAMPLER,
                resampler_version=f"soxr {soxr.__version__}",
                valid_speakers=list(VALID_SPEAKERS),
                release=summary,
                files=entries,
            ),
        )
    except OSError as e:
        raise _write_error(e, dst) from None
    return {
        "dst": str(dst),
        "files": total,
        "resampled": len(todo),
        "skipped": total - len(todo),
        "release": rel.summary(),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src",
        help="the 48 kHz release: the folder holding its four zips or extracted folders "
        "(clean/noisy_trainset_28spk_wav, clean/noisy_testset_wav; logfiles/ beside or one "
        "level up)",
    )
    parser.add_argument("dst", help="output folder (16 kHz); rerun to resume a half-done run")
    parser.add_argument("--workers", type=int, default=2, help="parallel resampling processes")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="DST was prepared from another release: delete its files and redo it from SRC",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(args: argparse.Namespace) -> int:
    import sys

    def echo(line: str) -> None:
        warning = line.startswith("warning: ")
        if warning or not args.json:
            print(line, file=sys.stderr if warning else sys.stdout, flush=True)

    summary = prepare(args.src, args.dst, workers=args.workers, replace=args.replace, echo=echo)
    if args.json:
        print(json.dumps(schema.document("prepare", **summary), indent=2))
    else:
        print(
            f"prepared {summary['files']} files ({summary['resampled']} resampled now, "
            f"{summary['skipped']} already done) into {summary['dst']}"
        )
    return 0
