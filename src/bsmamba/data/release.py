"""The survey of the 48 kHz VoiceBank+DEMAND release as people have it on disk, read without
changing it: :func:`survey` finds the four sets (:mod:`~bsmamba.data.release_sets`) and the
logfiles (:mod:`~bsmamba.data.release_logs`) in a folder and says what it found, what it ignored
(the 56-speaker training set, unknown files, unusable log lines) and how the counts compare with
the release's. The audio itself is checked and converted by :mod:`~bsmamba.data.release_audio`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bsmamba.data.layout import DIRS, TEST_DIRS, TRAIN_DIRS, speaker
from bsmamba.data.release_logs import read_logs
from bsmamba.data.release_sets import OTHER_TRAINSET, Set, find_set, some

# What the release holds (REFERENCE): a prepared folder with other counts gets a warning.
EXPECTED_PAIRS = {TRAIN_DIRS[1]: 11572, TEST_DIRS[1]: 824}
EXPECTED_TRAIN_SPEAKERS = 28
EXPECTED_TEST_SPEAKERS = {"p232": 393, "p257": 431}
VALID_SPEAKERS = ("p226", "p287")  # held out of training for model selection (never the test set)


def _missing_sets_error(src: Path, missing: list[str]) -> ValueError:
    looked = ", ".join(f"{m}.zip or {m}/" for m in missing)
    hint = ""
    if src.name in DIRS + OTHER_TRAINSET:
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
        for name in DIRS:
            for file, (_, size) in sorted(self.sets[name].members.items()):
                h.update(f"{name}/{file} {size}\n".encode())
        return h.hexdigest()

    def counts(self) -> dict:
        train, test = self.sets[TRAIN_DIRS[1]].members, self.sets[TEST_DIRS[1]].members
        by_speaker: dict[str, int] = {}
        for n in test:
            by_speaker[speaker(n)] = by_speaker.get(speaker(n), 0) + 1
        return {
            "train_pairs": len(train),
            "train_speakers": len({speaker(n) for n in train}),
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
    sets = {n: find_set(src, n, notes) for n in DIRS}
    missing = [n for n, s in sets.items() if s is None]
    if missing:
        raise _missing_sets_error(src, missing)
    for s in sets.values():
        if not s.members:
            raise ValueError(f"{s.path}: no .wav files; download or extract it again")
        if s.unused:
            notes.append(f"{s.path}: {len(s.unused)} entries not read ({some(s.unused)})")
    for clean, noisy in (TRAIN_DIRS, TEST_DIRS):
        lonely = sorted(set(sets[clean].members) ^ set(sets[noisy].members))
        if lonely:
            raise ValueError(
                f"{src}: {len(lonely)} file(s) without their twin between {sets[clean].path} "
                f"and {sets[noisy].path} ({some(lonely)}); download or extract them again"
            )
    ignored = [
        f"{p.name}: the 56-speaker training set (bsmamba trains on the 28-speaker set)"
        for o in OTHER_TRAINSET
        for p in (src / o, src / f"{o}.zip")
        if p.exists()
    ]
    warnings: list[str] = []
    snr, logfiles = read_logs(src, sets, ignored, notes, warnings)
    warnings += _count_warnings(sets)
    return Release(src, sets, snr, logfiles, ignored, notes, warnings)


def _count_warnings(sets: dict[str, Set]) -> list[str]:
    """The release's counts (11,572 / 824 pairs; test speakers p232, p257) against these."""
    out = []
    train = sets[TRAIN_DIRS[1]].members
    speakers = sorted({speaker(n) for n in train})
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
    have = {s: sum(speaker(n) == s for n in test) for s in EXPECTED_TEST_SPEAKERS}
    extra = sorted({speaker(n) for n in test} - set(EXPECTED_TEST_SPEAKERS))
    if len(test) != EXPECTED_PAIRS[TEST_DIRS[1]] or extra or have != EXPECTED_TEST_SPEAKERS:
        per = ", ".join(f"{s}: {have[s]} of {n}" for s, n in EXPECTED_TEST_SPEAKERS.items())
        more = f"; speakers not in the release's test set: {', '.join(extra)}" if extra else ""
        out.append(
            f"test set: {len(test)} pairs; the release has {EXPECTED_PAIRS[TEST_DIRS[1]]} "
            f"({per}){more}"
        )
    return out
