"""A real training process SIGKILLed mid-run: its last checkpoint loads, and --resume finishes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import torch
from test_train_run import make_dataset, tiny

MAX_STEPS = 14


def _step_of(ckpt) -> int:
    try:  # the file is replaced atomically, so a read sees a whole checkpoint or the old one
        return int(torch.load(ckpt, weights_only=True)["global_step"])
    except FileNotFoundError:
        return -1


def test_sigkill_then_resume_completes(tmp_path):
    data, out = make_dataset(tmp_path / "vb"), tmp_path / "run"
    overrides = tiny(data, out, f"train.max_steps={MAX_STEPS}", "train.epochs=50")
    overrides += ["train.ckpt_every_n_steps=1", "model.dim=8", "train.log_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bsmamba.cli", "train", *overrides]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    try:
        while _step_of(last) < 3:  # a few checkpoints in: kill it while it keeps writing them
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()
    killed_at = _step_of(last)
    assert 3 <= killed_at < MAX_STEPS  # it was killed mid-run, and what is on disk loads
    meta = torch.load(last, weights_only=True)["bsmamba"]
    assert meta["model_config"]["dim"] == 8

    done = subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", "train", "--resume", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == MAX_STEPS
    assert results["model_config"]["dim"] == 8  # resumed with the run's own config
    assert not list((out / "checkpoints").glob(".*.tmp"))  # no temp file left behind
    assert _step_of(last) == MAX_STEPS
    # The log keeps the killed run's rows and the resumed run's, each step once.
    rows = csv.DictReader(open(out / "logs" / "csv" / "metrics.csv"))
    steps = [int(r["step"]) for r in rows if r.get("loss")]
    assert steps == sorted(set(steps)) and len(steps) >= MAX_STEPS - 1, steps
