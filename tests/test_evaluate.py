"""evaluate: pairs by name, scores in worker processes, reports every bad file and goes on."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bsmamba import cli, metrics, schema
from bsmamba.evaluate import evaluate_dirs, table

DATA = Path(__file__).parent / "data"
FS = 16000


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A tiny prepared-style test set (real ARCTIC speech) plus one of every kind of bad file."""
    root = tmp_path_factory.mktemp("vb")
    clean_d, noisy_d, enh_d = (root / d for d in ("clean_testset_wav", "noisy_testset_wav", "enh"))
    for d in (clean_d, noisy_d, enh_d):
        d.mkdir()
    speech = sf.read(DATA / "arctic_a0007.wav", dtype="float32")[0]
    other = sf.read(DATA / "arctic_a0009.wav", dtype="float32")[0]
    entries = []
    for i, snr in enumerate((2.5, 7.5, 2.5)):
        clean = speech[i * 8000 : i * 8000 + 24000]
        noise = other[i * 8000 : i * 8000 + 24000]
        noise = noise * np.sqrt(np.sum(clean**2) / np.sum(noise**2) / 10 ** (snr / 10))
        name = f"p232_{i:03d}.wav"
        sf.write(clean_d / name, clean, FS)
        sf.write(noisy_d / name, clean + noise, FS)
        sf.write(enh_d / name, clean + 0.3 * noise, FS)  # a "model" that removes 70 %
        entries.append({"dir": "noisy_testset_wav", "file": name, "snr_db": snr})
    (root / "manifest.json").write_text(json.dumps({"files": entries}))
    ok = speech[:24000]
    with_nan = np.where(np.arange(24000) == 7, np.nan, ok)
    bad = {
        "p257_stereo.wav": lambda p: sf.write(p, np.stack([ok, ok], 1), FS),
        "p257_rate.wav": lambda p: sf.write(p, ok[::2], 8000),
        "p257_trunc.wav": lambda p: (sf.write(p, ok, FS), p.write_bytes(p.read_bytes()[:-999])),
        "p257_text.wav": lambda p: p.write_text("not audio"),
        "p257_nan.wav": lambda p: sf.write(p, with_nan, FS, "FLOAT"),
        "p257_short.wav": lambda p: sf.write(p, ok[:20000], FS),
        "p257_silent.wav": lambda p: sf.write(p, np.zeros(24000), FS),
    }  # fmt: skip
    for name, make in bad.items():
        sf.write(clean_d / name, ok, FS)
        sf.write(noisy_d / name, ok, FS)
        make(enh_d / name)
    sf.write(clean_d / "p257_lonely.wav", ok, FS)  # no enhanced twin
    sf.write(enh_d / "p999_extra.wav", ok, FS)  # no clean twin
    return root


def _problem(summary, name):
    return next(p for p in summary["problems"] if p["file"] == name)


@pytest.fixture(scope="module")
def scored(tree, tmp_path_factory):
    """One run with real worker processes, shared by the tests below."""
    out = tmp_path_factory.mktemp("scores")
    s = evaluate_dirs(
        tree / "clean_testset_wav", tree / "enh", tree / "noisy_testset_wav", out, workers=2
    )
    return s, out


def test_bad_files_are_named_counted_and_the_rest_scored(scored):
    s, tmp_path = scored
    assert s["kind"] == "evaluation" and s["pairs"] == 12
    assert s["metrics"]["enhanced"]["stoi"]["count"] == 4  # 3 good + silent (STOI defined)
    assert s["metrics"]["enhanced"]["pesq"]["count"] == 3
    assert s["metrics"]["enhanced"]["pesq"]["failures"] == 1  # the silent one
    assert s["failed"] == 8
    for name, words in {
        "p257_stereo.wav": "2 channels",
        "p257_rate.wav": "8000 Hz",
        "p257_trunc.wav": "truncated",
        "p257_text.wav": "not a readable audio",
        "p257_nan.wav": "NaN",
        "p257_short.wav": "20000 samples",
        "p257_lonely.wav": "no enhanced file",
        "p999_extra.wav": "no clean twin",
        "p257_silent.wav": "PESQ",
    }.items():
        p = _problem(s, name)
        assert words in p["error"] and name in p["error"], (name, p)
    assert _problem(s, "p257_silent.wav")["status"] == "partial"
    # On the good pairs the enhanced files beat the noisy input on every metric.
    rows = list(csv.DictReader((tmp_path / "per_utterance.csv").open()))
    good = [r for r in rows if r["file"].startswith("p232")]
    assert len(good) == 3
    for r in good:
        for k in ("pesq", "csig", "cbak", "covl", "ssnr", "stoi", "si_sdr"):
            assert float(r[k]) > float(r["noisy_" + k]), (r["file"], k)
    # Per-SNR breakdown from the manifest: 2 files at 2.5 dB, 1 at 7.5 dB.
    assert s["by_snr"]["2.5"]["count"] == 2 and s["by_snr"]["7.5"]["count"] == 1
    assert s["by_snr"]["7.5"]["noisy"]["si_sdr"]["mean"] == pytest.approx(7.5, abs=0.3)
    assert len(rows) == 12 and rows[0]["file"] == "p232_000.wav" and rows[0]["snr_db"] == "2.5"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["metrics"] == s["metrics"]


def test_in_process_equals_workers_and_direct_scores(tree, scored, tmp_path):
    noisy = tree / "noisy_testset_wav"
    one = evaluate_dirs(tree / "clean_testset_wav", tree / "enh", noisy, tmp_path, workers=0)
    assert one["metrics"] == scored[0]["metrics"] and one["by_snr"] == scored[0]["by_snr"]
    clean = sf.read(tree / "clean_testset_wav/p232_001.wav", dtype="float32")[0]
    enh = sf.read(tree / "enh/p232_001.wav", dtype="float32")[0]
    direct = metrics.score(clean, enh)
    assert set(direct) == set(schema.METRIC_KEYS)
    row = next(r for r in csv.DictReader((tmp_path / "per_utterance.csv").open())
               if r["file"] == "p232_001.wav")  # fmt: skip
    for k, v in direct.items():
        assert float(row[k]) == pytest.approx(v, rel=1e-5), k


def test_resample_on_request(tree, tmp_path):
    for d in ("c", "e"):
        (tmp_path / d).mkdir()
    wav = sf.read(tree / "clean_testset_wav/p232_000.wav", dtype="float32")[0]
    sf.write(tmp_path / "c/a.wav", wav, FS)
    import soxr

    sf.write(tmp_path / "e/a.wav", soxr.resample(wav, FS, 48000, "HQ"), 48000)
    s = evaluate_dirs(tmp_path / "c", tmp_path / "e", workers=0)
    assert s["failed"] == 1 and "resample" in s["problems"][0]["error"]
    s = evaluate_dirs(tmp_path / "c", tmp_path / "e", workers=0, resample=True)
    assert s["failed"] == 0 and s["metrics"]["enhanced"]["pesq"]["mean"] > 4.4


def test_cli(tree, tmp_path, capsys):
    args = ["evaluate", "--clean", str(tree / "clean_testset_wav"), "--enhanced"]
    rc = cli.main([*args, str(tree / "enh"), "--out", str(tmp_path), "--workers", "0"])
    captured = capsys.readouterr()
    assert "PESQ" in captured.out and "CSIG" in captured.out and "p257_stereo.wav" in captured.out
    assert rc == 1 and "9 of 12 pair(s) not fully scored" in captured.err  # 8 failed, 1 partial
    rc = cli.main([*args, str(tree / "enh"), "--out", str(tmp_path), "--json", "--workers", "0",
                   "--allow-partial"])  # fmt: skip
    assert rc == 0 and json.loads(capsys.readouterr().out)["pairs"] == 12
    rc = cli.main([*args, str(tmp_path / "nowhere")])
    assert rc == 2 and "nowhere" in capsys.readouterr().err


def test_noisy_twins_subfolders_and_loud_samples(tmp_path):
    """A bad or missing noisy twin costs only the noisy scores, by name; subfolders are paired;
    float samples beyond +-1 are scored with a note; a silent output is 'no speech'."""
    speech = sf.read(DATA / "arctic_a0007.wav", dtype="float32")[0][:24000]
    noise = 0.05 * np.random.default_rng(0).standard_normal(24000).astype("float32")
    c, e, n = (tmp_path / d for d in ("clean", "enh", "noisy"))
    for name in ("a.wav", "b.wav", "spk/c.wav", "loud.wav", "silent.wav"):
        for d, wav in ((c, speech), (e, speech + 0.3 * noise), (n, speech + noise)):
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            sf.write(d / name, wav, FS, "FLOAT")
    (n / "a.wav").write_bytes(b"")  # an empty noisy twin
    (n / "b.wav").unlink()  # a missing one
    sf.write(e / "loud.wav", 1.8 * speech / np.abs(speech).max(), FS, "FLOAT")
    sf.write(e / "silent.wav", np.zeros(24000, "float32"), FS)
    s = evaluate_dirs(c, e, n, tmp_path / "out", workers=0)
    rows = {r["file"]: r for r in csv.DictReader((tmp_path / "out/per_utterance.csv").open())}
    assert sorted(rows) == ["a.wav", "b.wav", "loud.wav", "silent.wav", "spk/c.wav"]
    assert s["pairs"] == 5 and s["failed"] == 0 and s["partial"] == 3  # a, b, silent
    for name, why in (("a.wav", f"{n / 'a.wav'}: empty file"), ("b.wav", "no noisy twin")):
        assert rows[name]["status"] == "partial" and why in rows[name]["error"], rows[name]
        assert float(rows[name]["pesq"]) > 1 and rows[name]["noisy_pesq"] == ""  # score kept
    assert rows["spk/c.wav"]["status"] == "ok" and float(rows["spk/c.wav"]["noisy_pesq"]) > 1
    assert "samples beyond ±1 (peak 1.8)" in rows["loud.wav"]["note"]
    assert rows["loud.wav"]["status"] == "ok" and s["notes"][0]["file"] == "loud.wav"
    silent = rows["silent.wav"]
    assert "PESQ found no speech" in silent["error"] and "NaN to integer" not in silent["error"]
    assert s["metrics"]["enhanced"]["pesq"]["failures"] == 1  # counted, not quietly dropped
    assert "(1 failed)" in table(s)


def test_there_is_no_device_flag_scoring_runs_on_the_cpu(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "bsmamba.cli", "evaluate", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--device" not in out.stdout and "on the CPU" in out.stdout
    cmd = [sys.executable, "-m", "bsmamba.cli", "evaluate", "--clean", str(tmp_path)]
    out = subprocess.run([*cmd, "--enhanced", str(tmp_path), "--device", "cuda"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "--device" in out.stderr
