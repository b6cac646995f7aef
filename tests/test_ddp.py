"""DDP on 2 CPU processes (gloo) under torchrun: both ranks end with identical weights."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import torch
from test_train_run import make_dataset, tiny

from bsmamba.model import BandSplitEnhancer


def _torchrun_train(overrides: list[str], **env: str) -> subprocess.CompletedProcess:
    """``bsmamba train`` on 2 CPU processes under torchrun, one thread each (``env`` added)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "bsmamba.cli", "train", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_two_process_ddp_ranks_stay_identical(tmp_path):
    data, out = make_dataset(tmp_path / "vb"), tmp_path / "ddp"
    done = _torchrun_train(tiny(data, out, "train.max_steps=3", "train.epochs=2", "model.dim=8"))
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["steps"] == 3
    digests = results["ddp"]["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # ... and they are the weights rank 0 saved (same flattening as the run's digest).
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    model = BandSplitEnhancer(**results["model_config"])
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    assert hashlib.sha256(flat.numpy().tobytes()).hexdigest() == digests[0]
    # 8 training items over 2 ranks x batch 2 = 2 steps an epoch: one validation ran
    assert len(results["validation"]) == 1


def test_an_oom_on_one_rank_fails_the_job_fast_with_a_clear_message(tmp_path):
    # the ladder must not step down on one rank alone: that would hang the other in a collective
    data, out = make_dataset(tmp_path / "vb"), tmp_path / "ddp"
    overrides = tiny(data, out, "train.max_steps=3", "model.dim=8")
    t0 = time.monotonic()
    done = _torchrun_train(overrides, BSMAMBA_TEST_INJECT_OOM="1:1")  # step 1, rank 1
    assert done.returncode != 0
    assert "out of memory on rank 1 of 2" in done.stderr, done.stderr[-3000:]
    assert time.monotonic() - t0 < 120  # torchrun stopped rank 0: no wait for a timeout
    assert not (out / "results.json").exists()
