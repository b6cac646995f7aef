"""Where a study's runs execute: GPU assignment (pure), the local pool (real processes), SLURM.

The GPU list is simulated (``study.gpus`` / ids handed to the pool): the pool pins each run to
its GPUs through ``CUDA_VISIBLE_DEVICES`` in a real spawned process, and the workers report the
environment they saw.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from bsmamba.study import launchers


# ----------------------------------------------------------------------------- pure assignment
def test_visible_gpus_prefers_the_explicit_list_then_the_environment():
    assert launchers.visible_gpus(["2", 3]) == ["2", "3"]
    assert launchers.visible_gpus(None, "1,3") == ["1", "3"]
    assert launchers.visible_gpus(None, "GPU-ab12,GPU-cd34") == ["GPU-ab12", "GPU-cd34"]
    assert launchers.visible_gpus(None, "") == [] and launchers.visible_gpus(None, "-1") == []
    assert launchers.visible_gpus(None, None, count=3) == ["0", "1", "2"]
    assert launchers.visible_gpus(None, None, count=0) == []


@pytest.mark.parametrize(
    ("n_gpus", "jobs", "per_run", "slots"),
    [
        (8, 0, 1, 8),  # default: one run per GPU
        (8, 0, 2, 4),  # train.devices=2: a run takes two
        (8, 3, 1, 3),  # study.jobs caps it
        (2, 5, 1, 2),  # ... and so do the GPUs (no sharing)
        (3, 0, 2, 1),  # 3 GPUs, 2 per run: one at a time, one GPU idle
        (0, 0, 1, 1),  # CPU: one at a time by default
        (0, 2, 1, 2),  # CPU: study.jobs processes
    ],
)
def test_concurrency(n_gpus, jobs, per_run, slots):
    assert launchers.concurrency(n_gpus, jobs, per_run) == slots


def test_take_gives_the_first_free_gpus_or_none():
    assert launchers.take(["0", "1", "2"], 2) == ["0", "1"]
    assert launchers.take(["3"], 2) is None
    assert launchers.take(["0"], 0) == []


# ----------------------------------------------------------------------------- the local pool
def record_env(name: str, folder: str, hold_s: float) -> dict:
    """A tiny run: what this process sees, and when it ran."""
    t0 = time.time()
    time.sleep(hold_s)
    seen = {
        "name": name,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "start": t0,
        "end": time.time(),
    }
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(seen, f)
    return seen


def fail(name: str) -> None:
    raise RuntimeError(f"{name} broke")


def die(name: str) -> None:
    os._exit(3)


def test_pool_pins_each_run_to_its_own_gpus(tmp_path):
    gpus = ["0", "1", "2", "3"]
    tasks = [(f"r{i}", str(tmp_path), 1.0) for i in range(4)]
    lines: list[str] = []
    out = launchers.run_pool(
        tasks, record_env, gpus=gpus, jobs=0, need=2, labels=[t[0] for t in tasks], say=lines.append
    )
    seen = [r for ok, r in out]
    assert all(ok for ok, _ in out)
    assert all(s["ppid"] == os.getpid() and s["pid"] != os.getpid() for s in seen)
    # Two GPUs per run, four GPUs: two runs at a time, each on its own pair.
    first, second = seen[:2], seen[2:]
    assert {s["cuda_visible_devices"] for s in first} == {"0,1", "2,3"}
    assert first[0]["end"] > first[1]["start"] and first[1]["end"] > first[0]["start"]  # overlap
    assert min(s["start"] for s in second) >= min(s["end"] for s in first) - 0.05
    assert {s["cuda_visible_devices"] for s in second} <= {"0,1", "2,3"}
    assert lines[0] == "[study] r0             on GPU 0,1"


def test_pool_without_gpus_runs_jobs_at_a_time_and_survives_a_failure(tmp_path):
    tasks = [("a",), ("b",), ("c",)]
    out = launchers.run_pool(
        [("a", str(tmp_path), 0.0)], record_env, gpus=[], jobs=2, say=lambda _: None
    )
    assert out[0][0] and out[0][1]["cuda_visible_devices"] == os.environ.get("CUDA_VISIBLE_DEVICES")
    out = launchers.run_pool(tasks, fail, gpus=[], jobs=2, say=lambda _: None)
    assert out == [(False, f"RuntimeError: {n} broke") for (n,) in tasks]
    out = launchers.run_pool([("x",)], die, gpus=[], jobs=2, say=lambda _: None)
    assert out == [(False, "run process died (exit status 3)")]


def test_a_run_needing_more_gpus_than_there_are_is_refused_before_work():
    with pytest.raises(ValueError, match="train.devices=3 needs 3 GPUs per run"):
        launchers.run_pool([("a",)], fail, gpus=["0", "1"], jobs=0, need=3)
