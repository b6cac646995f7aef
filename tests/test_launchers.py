"""Where a study's runs execute: GPU assignment (pure), the local pool (real processes), SLURM.

The GPU list is simulated (``study.gpus`` / ids handed to the pool): the pool pins each run to
its GPUs through ``CUDA_VISIBLE_DEVICES`` in a real spawned process, and the workers report the
environment they saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

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


def big(name: str) -> str:
    return name * 300_000  # more than a pipe holds: the parent must read while the child sends


def test_pool_pins_each_run_to_its_own_gpus(tmp_path):
    gpus = ["0", "1", "2", "3"]
    tasks = [(f"r{i}", str(tmp_path), 2.0) for i in range(4)]
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
    out = launchers.run_pool([("y",), ("z",)], big, gpus=[], jobs=2, say=lambda _: None)
    assert out == [(True, "y" * 300_000), (True, "z" * 300_000)]


def test_a_run_needing_more_gpus_than_there_are_is_refused_before_work():
    with pytest.raises(ValueError, match="train.devices=3 needs 3 GPUs per run"):
        launchers.run_pool([("a",)], fail, gpus=["0", "1"], jobs=0, need=3)


# ----------------------------------------------------------------------------- SLURM (submitit)
submitit = pytest.importorskip("submitit")  # in the `test` and `cluster` extras


def _descendants(pid: int) -> set[int]:
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    kids[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in kids.items() if p in frontier} - found
        found |= frontier
    return found


def _wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def slurm_study(tmp_path_factory):
    """The smoke study through the slurm launcher's code path with submitit's local executor
    (real subprocesses): one job is killed half-way, the rerun resubmits only it."""
    import signal

    from bsmamba.study import report, runner
    from bsmamba.study.lock import holder

    out = tmp_path_factory.mktemp("slurm") / "study"
    overrides = ["study.recipe=smoke", "study.systems=[modified,abl1]", f"study.out={out}"]
    cfg = runner.study_config(None, [*overrides, "study.launcher=slurm"])

    def executor():
        ex = submitit.LocalExecutor(folder=str(out / "slurm"))
        ex.update_parameters(timeout_min=10)
        return ex

    first = runner.run_study(cfg, executor=executor(), echo=lambda _: None)
    assert first["results"] is None  # runs in flight: no report yet
    assert {st["train"] for r in first["runs"].values() for st in r.values()} == {"submitted"}
    by_run = dict(zip(["modified/s0", "abl1/s0"], first["jobs"], strict=True))
    # Once each run is locked and training has started (the run dir's config is written):
    # modified's job gets SLURM's time-limit signal (USR2) and must requeue itself; abl1's job
    # is killed with SIGKILL, as a node failure would.
    for name in ("modified", "abl1"):
        run = out / name / "s0"
        _wait_for(
            lambda r=run: holder(r) and (r / "environment.json").exists(), 300, f"{name} training"
        )
    os.kill(holder(out / "modified" / "s0")["pid"], signal.SIGUSR2)
    for pid in _descendants(int(by_run["abl1/s0"].job_id)):
        with contextlib.suppress(ProcessLookupError):  # a short-lived child may be gone already
            os.kill(pid, signal.SIGKILL)
    run = out / "abl1" / "s0"
    assert by_run["modified/s0"].result() is not None  # requeued, it finishes by itself
    log = Path(by_run["modified/s0"].paths.stdout).read_text()
    assert "Requeued job" in log and log.count("train     running") == 2
    _wait_for(lambda: by_run["abl1/s0"].done(), 60, "the killed job to end")
    assert not (run / "stages" / "evaluate.json").exists()  # killed before it was scored
    second = runner.run_study(cfg, executor=executor(), echo=lambda _: None)
    assert len(second["jobs"]) == 1  # only the unfinished run is submitted again
    second["jobs"][0].result()
    return out, cfg, first, second, report.build(out)


def test_slurm_jobs_write_the_studys_records_and_resubmit_only_what_is_unfinished(slurm_study):
    out, _, first, second, doc = slurm_study
    assert second["runs"]["modified"]["0"]["evaluate"] == "done"
    assert second["runs"]["abl1"]["0"]["evaluate"] == "submitted"
    for s in ("modified", "abl1"):
        for stage in ("train", "enhance", "evaluate"):
            rec = json.loads((out / s / "s0" / "stages" / f"{stage}.json").read_text())
            assert rec["status"] == "done", (s, stage)
        worker = json.loads((out / s / "s0" / "stages" / "train.json").read_text())["worker"]
        assert worker["launcher"] == "slurm" and worker["job_id"]
    # The submitting (login) node judged memory for the jobs' GPUs: a CUDA prediction.
    plan = json.loads((out / "abl1" / "memory.json").read_text())["plan"]
    assert plan["device"] == "cuda" and plan["verdict_basis"] == "predicted"
    abl1 = json.loads((out / "abl1" / "s0" / "stages" / "train.json").read_text())["worker"]
    assert abl1["job_id"] == str(second["jobs"][0].job_id)  # trained by the resubmitted job
    modified = json.loads((out / "modified" / "s0" / "stages" / "train.json").read_text())
    assert modified["worker"]["job_id"] == str(first["jobs"][0].job_id)  # the requeued job
    assert doc["systems"] == ["modified", "abl1"] and (out / "report.md").exists()


def test_slurm_submission_is_one_array_task_per_unfinished_run(slurm_study, tmp_path):
    """The real ``submitit.SlurmExecutor`` through the CLI, with ``sbatch`` and ``srun``
    stand-ins on PATH that keep the script (no cluster here): its parameters come from the
    config, and every unfinished system x seed is one task of the array."""
    import pickle
    import subprocess
    import sys

    out, _, _, _, _ = slurm_study
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch.sh"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    sbatch = f'#!/bin/sh\ncp "$1" {record}\necho "Submitted batch job 4242"\n'
    (bin_dir / "sbatch").write_text(sbatch)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    for s in ("modified", "abl1"):  # both runs lose their scores: both are unfinished again
        (out / s / "s0" / "stages" / "evaluate.json").unlink()
    cmd = [sys.executable, "-m", "bsmamba.cli", "study", "--recipe", "smoke", "--out", str(out)]
    cmd += ["--systems", "modified,abl1", "study.launcher=slurm", "study.slurm_partition=gpu"]
    cmd += ["study.slurm_time_min=600", "study.slurm_mem_gb=48", "study.slurm_cpus_per_gpu=6"]
    cmd += ["train.devices=2", "train.num_nodes=2", "study.slurm_setup=[module load cuda]"]
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert re.search(r"modified/s0\s+submitted as SLURM job 4242_0", res.stdout)
    assert re.search(r"abl1/s0\s+submitted as SLURM job 4242_1", res.stdout)

    script = record.read_text()
    flags = dict(
        line[len("#SBATCH --") :].split("=", 1) for line in script.splitlines()
        if line.startswith("#SBATCH --") and "=" in line
    )  # fmt: skip
    assert flags["array"] == "0-1%2" and flags["partition"] == "gpu"
    assert flags["time"] == "600" and flags["mem"] == "48GB" and flags["cpus-per-task"] == "6"
    # DDP inside a run: one task per GPU on each node; Lightning reads SLURM's environment.
    assert flags["nodes"] == "2" and flags["gpus-per-node"] == "2"
    assert flags["ntasks-per-node"] == "2" and flags["signal"] == "USR2@120"
    assert "module load cuda" in script and "submitit.core._submit" in script
    # Each array task carries one (system, seed) call of StudyJob.
    calls = []
    for i in (0, 1):
        with open(out / "slurm" / f"4242_{i}_submitted.pkl", "rb") as f:
            delayed = pickle.load(f)
        assert type(delayed.function).__name__ == "StudyJob"
        calls.append(delayed.args[1:3])
    assert calls == [("modified", 0), ("abl1", 0)]


_SRUN = """#!/bin/bash
# srun on one node: SLURM_NTASKS_PER_NODE tasks of "$@", each with its own rank variables
pids=()
for ((i = 0; i < SLURM_NTASKS_PER_NODE; i++)); do
    SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 "$@" &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""


def test_the_documented_sbatch_example_trains_ddp_under_slurms_environment(tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from test_train_run import make_dataset, tiny

    doc = (Path(__file__).parents[1] / "docs" / "study.md").read_text()
    block = doc.split("### One training run on many nodes", 1)[1].split("```bash", 1)[1]
    block = block.split("```", 1)[0]
    assert "#SBATCH --ntasks-per-node=4" in block and "#SBATCH --gpus-per-node=4" in block
    (line,) = [ln for ln in block.splitlines() if ln.startswith("srun ")]
    data, out = make_dataset(tmp_path / "vb"), tmp_path / "ddp"
    extra = tiny(data, out, "train.max_steps=3", "train.epochs=2", "model.dim=8")
    extra.append("train.device=cpu")
    line = line.replace("srun bsmamba ", f"srun {sys.executable} -m bsmamba.cli ", 1)
    line += " " + " ".join(extra)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(_SRUN)
    (bin_dir / "srun").chmod(0o755)
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slurm = {
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NNODES": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "bsmamba-abl3",
        "SLURM_NODELIST": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    env = {**os.environ, **slurm, "DATA": str(data), "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    res = subprocess.run(
        ["bash", "-c", line], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["steps"] == 3
    assert results["ddp"]["in_sync"] and len(results["ddp"]["weights_sha256"]) == 2


def test_a_run_on_two_devices_trains_with_ddp_under_torchrun(tmp_path):
    """train.devices=2 in a study: the run process starts the two ranks through torchrun (CPU,
    gloo here), not through Lightning, which would re-run the study's own command line."""
    import subprocess
    import sys

    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "bsmamba.cli", "study", "--recipe", "smoke", "--out", str(out)]
    cmd += ["--systems", "modified", "train.devices=2", "train.device=cpu", "study.test_limit=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    train = json.loads((out / "modified" / "s0" / "stages" / "train.json").read_text())
    assert train["status"] == "done" and train["results"]["world_size"] == 2
    assert train["results"]["ddp"]["in_sync"]
    assert (
        json.loads((out / "modified" / "s0" / "stages" / "evaluate.json").read_text())["status"]
        == "done"
    )


def test_slurm_launcher_without_slurm_is_refused_before_any_work(tmp_path):
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"  # a PATH with python but without sbatch/srun
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    out = tmp_path / "study"
    cmd = [str(bin_dir / "python"), "-m", "bsmamba.cli", "study", "--recipe", "smoke"]
    cmd += ["--out", str(out), "study.launcher=slurm"]
    res = subprocess.run(
        cmd, env=dict(os.environ, PATH=str(bin_dir)), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().count("\n") == 0 and "`sbatch` is not on PATH" in res.stderr
    assert not out.exists()  # nothing was written
