"""A folder lock that names its holder and that a dead holder cannot leave behind.

``fcntl.flock`` on a file inside the folder: the kernel drops the lock when the holding process
dies (``kill -9`` included), so a lock file left by a dead study is simply taken over by the
next one. The holder writes who it is (pid, host, start time, command) into the same file, so a
second study on the folder can say who holds it. On NFS, Linux maps ``flock`` onto POSIX locks
that the server arbitrates across hosts; a file system without locks gets a warning, not a
refusal (refusing would make such a folder unusable).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

LOCK_NAME = ".lock"


class FolderLocked(ValueError):
    """The folder is held by another live process (a user error: exit status 2 in the CLI)."""


class FolderLock:
    """Exclusive, non-blocking lock of ``folder`` (``with FolderLock(dir, what="study"):``).

    ``info`` is written into the lock file beside the holder's identity (e.g. a job id).
    Raises :class:`FolderLocked` naming the holder when another process holds it.
    """

    def __init__(self, folder: str | Path, what: str = "folder", **info) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.what, self.info, self._fd = what, info, None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_RDWR without O_TRUNC: the holder's identity stays readable until we own the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderLocked(
                f"{self.path.parent} is in use by {describe(holder(self.path.parent))}; wait "
                f"for it to finish or stop it (a process that dies leaves no lock behind)"
            ) from None
        except OSError as e:  # no lock support on this file system
            warnings.warn(f"cannot lock {self.path} ({e}); running unlocked", stacklevel=2)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
            "what": self.what,
            **self.info,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # Empty the file before unlocking: an identity in an unlocked file would be stale.
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(folder: str | Path) -> dict | None:
    """The identity the live holder of ``folder``'s lock wrote, or None when nobody holds it."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: read who holds it
            try:
                return json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:  # the holder is between truncate and write
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe(who: dict | None) -> str:
    """'pid 123 on host h since 2026-..T..: bsmamba study ...' (or what is known of it)."""
    if not who:
        return "another process (identity not written yet)"
    parts = [f"pid {who.get('pid', '?')} on host {who.get('host', '?')}"]
    if who.get("job_id"):
        parts.append(f"job {who['job_id']}")
    parts.append(f"since {who.get('started', '?')}")
    text = ", ".join(parts)
    return text + (f" ({who['command']})" if who.get("command") else "")


__all__ = ["FolderLock", "FolderLocked", "holder", "describe", "LOCK_NAME"]
