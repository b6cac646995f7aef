"""The four sets of the 48 kHz VoiceBank+DEMAND release as they sit on disk, read without
changing them: each a zip (as Edinburgh DataShare ships it), a folder, or a zip extracted into a
folder of its own name; and the facts about the release the other ``release_*`` modules share.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

RATE = 48000  # every file of the release
OTHER_TRAINSET = ("clean_trainset_56spk_wav", "noisy_trainset_56spk_wav")  # never mixed in
EXAMPLES = 3  # names quoted in a message; the rest are counted


def some(names, n: int = EXAMPLES) -> str:
    """The first ``n`` of ``names`` for a message, and how many more there are."""
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
    with open_zip(path) as zf:
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


def open_zip(path: Path) -> zipfile.ZipFile:
    """``path`` opened as a zip, or a one-line ``ValueError`` saying to download it again."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"{path}: not a readable zip file ({e}); the download may be incomplete: "
            "download it again"
        ) from None


def find_set(src: Path, name: str, notes: list[str]) -> Set | None:
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
