"""The release's logfiles: which noise type and SNR made each noisy file.

``log_trainset_28spk.txt`` and ``log_testset.txt`` hold one "name noise snr" line per file. Users
keep ``logfiles/`` beside the sets or one level up, zipped, extracted (sometimes one level
deeper) or as loose ``log_*.txt`` files; :func:`read_logs` finds them, parses them and says what
it could not use.
"""

from __future__ import annotations

import math
from pathlib import Path

from bsmamba.data.layout import TEST_DIRS, TRAIN_DIRS
from bsmamba.data.release_sets import EXAMPLES, Set, open_zip, some

LOGS = {"log_trainset_28spk.txt": TRAIN_DIRS[1], "log_testset.txt": TEST_DIRS[1]}
LOG_README = "log_readme.txt"
LOG_56SPK = "log_trainset_56spk.txt"


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
            with open_zip(base / "logfiles.zip") as zf:
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


def read_logs(src: Path, sets: dict[str, Set], ignored: list, notes: list, warnings: list):
    """Find and parse the logfiles of the release in ``src``; returns (noisy file name -> (noise,
    snr_db), the account of the logfiles for the survey). What it cannot use is appended to
    ``ignored``, ``notes`` and ``warnings``."""
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
                    f"({some(report['unusable_examples'])}): not used"
                )
            if report["not_in_release"]:
                warnings.append(
                    f"{name}: {report['not_in_release']} name(s) not in {LOGS[name]} "
                    f"({some(report['not_in_release_examples'])})"
                )
            unlogged = sorted(wavs - set(got))
            if unlogged:
                warnings.append(
                    f"{LOGS[name]}: {len(unlogged)} file(s) without a line in {name} "
                    f"({some(unlogged)}): no SNR for them"
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
