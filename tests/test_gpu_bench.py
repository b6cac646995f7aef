"""benchmarks/gpu.py --dry: the GPU benchmark's code paths on the CPU at tiny sizes.

The real run needs a CUDA GPU (docs/memory.md); this proves the script's sections and its JSON
before one is at hand, and that its checks can fail (a tolerance, a budget).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    cmd = [sys.executable, str(SCRIPT), "--dry", "--presets", "modified", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout) == json.loads(out.read_text())
    return json.loads(res.stdout)


def test_dry_run_compares_the_scan_backends_in_both_precisions(dry):
    assert dry["kind"] == "benchmark" and dry["name"] == "gpu" and dry["dry"] is True
    assert dry["device"] == "cpu"
    scan = dry["scan"]
    assert scan["tolerance"] == {"float32": 1e-4, "bfloat16": 2e-2}
    fused = scan["by_backend"]["fused"]
    for dtype in ("float32", "bfloat16"):
        errors = fused[dtype]["by_tensor"]
        assert set(errors) == {"output"} | {
            f"grad_{k}" for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
        }
        assert fused[dtype]["max_error"] == max(errors.values())
        assert fused[dtype]["within_tolerance"]
    # bf16 inputs are rounded: the error is real but small; float32 is near exact
    assert fused["float32"]["max_error"] < 1e-5 < fused["bfloat16"]["max_error"]


def test_dry_run_measures_beside_the_prediction_and_times_both_precisions(dry):
    rows = dry["presets"]["by_preset"]
    assert list(rows) == ["modified"]
    r = rows["modified"]
    assert r["measured_peak_bytes"] > 0 and r["predicted_peak_bytes"] > 0
    err = r["predicted_peak_bytes"] / r["measured_peak_bytes"] - 1
    assert r["prediction_error"] == pytest.approx(err)
    assert r["within_tolerance"] == (abs(err) <= 0.10) and r["within_tolerance"]
    assert r["step_time_float32_s"] > 0 and r["step_time_bf16_mixed_s"] > 0


def test_dry_run_finds_the_largest_batch_by_real_steps(dry):
    mb = dry["max_batch"]
    assert mb["budget_bytes"] == 64 * 2**20 and mb["allocator_cap"] is None  # CPU: no cap
    r = mb["by_preset"]["modified"]
    b, tried = r["measured_max_batch_size"], r["by_batch_fits"]
    assert b >= 1 and tried[str(b)] is True and tried[str(b + 1)] is False
    assert r["prediction_safe"] == (r["predicted_max_batch_size"] <= b)


def test_without_a_gpu_the_real_run_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real run would start")
    res = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 2 and "--dry" in res.stderr and res.stdout == ""


def test_largest_batch_search_finds_the_answer_from_any_prediction():
    import importlib.util
    import time

    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    for true in (0, 1, 5, 37, 120):
        for start in (0, 1, 4, 37, 40, 200):
            calls: list[int] = []
            fits = lambda n, t=true, c=calls: c.append(n) or n <= t  # noqa: E731
            assert gpu.largest_batch(fits, start, time.monotonic() + 60) == true
            assert len(calls) <= 2 * (abs(start - true).bit_length() + 2)  # few real steps
