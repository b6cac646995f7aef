"""`bsmamba evaluate` without `--clean`: real DNSMOS (speechmos's models) on real speech."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba import cli

SPEECH = Path(__file__).parent / "data" / "arctic_a0007.wav"  # CMU ARCTIC, 16 kHz, 3.1 s
MISSING = [m for m in ("speechmos", "onnxruntime", "librosa") if not importlib.util.find_spec(m)]
needs_nr = pytest.mark.skipif(
    bool(MISSING), reason=f"the nr extra is not installed (missing: {', '.join(MISSING)})"
)


def _cli(*args, code=None):
    head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "bsmamba.cli"]
    return subprocess.run([*head, *args], capture_output=True, text=True, timeout=300)


@needs_nr
def test_clean_speech_scores_above_heavy_noise_and_bad_files_are_counted(tmp_path):
    clean, rate = sf.read(SPEECH, dtype="float32")
    noise = np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2))  # white noise at 0 dB SNR
    enhanced, noisy = tmp_path / "enhanced", tmp_path / "noisy"
    enhanced.mkdir()
    noisy.mkdir()
    sf.write(enhanced / "a0007.wav", clean, rate)
    sf.write(noisy / "a0007.wav", np.clip(clean + noise, -1, 1), rate)
    sf.write(enhanced / "loud.wav", 1.5 * clean / np.abs(clean).max(), rate, subtype="FLOAT")
    sf.write(enhanced / "silent.wav", np.zeros(16000, np.float32), rate)
    (enhanced / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")

    out = _cli("evaluate", "--enhanced", str(enhanced), "--noisy", str(noisy), "--workers", "2")
    assert out.returncode == 1, out.stderr  # some files were not scored (0 with --allow-partial)
    assert "OVRL" in out.stdout and "dnsmos.csv" in out.stdout
    assert "3 of 5 file(s) not scored" in out.stderr
    rows = list(csv.DictReader(open(enhanced / "evaluation" / "dnsmos.csv")))
    by = {(r["input"], r["file"]): r for r in rows}
    good, bad = by["enhanced", "a0007.wav"], by["noisy", "a0007.wav"]
    assert good["status"] == bad["status"] == "ok"
    assert float(good["ovrl"]) > float(bad["ovrl"]) + 0.5  # measured: 3.27 vs 1.66
    assert float(good["bak"]) > float(bad["bak"]) + 1.0  # measured: 4.06 vs 1.40
    for k in ("sig", "bak", "ovrl", "p808"):
        assert 1.0 <= float(good[k]) <= 5.0
    errors = {r["file"]: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == {"loud.wav", "silent.wav", "broken.wav"}
    assert "beyond [-1, 1]" in errors["loud.wav"] and "silence" in errors["silent.wav"]
    summary = json.loads((enhanced / "evaluation" / "dnsmos.json").read_text())
    assert summary["kind"] == "dnsmos" and summary["scored"] == 2 and summary["failed"] == 3
    assert summary["metrics"]["enhanced"]["ovrl"]["mean"] == pytest.approx(
        float(good["ovrl"]), abs=1e-5
    )
    assert summary["metrics"]["noisy"]["ovrl"]["count"] == 1


def test_missing_extra_and_wrong_rate_fail_clearly_before_any_work(tmp_path, capsys):
    sf.write(tmp_path / "a.wav", sf.read(SPEECH, dtype="float32")[0], 16000)
    block = "import sys\nsys.modules['speechmos'] = None\nfrom bsmamba import cli\n"
    out = _cli(code=block + f"sys.exit(cli.main(['evaluate', '--enhanced', {str(tmp_path)!r}]))")
    assert out.returncode == 2
    assert "needs the 'speechmos' package" in out.stderr and "bsmamba[nr]" in out.stderr
    assert cli.main(["evaluate", "--enhanced", str(tmp_path), "--sample-rate", "8000"]) == 2
    assert "DNSMOS scores 16 kHz audio" in capsys.readouterr().err
    assert cli.main(["evaluate", "--enhanced", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "file").write_text("not a folder")
    assert cli.main(["evaluate", "--enhanced", str(tmp_path), "--out", str(tmp_path / "file")]) == 2
    assert not (tmp_path / "evaluation").exists()
