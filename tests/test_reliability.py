"""Trying to break bsmamba as a user would (issue 11): every case through the real CLI, in a
subprocess, on real files: bad input, a read-only or full disk, damaged records, kill -9.

Each test asserts the outcome a user relies on: nothing of theirs overwritten, nothing finished
lost, one line on stderr naming the file or value and the fix, and the exit code (0 done, 1 done
with failures named, 2 refused or stopped). docs/reliability.md is the table of these promises.

A full disk is a small tmpfs (mounting needs root with CAP_SYS_ADMIN, as in CI); without it, a
file-size limit (RLIMIT_FSIZE: writes fail with EFBIG) stands in. A read-only folder is a tmpfs
remounted read-only, else an immutable folder (``chattr +i``); ``chmod`` stops no root process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import bsmamba
from bsmamba import checkpoint as ckpt_io

SPEECH = sf.read(Path(__file__).parent / "data" / "arctic_a0007.wav", dtype="float32")[0]
FS = 16000


def _cli(*args, timeout=300, preexec=None, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        cwd=cwd,
    )


def _refused(p: subprocess.CompletedProcess, command: str, *words: str, code: int = 2) -> str:
    """Exit ``code``, and stderr is one line: ``bsmamba COMMAND: error: ...`` with ``words``."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith(f"bsmamba {command}: error: "), p.stderr
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


def _digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below ``folder`` (what 'unchanged' means)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _wav(path: Path, seconds: float, offset: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * FS)
    sf.write(path, np.resize(SPEECH[offset:], n) * 0.8, FS)
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path``; yields False where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)]
    if shutil.which("mount") is None or subprocess.run(cmd, capture_output=True).returncode:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def _read_only(path: Path):
    """``path``: a folder no process (root included) can write into; yields how."""
    with _tmpfs(path, "1m") as mounted:
        if mounted and not subprocess.run(["mount", "-o", "remount,ro", str(path)]).returncode:
            yield "tmpfs remounted read-only"
            return
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("chattr") and not subprocess.run(["chattr", "+i", str(path)]).returncode:
        try:
            yield "immutable folder (chattr +i)"
        finally:
            subprocess.run(["chattr", "-i", str(path)])
        return
    pytest.skip("neither a read-only tmpfs (mount) nor chattr +i is permitted here")


@contextlib.contextmanager
def _small_disk(path: Path, size: int):
    """A folder whose disk holds about ``size`` bytes: (folder, preexec_fn for the writer).

    A tmpfs of that size, else the writer's file size limit (RLIMIT_FSIZE) at ``size``: one
    file over it fails with EFBIG, as one file that does not fit fails with ENOSPC.
    """
    with _tmpfs(path, f"{size // 1024}k") as mounted:
        if mounted:
            yield path, None
            return

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    yield path, limit


def _no_temps(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*.tmp")], list(folder.rglob(".*.tmp"))


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = bsmamba.build_model("abl3", dim=8)
    return ckpt_io.save_model(tmp_path_factory.mktemp("ck") / "abl3.ckpt", model)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A real (smoke) study of one system: training runs, records, per-utterance CSVs."""
    out = tmp_path_factory.mktemp("study") / "st"
    p = _cli("study", "--recipe", "smoke", "--systems", "abl3", "--out", out, "study.jobs=1",
             timeout=600, preexec=lambda: os.umask(0o022))  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out


# ----------------------------------------------------------------------------- enhance
def test_enhance_never_overwrites_its_input(ckpt, tmp_path):
    src = tmp_path / "in"
    _wav(src / "a.wav", 0.5), _wav(src / "b.wav", 0.5, 4000)
    before = _digest(src)
    _refused(_cli("enhance", ckpt, src, src), "enhance", f"output folder {src} is the input")
    _refused(_cli("enhance", ckpt, src / "a.wav", src / "a.wav"), "enhance", "would overwrite")
    _refused(_cli("enhance", ckpt, src / "a.wav", src), "enhance", "would overwrite")
    clean = tmp_path / "clean"  # a folder of the user's own files, e.g. the clean references
    _wav(clean / "a.wav", 0.5, 8000)
    theirs = _digest(clean)
    _refused(_cli("enhance", ckpt, src, clean), "enhance", "not written by bsmamba enhance")
    assert _digest(src) == before and _digest(clean) == theirs


def test_enhance_into_a_folder_inside_the_input_does_not_enhance_it_again(ckpt, tmp_path):
    src = tmp_path / "in"
    _wav(src / "a.wav", 0.5), _wav(src / "spk" / "b.wav", 0.5, 4000)
    before = _digest(src)
    for run in range(2):
        p = _cli("enhance", ckpt, src, src / "enhanced")
        assert p.returncode == 0 and "2 file(s)" in p.stdout, (run, p.stdout, p.stderr)
    p = _cli("enhance", ckpt, src, tmp_path / "elsewhere")  # its marker keeps it out too
    assert p.returncode == 0 and "2 file(s)" in p.stdout and "left out" in p.stdout
    assert sorted(_digest(src / "enhanced")) == [".bsmamba-enhance.json", "a.wav", "spk/b.wav"]
    assert {k: v for k, v in _digest(src).items() if not k.startswith("enhanced/")} == before


def test_enhance_name_clash_is_refused_before_any_work(ckpt, tmp_path):
    src = tmp_path / "in"
    _wav(src / "a.wav", 0.5), _wav(src / "b.wav", 0.5)
    sf.write(src / "a.flac", SPEECH[:8000], FS)
    out = tmp_path / "out"
    line = _refused(_cli("enhance", ckpt, src, out), "enhance", "would both be written to")
    assert str(src / "a.flac") in line and str(src / "a.wav") in line and str(out / "a.wav") in line
    assert not out.exists()


def test_enhance_folder_into_an_existing_file_is_refused(ckpt, tmp_path):
    src = tmp_path / "in"
    _wav(src / "a.wav", 0.5)
    target = _wav(tmp_path / "result.wav", 0.5, 3000)
    before = target.read_bytes()
    _refused(_cli("enhance", ckpt, src, target), "enhance", "is a folder", "is a file")
    assert target.read_bytes() == before


def test_enhance_read_only_output_is_one_line(ckpt, tmp_path):
    src = tmp_path / "in"
    _wav(src / "a.wav", 0.5)
    with _read_only(tmp_path / "ro"):
        p = _cli("enhance", ckpt, src, tmp_path / "ro" / "out")
        _refused(p, "enhance", tmp_path / "ro")
        assert p.stdout == ""  # refused before the model was loaded
        p = _cli("enhance", ckpt, src / "a.wav", tmp_path / "ro" / "a.wav")
        _refused(p, "enhance", tmp_path / "ro")


def test_enhance_full_disk_keeps_what_was_written(ckpt, tmp_path):
    src = tmp_path / "in"
    # 16 kB, 16 kB, then 96 kB: the third does not fit on a 64 kB disk
    _wav(src / "a.wav", 0.5), _wav(src / "b.wav", 0.5, 4000), _wav(src / "c.wav", 3.0)
    _wav(src / "d.wav", 0.5)
    with _small_disk(tmp_path / "disk", 64 * 1024) as (disk, limit):
        p = _cli("enhance", ckpt, src, disk / "out", preexec=limit)
        line = _refused(p, "enhance", disk / "out" / "c.wav", "2 file(s) written before it")
        assert ("disk is full" if limit is None else "file too large") in line
        for name in ("a.wav", "b.wav"):  # complete: every sample of the input is there
            assert sf.info(disk / "out" / name).frames == sf.info(src / name).frames
        assert not (disk / "out" / "c.wav").exists() and not (disk / "out" / "d.wav").exists()
        _no_temps(disk)


def test_enhance_truncated_input_and_exit_codes(ckpt, tmp_path):
    src = tmp_path / "in"
    _wav(src / "a.wav", 0.5)
    whole = _wav(src / "t.wav", 1.0).read_bytes()
    (src / "t.wav").write_bytes(whole[: len(whole) // 2])  # a copy that stopped half-way
    p = _cli("enhance", ckpt, src, tmp_path / "out")
    assert p.returncode == 1 and "1 file(s)" in p.stdout and "1 skipped" in p.stdout
    assert f"skipped {src / 't.wav'}: truncated: header says 32000 data bytes" in p.stdout
    assert not (tmp_path / "out" / "t.wav").exists()  # not half a file enhanced as if whole
    p = _cli("enhance", ckpt, src, tmp_path / "out", "--allow-partial")
    assert p.returncode == 0, p.stderr


def _stop_after_first_output(ckpt, src: Path, out: Path, sig: int) -> subprocess.Popen:
    """Start `enhance`, send ``sig`` once its first output file is there, wait for it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsmamba.cli", "enhance", str(ckpt), str(src), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        # Ctrl-C's default action even when this runs in a background job (which ignores
        # SIGINT, and a child that inherits that never sees the signal)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob("f*.wav")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.01)
    finally:
        proc.send_signal(sig)
        proc.wait(timeout=120)
    return proc


def test_enhance_interrupted_or_killed_leaves_only_complete_files(ckpt, tmp_path):
    src, n = tmp_path / "in", 12
    for i in range(n):
        _wav(src / f"f{i:02d}.wav", 4.0, 1000 * i)
    before = _digest(src)
    for sig in (signal.SIGINT, signal.SIGKILL):
        out = tmp_path / f"out-{sig.name}"
        proc = _stop_after_first_output(ckpt, src, out, sig)
        written = sorted(out.glob("f*.wav"))
        assert 1 <= len(written) < n
        for w in written:  # a file under its real name is whole, whenever the signal came
            assert sf.info(w).frames == 4 * FS
        if sig == signal.SIGINT:  # Ctrl-C: one line, 130, and its temp file removed
            assert proc.returncode == 130, proc.stderr.read()
            assert proc.stderr.read().strip() == "bsmamba enhance: interrupted"
            _no_temps(out)
        else:
            assert proc.returncode == -signal.SIGKILL
    assert _digest(src) == before
    p = _cli("enhance", ckpt, src, out)  # a rerun completes (and does not trip on temp files)
    assert p.returncode == 0 and f"{n} file(s)" in p.stdout, p.stderr


def test_enhance_random_bytes_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    _wav(tmp_path / "a.wav", 0.5)
    line = _refused(_cli("enhance", bad, tmp_path / "a.wav", tmp_path / "o.wav"), "enhance",
                    f"{bad} is not a bsmamba checkpoint")  # fmt: skip
    assert "weights_only" not in line and not (tmp_path / "o.wav").exists()


def test_files_get_the_mode_the_umask_gives(ckpt, tmp_path):
    _wav(tmp_path / "in" / "a.wav", 0.5)
    for umask in (0o022, 0o027):
        out = tmp_path / f"out{umask:o}"
        p = _cli("enhance", ckpt, tmp_path / "in", out, preexec=lambda m=umask: os.umask(m))
        assert p.returncode == 0, p.stderr
        for f in (out / "a.wav", out / ".bsmamba-enhance.json"):
            assert _mode(f) == 0o666 & ~umask, (f, oct(_mode(f)))


# ----------------------------------------------------------------------------- evaluate
def _pairs(root: Path, silent: str | None = None) -> tuple[Path, Path]:
    clean, enh = root / "clean", root / "enh"
    enh.mkdir(parents=True)
    for i, name in enumerate(("a.wav", "b.wav", "c.wav")):
        ref = sf.read(_wav(clean / name, 1.5, 5000 * i), dtype="float32")[0]
        sf.write(enh / name, ref + 0.01 * np.random.default_rng(i).standard_normal(len(ref)), FS)
    if silent:
        sf.write(enh / silent, np.zeros(int(1.5 * FS), "float32"), FS)
    return clean, enh


def test_evaluate_read_only_out_is_refused_before_scoring(tmp_path):
    clean, enh = _pairs(tmp_path)
    with _read_only(tmp_path / "ro"):
        p = _cli("evaluate", "--clean", clean, "--enhanced", enh, "--out", tmp_path / "ro" / "x",
                 "--workers", "0")  # fmt: skip
        _refused(p, "evaluate", tmp_path / "ro")
        assert p.stdout == ""  # nothing scored, so nothing thrown away


def test_evaluate_full_disk_after_scoring_keeps_the_scores(tmp_path):
    clean, enh = _pairs(tmp_path)
    rescue = tmp_path / "tmp"
    rescue.mkdir()
    with _small_disk(tmp_path / "disk", 4096) as (disk, limit):
        if limit is None:  # fill the tmpfs: a file can be made there (the check), not written
            (disk / "filler").write_bytes(b"\0" * 4096)
        else:  # one byte: every write fails, the empty probe file does not
            limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))  # noqa: E731
        p = _cli("evaluate", "--clean", clean, "--enhanced", enh, "--out", disk / "x",
                 "--workers", "0", preexec=limit, env={"TMPDIR": str(rescue)})  # fmt: skip
        line = _refused(p, "evaluate", f"could not write {disk / 'x' / 'per_utterance.csv'}")
        assert "PESQ" in p.stdout and "3 of 3 pairs scored" in p.stdout  # the table is printed
        if limit is None:  # the scores went to a temp folder instead, and the line says where
            saved = next(rescue.glob("bsmamba-evaluate-*"))
            assert str(saved) in line
            assert json.loads((saved / "summary.json").read_text())["scored"] == 3
            assert len((saved / "per_utterance.csv").read_text().splitlines()) == 4
        _no_temps(disk)


def test_evaluate_exit_codes_and_a_silent_output(tmp_path):
    clean, enh = _pairs(tmp_path, silent="b.wav")
    args = ["evaluate", "--clean", clean, "--enhanced", enh, "--workers", "0"]
    p = _cli(*args, "--json")
    assert p.returncode == 1 and "1 of 3 pair(s) not fully scored" in p.stderr
    s = json.loads(p.stdout)
    assert s["partial"] == 1 and s["metrics"]["enhanced"]["pesq"]["failures"] == 1
    assert "PESQ found no speech" in s["problems"][0]["error"]
    assert "NaN" not in s["problems"][0]["error"]
    assert _cli(*args, "--allow-partial").returncode == 0


# ----------------------------------------------------------------------------- config, train
@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "train.batch_size=abc"], "train.batch_size=abc: not an integer, valid >= 1"),
        (["train", "data.segment_s=nan"], "data.segment_s=nan: not a finite number, valid > 0"),
        (["train", "train.threads=-5"], "train.threads=-5: out of range, valid >= 0"),
        (["train", "train.lr=-1"], "train.lr=-1.0: out of range, valid > 0"),
        (["study", "--seeds", "0"], "study.seeds=0: out of range, valid >= 1"),
        (["plan", "train.batch_size=0"], "train.batch_size=0: out of range, valid >= 1"),
    ],
    ids=["batch_size=abc", "segment_s=nan", "threads=-5", "lr=-1", "seeds=0", "plan"],
)
def test_bad_config_values_are_one_line_before_any_work(tmp_path, args, words):
    out = tmp_path / "out"
    where = ["--out", out] if args[0] == "study" else [f"train.out={out}"]
    p = _cli(*args, *where, cwd=tmp_path)
    _refused(p, args[0], words)
    assert p.stdout == "" and not out.exists() and not (tmp_path / "runs").exists()


def test_enhance_tiny_chunk_is_one_line(ckpt, tmp_path):
    _wav(tmp_path / "a.wav", 0.5)
    p = _cli("enhance", ckpt, tmp_path / "a.wav", tmp_path / "o.wav", "--chunk-s", "0.01")
    _refused(p, "enhance", "--chunk-s=0.01: out of range, valid >= 1")
    assert p.stdout == "" and not (tmp_path / "o.wav").exists()


@pytest.mark.slow  # the real study fixture: ~15 s of CPU
def test_resume_with_another_preset_changes_nothing(study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study / "abl3" / "s0", run)
    before = _digest(run)
    _refused(_cli("train", "--resume", run, "--preset", "bsrnn"), "train",
             f"{run} is a run of abl3", "model.preset=bsrnn cannot apply")  # fmt: skip
    assert _digest(run) == before  # results.json was not moved aside first


@pytest.mark.slow  # the real study fixture: ~15 s of CPU
def test_resume_with_a_damaged_results_file_names_it(study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study / "abl3" / "s0", run)
    text = (run / "results.json").read_text()
    (run / "results.json").write_text(text[: len(text) // 2])
    before = _digest(run)
    for args in (["--resume", run], [f"train.out={run}", "--preset", "abl3"]):
        _refused(_cli("train", *args), "train", f"{run / 'results.json'} is damaged",
                 "move it aside")  # fmt: skip
    assert _digest(run) == before


# ----------------------------------------------------------------------------- study, report
@pytest.mark.slow  # the real study fixture: ~15 s of CPU
def test_study_files_get_the_umask_mode(study):
    # checkpoints, results, stage records, enhanced wavs, plots, the report: all of them
    modes = {p.relative_to(study).as_posix(): _mode(p) for p in study.rglob("*") if p.is_file()}
    assert any(k.endswith(".ckpt") for k in modes) and any(k.endswith(".wav") for k in modes)
    assert {k: oct(m) for k, m in modes.items() if m != 0o644} == {}


@pytest.mark.slow  # the real study fixture: ~15 s of CPU
def test_report_on_a_truncated_per_utterance_csv_names_it_and_does_not_average(study, tmp_path):
    sdir = tmp_path / "st"
    shutil.copytree(study, sdir)
    whole = _cli("report", sdir)
    assert whole.returncode == 0, whole.stderr
    rows = (sdir / "abl3" / "s0" / "eval" / "per_utterance.csv").read_text()
    (sdir / "abl3" / "s0" / "eval" / "per_utterance.csv").write_text(rows[: len(rows) - 40])
    p = _cli("report", sdir)
    assert p.returncode == 1
    assert "per_utterance.csv: the last line is cut off" in p.stderr
    assert f"delete {sdir / 'abl3' / 's0' / 'stages' / 'evaluate.json'} and rerun" in p.stderr
    doc = json.loads((sdir / "results.json").read_text())
    assert doc["by_system"]["abl3"].get("metrics") is None  # not averaged over what is left
    table_row = next(ln for ln in p.stdout.splitlines() if ln.startswith("abl3"))
    assert table_row.split()[1] == "-"
    (sdir / "abl3" / "s0" / "stages" / "evaluate.json").unlink()  # the fix the line gives
    p = _cli("study", "--recipe", "smoke", "--systems", "abl3", "--out", sdir, "study.jobs=1",
             timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "abl3/s0        evaluate  done" in p.stdout and "train     reused" in p.stdout
    assert json.loads((sdir / "results.json").read_text())["by_system"]["abl3"]["metrics"]
