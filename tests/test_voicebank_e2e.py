"""VoiceBank+DEMAND end to end, as a user runs it, on the miniature release (tests/vbmini.py):

prepare-voicebank (zips, logfiles one level up, the 56-speaker set beside) -> train a few steps
(adversarial phase included) -> enhance -> evaluate -> study --recipe voicebank (tiny budget)
-> report, whose per-SNR rows come from the logfiles. Every step is the real CLI in a
subprocess; ~60 s on 2 cores.
"""

import csv
import json
import subprocess
import sys

import pytest
import soundfile as sf
import vbmini

LEVELS = ["2.5", "7.5", "12.5", "17.5"]  # the test SNRs of the release, from log_testset.txt

# ---- TRAIN STEP (kept small on purpose). The discriminator trains from the first step by
# default; `train.metricgan_adv_epoch=0` adds the generator's adversarial term from the first
# epoch too (default: from epochs / 2). If it is renamed, change ADVERSARIAL only.
ADVERSARIAL = ["train.metricgan_adv_epoch=0"]
TINY = [
    "train.max_steps=2",
    "data.segment_s=0.5",
    "train.batch_size=2",
    "train.threads=1",
    "train.limit_train_batches=2",  # an epoch of 2 steps: validation runs once, on p226/p287
    "train.limit_val_batches=1",
    "train.val_pesq_subset=1",
    "train.progress=false",
    "memory.check=false",
    *ADVERSARIAL,
]


def _bsmamba(*args) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, f"bsmamba {' '.join(map(str, args))}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def vb(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    src = vbmini.make(tmp, zips=True, logfiles="up")
    dst = tmp / "vb16"
    res = _bsmamba("prepare-voicebank", src, dst, "--json")
    return {"tmp": tmp, "src": src, "dst": dst, "prepare": res}


def test_prepare(vb):
    summary = json.loads(vb["prepare"].stdout)
    rel = summary["release"]
    assert summary["files"] == summary["resampled"] == 40
    assert rel["logfiles"]["place"] == "one level up"
    assert sum("56-speaker" in i for i in rel["ignored"]) == 3
    assert vb["prepare"].stderr.count("warning: ") == 2  # the miniature's counts, named


@pytest.fixture(scope="module")
def run(vb):
    out = vb["tmp"] / "run"
    args = ["train", "--data", vb["dst"], "--preset", "bsrnn", f"train.out={out}", *TINY]
    res = _bsmamba(*args, "train.log_every=1", "--json")
    return out, json.loads(res.stdout)


def test_train_with_the_adversarial_phase(run):
    out, results = run
    assert results["steps"] == 2 and results["nonfinite_steps"] == 0
    assert (out / results["best_checkpoint"]).is_file()  # selected on p226/p287, not the test set
    rows = list(csv.DictReader((out / "logs/csv/metrics.csv").open()))
    steps = [r for r in rows if r["loss"]]
    assert len(steps) == 2
    for r in steps:  # both the generator's adversarial term and the discriminator's update ran
        assert float(r["loss_adv"]) > 0 and float(r["loss_disc"]) > 0


def test_enhance_then_evaluate_by_logged_snr(vb, run):
    dst, enhanced = vb["dst"], vb["tmp"] / "enhanced"
    _bsmamba("enhance", run[0], dst / "noisy_testset_wav", enhanced, "--threads", "1")
    for noisy in sorted((dst / "noisy_testset_wav").glob("*.wav")):
        assert sf.info(enhanced / noisy.name).frames == sf.info(noisy).frames
    res = _bsmamba(
        "evaluate", "--clean", dst / "clean_testset_wav", "--enhanced", enhanced,
        "--noisy", dst / "noisy_testset_wav", "--out", vb["tmp"] / "eval", "--workers", "0",
        "--json",
    )  # fmt: skip
    summary = json.loads(res.stdout)
    assert summary["scored"] == 8 and summary["failed"] == 0
    assert sorted(summary["by_snr"], key=float) == LEVELS
    assert all(summary["by_snr"][s]["count"] == 2 for s in LEVELS)


def test_study_and_report_rows_per_logged_snr(vb):
    out = vb["tmp"] / "study"
    _bsmamba(
        "study", "--recipe", "voicebank", "--data", vb["dst"], "--systems", "bsrnn",
        "--out", out, *TINY, "train.epochs=1", "study.seeds=1", "study.plan_measure=false",
        "study.examples=1", "study.bootstrap=200",
    )  # fmt: skip
    _bsmamba("report", out)
    doc = json.loads((out / "results.json").read_text())
    assert doc["recipe"] == "voicebank" and doc["n_test_utterances"] == 8
    assert doc["snr_grouping"] == "nominal mixing SNR (data manifest)"
    rows = {f"{s} dB" for s in LEVELS}
    assert set(doc["noisy"]["by_snr"]) == set(doc["by_system"]["bsrnn"]["by_snr"]) == rows
    for level in LEVELS:
        noisy = doc["noisy"]["by_snr"][f"{level} dB"]
        # The logged SNR is the audio's: the noisy input's SI-SDR sits at it.
        assert noisy["n_utterances"] == 2
        assert noisy["si_sdr"] == pytest.approx(float(level), abs=0.5)
    report = (out / "report.md").read_text()
    for level in LEVELS:
        assert f"| {level} dB | Noisy input |" in report and f"| {level} dB | bsrnn |" in report
