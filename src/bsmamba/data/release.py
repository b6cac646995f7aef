"""The 48 kHz VoiceBank+DEMAND release as people have it on disk, read without changing it.

Edinburgh DataShare ships each set as a zip (``clean_testset_wav.zip`` ...); users keep the zips,
or extract them (sometimes into a folder of the same name, one level deeper), and keep
``logfiles/`` beside the sets or one level up. :func:`survey` finds all of that in a folder,
parses the logfiles ("name noise snr" per line) and says what it found, what it ignored (the
56-speaker training set, unknown files, unusable log lines) and how the counts compare with the
release's. :func:`convert` turns one file into its 16 kHz copy (prepare's worker processes call
it, so this module stays free of torch).
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from bsmamba.data import audio
from bsmamba.data.layout import TEST_DIRS, TRAIN_DIRS

RATE = 48000  # every file of the release
SETS = TRAIN_DIRS + TEST_DIRS  # the four sets bsmamba reads; the output layout has the same names
OTHER_TRAINSET = ("clean_trainset_56spk_wav", "noisy_trainset_56spk_wav")  # never mixed in
LOGS = {"log_trainset_28spk.txt": TRAIN_DIRS[1], "log_testset.txt": TEST_DIRS[1]}
LOG_README = "log_readme.txt"
LOG_56SPK = "log_trainset_56spk.txt"
# What the release holds (REFERENCE): a prepared folder with other counts gets a warning.
EXPECTED_PAIRS = {TRAIN_DIRS[1]: 11572, TEST_DIRS[1]: 824}
EXPECTED_TRAIN_SPEAKERS = 28
EXPECTED_TEST_SPEAKERS = {"p232": 393, "p257": 431}
VALID_SPEAKERS = ("p226", "p287")  # held out of training for model selection (never the test set)
EXAMPLES = 3  # names quoted in a message; the rest are counted


def _speaker(name: str) -> str:
    return name.split("_", 1)[0]


def _some(names, n: int = EXAMPLES) -> str:
    names = list(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(str(x) for x in names[:n]) + more


@dataclass
class Set:
    """One set of the release: the zip or folder it is read from and its ``.wav`` members."""

    name: str  # e.g. "clean_testset_wav"
    path: Path  # the .zip file, or the folder that holds the wavs
    members: dict[str, tuple[str, int]]  # file name -> (member of the zip or file path, bytes)
    unused: list[str] = field(default_factory=list)  # entries that are not release wavs

    @property
    def kind(self) -> str:
        return "zip" if self.path.suffix == ".zip" else "folder"

    def where(self, name: str) -> str:
        """How a message names one file of the set."""
        member = self.members[name][0]
        return f"{self.path} ({member})" if self.kind == "zip" else member


def _folder_set(name: str, folder: Path) -> Set:
    members, unused = {}, []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() == ".wav" and not p.name.startswith("."):
            members[p.name] = (str(p), p.stat().st_size)
        elif p.name != name:  # the nested copy of the set itself is not "unused"
            unused.append(p.name)
    return Set(name, folder, members, unused)


def _zip_set(name: str, path: Path) -> Set:
    members, unused = {}, []
    with _open_zip(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            parent, _, base = info.filename.rpartition("/")
            # Members sit at the top of the zip or in a folder named like the set; macOS adds
            # __MACOSX/ and ._ files, which are not audio.
            if (
                base.lower().endswith(".wav")
                and not base.startswith(".")
                and parent in ("", name, f"{name}/{name}")
                and base not in members
            ):
                members[base] = (info.filename, info.file_size)
            else:
                unused.append(info.filename)
    return Set(name, path, members, unused)


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"{path}: not a readable zip file ({e}); the download may be incomplete: "
            "download it again"
        ) from None


def _find_set(src: Path, name: str, notes: list[str]) -> Set | None:
    """``name`` in ``src`` as a folder (or ``name/name``) or a zip; the fuller one wins."""
    found = []
    folder = src / name
    if folder.is_dir():
        s = _folder_set(name, folder)
        if not s.members and (folder / name).is_dir():  # a zip extracted into its own name
            s = _folder_set(name, folder / name)
        found.append(s)
    if (src / f"{name}.zip").is_file():
        found.append(_zip_set(name, src / f"{name}.zip"))
    if not found:
        return None
    best = max(found, key=lambda s: len(s.members))  # a tie keeps the folder (listed first)
    for other in found:
        if other is not best:
            notes.append(
                f"{other.path}: not read ({len(other.members)} .wav files; "
                f"{best.path} has {len(best.members)})"
            )
    return best


def _missing_sets_error(src: Path, missing: list[str]) -> ValueError:
    looked = ", ".join(f"{m}.zip or {m}/" for m in missing)
    hint = ""
    if src.name in SETS + OTHER_TRAINSET:
        hint = f"; {src} is itself one set: pass the folder that holds all four ({src.parent})"
    elif any(src.glob("DS_10283_2791*.zip")):
        hint = "; DS_10283_2791.zip bundles the sets' zips: unzip it first and pass that folder"
    elif all((src / f"{o}.zip").exists() or (src / o).exists() for o in OTHER_TRAINSET):
        hint = (
            "; only the 56-speaker training set is here: bsmamba trains on the 28-speaker set "
            "(clean_trainset_28spk_wav.zip, noisy_trainset_28spk_wav.zip from the same page)"
        )
    return ValueError(
        f"{src}: not the VoiceBank+DEMAND release: no {looked}{hint}. Download the four zips "
        "(clean/noisy_trainset_28spk_wav, clean/noisy_testset_wav) from doi:10.7488/ds/2117"
    )


# ---------------------------------------------------------------------------------- logfiles


def _find_logs(src: Path) -> tuple[Path, str, dict[str, str]] | None:
    """(where, "beside the sets" | "one level up", file name -> text) of the logfiles."""
    known = set(LOGS) | {LOG_README, LOG_56SPK}
    for base, place in ((src, "beside the sets"), (src.parent, "one level up")):
        folder = base / "logfiles"
        if (folder / "logfiles").is_dir():
            folder = folder / "logfiles"
        if folder.is_dir():
            texts = {
                p.name: p.read_text(errors="replace")
                for p in sorted(folder.iterdir())
                if p.is_file() and not p.name.startswith(".")
            }
            return folder, place, texts
        if (base / "logfiles.zip").is_file():
            with _open_zip(base / "logfiles.zip") as zf:
                texts = {
                    i.filename.rsplit("/", 1)[-1]: zf.read(i).decode(errors="replace")
                    for i in zf.infolist()
                    if not i.is_dir()
                    and "__MACOSX" not in i.filename
                    and not i.filename.rsplit("/", 1)[-1].startswith(".")
                }
            return base / "logfiles.zip", place, texts
        flat = [base / n for n in sorted(known) if (base / n).is_file()]  # extracted flat
        if flat:
            return base, place, {p.name: p.read_text(errors="replace") for p in flat}
    return None


def _parse_log(text: str, wavs: set[str]) -> tuple[dict, dict]:
    """Parse "name noise snr" lines. Returns (file name -> (noise, snr_db), report)."""
    snr: dict[str, tuple[str, float]] = {}
    bad, unmatched, lines = [], [], 0
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # blank lines carry nothing
        lines += 1
        parts = line.split()
        try:
            value = float(parts[2]) if len(parts) == 3 else math.nan
        except ValueError:
            value = math.nan
        file = parts[0].removesuffix(".wav") + ".wav"
        if not math.isfinite(value):
            bad.append(f"line {i}: {line.strip()[:60]!r}")
        elif file in snr:
            bad.append(f"line {i}: {parts[0]} again")
        elif file not in wavs:
            unmatched.append(parts[0])
        else:
            snr[file] = (parts[1], value)
    report = {
        "lines": lines,
        "used": len(snr),
        "unusable": len(bad),
        "unusable_examples": bad[:EXAMPLES],
        "not_in_release": len(unmatched),
        "not_in_release_examples": unmatched[:EXAMPLES],
    }
    return snr, report


# ------------------------------------------------------------------------------------ survey


@dataclass
class Release:
    """What :func:`survey` found: the four sets, the logfiles and what they say."""

    src: Path
    sets: dict[str, Set]
    snr: dict[str, tuple[str, float]]  # noisy file name -> (noise, snr_db), train and test
    logfiles: dict  # where, place, by_file reports
    ignored: list[str]  # release parts found and deliberately not read (the 56-speaker set)
    notes: list[str]
    warnings: list[str]

    def fingerprint(self) -> str:
        """sha256 of every set member's name and size: the same for the zips and their
        extracted folders, different for another or a changed release."""
        h = hashlib.sha256()
        for name in SETS:
            for file, (_, size) in sorted(self.sets[name].members.items()):
                h.update(f"{name}/{file} {size}\n".encode())
        return h.hexdigest()

    def counts(self) -> dict:
        train, test = self.sets[TRAIN_DIRS[1]].members, self.sets[TEST_DIRS[1]].members
        by_speaker: dict[str, int] = {}
        for n in test:
            by_speaker[_speaker(n)] = by_speaker.get(_speaker(n), 0) + 1
        return {
            "train_pairs": len(train),
            "train_speakers": len({_speaker(n) for n in train}),
            "test_pairs": len(test),
            "by_test_speaker": by_speaker,
        }

    def summary(self) -> dict:
        """JSON-ready account of the survey (the ``release`` part of prepare's summary)."""
        return {
            "src": str(self.src),
            "by_set": {
                n: {"kind": s.kind, "path": str(s.path), "files": len(s.members)}
                for n, s in self.sets.items()
            },
            "logfiles": self.logfiles,
            "counts": self.counts(),
            "ignored": self.ignored,
            "notes": self.notes,
            "warnings": self.warnings,
            "fingerprint": self.fingerprint(),
        }

    def lines(self) -> list[str]:
        """The survey as text lines (warnings not included: the caller prints them apart)."""
        out = [f"release: {self.src}"]
        for n, s in self.sets.items():
            out.append(f"  {n:<26} {s.kind:<6} {len(s.members):>6} files  {s.path}")
        lf = self.logfiles
        if lf["where"]:
            out.append(f"logfiles: {lf['where']} ({lf['place']})")
            for name, r in lf["by_file"].items():
                if "lines" in r:
                    used = f"{r['lines']} lines, {r['used']} used"
                    out.append(f"  {name:<26} {r['role']:<6} {used}")
                else:
                    out.append(f"  {name:<26} {r['role']}")
        out += [f"ignored: {i}" for i in self.ignored]
        out += [f"note: {n}" for n in self.notes]
        return out


def survey(src: str | Path) -> Release:
    """Find the release's four sets and logfiles in ``src`` and check them; reads only.

    Raises ``FileNotFoundError``/``ValueError`` (one line naming the file and the fix) when
    ``src`` is not a folder, a set is missing, a zip is unreadable, or a clean file lacks its
    noisy twin (or back). Everything else it cannot use is reported in the result.
    """
    src = Path(src).expanduser().resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder; pass the folder holding the release")
    notes: list[str] = []
    sets = {n: _find_set(src, n, notes) for n in SETS}
    missing = [n for n, s in sets.items() if s is None]
    if missing:
        raise _missing_sets_error(src, missing)
    for s in sets.values():
        if not s.members:
            raise ValueError(f"{s.path}: no .wav files; download or extract it again")
        if s.unused:
            notes.append(f"{s.path}: {len(s.unused)} entries not read ({_some(s.unused)})")
    for clean, noisy in (TRAIN_DIRS, TEST_DIRS):
        lonely = sorted(set(sets[clean].members) ^ set(sets[noisy].members))
        if lonely:
            raise ValueError(
                f"{src}: {len(lonely)} file(s) without their twin between {sets[clean].path} "
                f"and {sets[noisy].path} ({_some(lonely)}); download or extract them again"
            )
    ignored = [
        f"{p.name}: the 56-speaker training set (bsmamba trains on the 28-speaker set)"
        for o in OTHER_TRAINSET
        for p in (src / o, src / f"{o}.zip")
        if p.exists()
    ]
    warnings: list[str] = []
    snr, logfiles = _read_logs(src, sets, ignored, notes, warnings)
    warnings += _count_warnings(sets)
    return Release(src, sets, snr, logfiles, ignored, notes, warnings)


def _read_logs(src: Path, sets: dict[str, Set], ignored: list, notes: list, warnings: list):
    found = _find_logs(src)
    if found is None:
        warnings.append(
            f"no logfiles (looked for logfiles/, logfiles.zip and log_*.txt in {src} and "
            f"{src.parent}): the manifest has no noise types or SNRs, and reports group the "
            "test set by measured SNR instead"
        )
        return {}, {"where": None, "place": None, "by_file": {}}
    where, place, texts = found
    snr: dict[str, tuple[str, float]] = {}
    by_file: dict[str, dict] = {}
    for name, text in sorted(texts.items()):
        if name in LOGS:
            wavs = set(sets[LOGS[name]].members)
            got, report = _parse_log(text, wavs)
            snr.update(got)
            by_file[name] = {"role": "train" if "train" in name else "test", **report}
            if report["unusable"]:
                warnings.append(
                    f"{name}: {report['unusable']} line(s) not of the form 'name noise snr' "
                    f"({_some(report['unusable_examples'])}): not used"
                )
            if report["not_in_release"]:
                warnings.append(
                    f"{name}: {report['not_in_release']} name(s) not in {LOGS[name]} "
                    f"({_some(report['not_in_release_examples'])})"
                )
            unlogged = sorted(wavs - set(got))
            if unlogged:
                warnings.append(
                    f"{LOGS[name]}: {len(unlogged)} file(s) without a line in {name} "
                    f"({_some(unlogged)}): no SNR for them"
                )
        elif name == LOG_README:
            by_file[name] = {"role": "readme (not parsed)"}
        elif name == LOG_56SPK:
            by_file[name] = {"role": "ignored (the 56-speaker training set)"}
            ignored.append(f"{name}: the 56-speaker training set's log")
        else:
            by_file[name] = {"role": "not used (not a release logfile)"}
            notes.append(f"{where}: {name} is not one of the release's logfiles: not used")
    for name, subset in LOGS.items():
        if name not in texts:
            warnings.append(f"{where}: no {name}: no SNRs for {subset}")
    return snr, {"where": str(where), "place": place, "by_file": by_file}


def _count_warnings(sets: dict[str, Set]) -> list[str]:
    """The release's counts (11,572 / 824 pairs; test speakers p232, p257) against these."""
    out = []
    train = sets[TRAIN_DIRS[1]].members
    speakers = sorted({_speaker(n) for n in train})
    if len(train) != EXPECTED_PAIRS[TRAIN_DIRS[1]] or len(speakers) != EXPECTED_TRAIN_SPEAKERS:
        out.append(
            f"training set: {len(train)} pairs from {len(speakers)} speakers; the release has "
            f"{EXPECTED_PAIRS[TRAIN_DIRS[1]]:,} from {EXPECTED_TRAIN_SPEAKERS}"
        )
    leak = [s for s in speakers if s in EXPECTED_TEST_SPEAKERS]
    if leak:
        out.append(f"training set: test speaker(s) {', '.join(leak)} present; results would leak")
    absent = [s for s in VALID_SPEAKERS if s not in speakers]
    if absent:
        out.append(
            f"training set: validation speaker(s) {', '.join(absent)} absent; set "
            "data.valid_speakers=[...] to training speakers that are there"
        )
    test = sets[TEST_DIRS[1]].members
    have = {s: sum(_speaker(n) == s for n in test) for s in EXPECTED_TEST_SPEAKERS}
    extra = sorted({_speaker(n) for n in test} - set(EXPECTED_TEST_SPEAKERS))
    if len(test) != EXPECTED_PAIRS[TEST_DIRS[1]] or extra or have != EXPECTED_TEST_SPEAKERS:
        per = ", ".join(f"{s}: {have[s]} of {n}" for s, n in EXPECTED_TEST_SPEAKERS.items())
        more = f"; speakers not in the release's test set: {', '.join(extra)}" if extra else ""
        out.append(
            f"test set: {len(test)} pairs; the release has {EXPECTED_PAIRS[TEST_DIRS[1]]} "
            f"({per}){more}"
        )
    return out


# ------------------------------------------------------------------------------ the audio


def _wav_format(head: bytes) -> tuple[int, int] | str:
    """(sample rate, channels) from the first bytes of a WAV file, or what is wrong."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return "not a WAV file"
    pos = 12
    while pos + 8 <= len(head):
        cid, size = struct.unpack("<4sI", head[pos : pos + 8])
        if cid == b"fmt " and pos + 16 <= len(head):
            channels, rate = struct.unpack("<HI", head[pos + 10 : pos + 16])
            return rate, channels
        pos += 8 + size + (size & 1)
    return "no format chunk in its first bytes"


def _head(s: Set, name: str, zf: zipfile.ZipFile | None, n: int = 4096) -> bytes:
    member = s.members[name][0]
    if zf is not None:
        with zf.open(member) as f:
            return f.read(n)
    with open(member, "rb") as f:
        return f.read(n)


def check_audio(rel: Release) -> None:
    """Read every file's WAV header: 48 kHz mono, or a ``ValueError`` naming the files.

    A file at another rate is not an original (often a resampled copy written back into the
    release); preparing it would silently mix two resamplings.
    """
    bad: list[str] = []
    for s in rel.sets.values():
        zf = _open_zip(s.path) if s.kind == "zip" else None
        try:
            for name in s.members:
                fmt = _wav_format(_head(s, name, zf))
                if isinstance(fmt, str):
                    bad.append(f"{s.where(name)}: {fmt}")
                elif fmt[0] != RATE:
                    bad.append(f"{s.where(name)} is at {fmt[0]} Hz")
                elif fmt[1] != 1:
                    bad.append(f"{s.where(name)} has {fmt[1]} channels")
        finally:
            if zf is not None:
                zf.close()
    if bad:
        prepared = (rel.src / "manifest.json").is_file() or (rel.src / "source.json").is_file()
        hint = (
            f"{rel.src} is prepare-voicebank output (16 kHz), not the release"
            if prepared
            else "the release is 48 kHz mono: these are not its original files (resampled or "
            "converted copies written into it?); restore them from the release's zips"
        )
        raise ValueError(f"{_some(bad)}: {hint}")


_ZIPS: dict[str, zipfile.ZipFile] = {}  # per process: each worker opens each zip once


def close_zips() -> None:
    """Close the zips :func:`convert` opened in this process."""
    while _ZIPS:
        _ZIPS.popitem()[1].close()


def convert(container: str, member: str, dst: str, rate: int = 16000) -> None:
    """Resample one file of the release (``member`` of the zip ``container``, or the file
    ``member`` when ``container`` is a folder) to ``rate`` Hz with soxr HQ; writes ``dst``
    atomically as 16-bit WAV."""
    if not container.endswith(".zip"):
        audio.convert(member, dst, rate)
        return
    if container not in _ZIPS:
        _ZIPS[container] = zipfile.ZipFile(container)
    where = f"{container} ({member})"
    try:
        wav, got = sf.read(io.BytesIO(_ZIPS[container].read(member)), dtype="float32")
    except (sf.LibsndfileError, RuntimeError, zipfile.BadZipFile) as e:
        raise audio.AudioError(f"{where}: not readable ({e}); download the zip again") from None
    if wav.ndim != 1 or got != RATE:
        raise audio.AudioError(f"{where}: not 48 kHz mono; download the zip again")
    audio.write(dst, audio.resample(wav, got, rate), rate)
