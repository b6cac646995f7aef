"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A file written here gets the permissions any other tool's new file gets (0666 less the umask:
0644 under the usual 022), not the 0600 of the temp file it is written through.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, fsync, then rename.

    On any failure the temp file is removed and ``path`` is left as it was; a failed write
    (full disk, ...) raises ``OSError`` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600 whatever the umask
        with os.fdopen(fd, mode) as f:
            sink = _Sink(f)
            try:
                write(sink)
            except Exception:
                if sink.error is None:
                    raise
            if sink.error is not None:  # the writer may have ignored it (or turned it vague)
                raise sink.error
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    # fsync the directory so the rename itself survives a crash
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


class _Sink:
    """A file object that keeps the first OSError of a write instead of raising it.

    Writers that call ``write`` from C turn it into something vaguer: torch.save into
    "RuntimeError: unexpected pos 704 vs 598", soundfile into a printed traceback and an
    AssertionError. Kept here, :func:`atomic_write` raises the OSError itself, naming the file.
    """

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        if self.error is not None:
            return 0
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            return 0

    def __getattr__(self, name):  # read, seek, tell, flush, ... as the real file
        return getattr(self._f, name)


def _umask() -> int:
    """The process's umask, read without changing it (Linux); else set-and-restore."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # another thread creating a file in between would see 022: harmless
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON document at ``path``, or None when it is missing or unreadable (a record that
    cannot be read counts as not written)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space or choose another output",
    errno.EDQUOT: "the disk quota is used up: free space or choose another output",
    errno.EROFS: "read-only file system: choose another output",
    errno.EACCES: "permission denied: choose another output or fix its permissions",
    errno.EPERM: "operation not permitted: choose another output or fix its permissions",
    errno.EFBIG: "file too large for this file system or the process's file size limit",
}


# In an output folder: written by `bsmamba enhance` (so it may be rewritten, never re-read as input)
ENHANCED_MARKER = ".bsmamba-enhance.json"


def error_line(e: BaseException) -> str:
    """An exception as one line; an OSError as ``file: what happened (the fix)``."""
    if isinstance(e, OSError) and e.errno is not None:
        what = e.strerror or str(e)
        if what == os.strerror(e.errno):  # the system's words: say what to do as well
            what = _OS_HINTS.get(e.errno, what)
        return f"{e.filename}: {what}" if e.filename is not None else what
    return " ".join(str(e).split("\n"))


def check_writable(folder: str | Path) -> Path:
    """Make ``folder`` (and its parents) and prove a file can be created in it, before any work.

    Raises ``OSError`` naming ``folder`` (read-only, no permission, not a folder, ...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd, probe = tempfile.mkstemp(prefix=".bsmamba-probe.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(folder)) from None
    os.close(fd)
    os.unlink(probe)
    return folder
