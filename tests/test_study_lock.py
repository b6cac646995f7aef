"""A study folder is locked while a study runs in it, and its run processes die with it.

Real processes and real signals: a `bsmamba study --recipe smoke` subprocess is killed with
SIGKILL while its two run processes train; none of them survives, the kernel drops the lock,
and a rerun finishes the study. A second study on a held folder exits 2 naming the holder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bsmamba.study.lock import FolderLock, FolderLocked, describe, holder


def _study(out: Path, *extra: str, **kw) -> subprocess.Popen:
    # Two simulated GPUs: each run process is pinned to one (CPU training all the same).
    cmd = [sys.executable, "-m", "bsmamba.cli", "study", "--recipe", "smoke"]
    cmd += ["--systems", "modified,abl1", "--out", str(out), "study.gpus=[0,1]", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, text=True, **kw)


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(d.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_leaves_no_worker_and_a_second_study_is_refused(tmp_path):
    out = tmp_path / "study"
    log = (tmp_path / "first.log").open("w")
    first = _study(out, stdout=log, stderr=subprocess.STDOUT)
    try:
        who = _wait(lambda: holder(out), 120, "the study to take its lock")
        assert who["pid"] == first.pid and who["host"] == socket.gethostname()

        # A second study on the same folder is refused before any work, naming the holder.
        second = _study(out, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert f"pid {first.pid}" in err and socket.gethostname() in err
        assert who["started"] in err and len(err.strip().splitlines()) == 1

        # Kill the main process while both run processes are training.
        def training():
            kids = _children(first.pid)
            runs = [out / s / "s0" / ".lock" for s in ("modified", "abl1")]
            return kids if len(kids) >= 2 and all(holder(r.parent) for r in runs) else None

        kids = _wait(training, 300, "two run processes holding their run locks")
        run_pids = {holder(out / s / "s0")["pid"] for s in ("modified", "abl1")}
        assert run_pids <= kids
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        _wait(lambda: not any(_alive(p) for p in kids), 30, f"processes {kids} to die")
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    # The kernel dropped the locks with their holders: nobody holds the study or its runs.
    assert holder(out) is None
    assert all(holder(out / s / "s0") is None for s in ("modified", "abl1"))
    assert (out / ".lock").exists()  # the stale file stays, and is simply taken over

    rerun = _study(out, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stdout[-2000:] + stderr[-2000:]
    gpus = []
    for s in ("modified", "abl1"):
        rec = json.loads((out / s / "s0" / "stages" / "evaluate.json").read_text())
        assert rec["status"] == "done"
        train = json.loads((out / s / "s0" / "stages" / "train.json").read_text())
        assert train["worker"]["launcher"] == "local" and train["worker"]["pid"] != first.pid
        gpus.append(train["worker"]["gpus"])
    # Each run saw its own GPU; the progress lines say which ran where.
    assert sorted(gpus) == [["0"], ["1"]]
    assert "on GPU 0" in stdout and "on GPU 1" in stdout


def test_stale_lock_is_taken_over_and_a_held_one_names_its_holder(tmp_path):
    # A lock file left by a dead process (identity written, no flock) is simply taken over.
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone"}))
    assert holder(tmp_path) is None
    with FolderLock(tmp_path, what="study", job_id="77_3"):
        me = holder(tmp_path)
        assert me["pid"] == os.getpid() and me["job_id"] == "77_3"
        # Another process cannot take it while we hold it: it is told who holds it.
        probe = (
            "import sys; from bsmamba.study.lock import FolderLock\n"
            f"FolderLock({str(tmp_path)!r}).acquire()"
        )
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert res.returncode != 0 and "FolderLocked" in res.stderr
        assert f"pid {os.getpid()}" in res.stderr and "job 77_3" in res.stderr
        # Nor can a second lock in this process (flock is per open file).
        with pytest.raises(FolderLocked, match=re.escape(describe(me))):
            FolderLock(tmp_path).acquire()
    assert holder(tmp_path) is None and (tmp_path / ".lock").read_text() == ""
