"""prepare-voicebank on a tiny 48 kHz tree made from real speech; the prepared-folder datasets."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from bsmamba import cli
from bsmamba.data import TestSet, TrainSet, resolve, voicebank
from bsmamba.data.voicebank import prepare

DATA = Path(__file__).parent / "data"
SPEAKERS = {"train": ["p226", "p230"], "test": ["p232"]}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """The release's four folders at 48 kHz, 2 utterances per speaker, + an SNR log."""
    root = tmp_path_factory.mktemp("vb48")
    speech = sf.read(DATA / "arctic_a0007.wav", dtype="float32")[0]
    noise = sf.read(DATA / "arctic_a0009.wav", dtype="float32")[0]
    log = []
    for subset, dirs in (("train", voicebank.TRAIN_DIRS), ("test", voicebank.TEST_DIRS)):
        for d in dirs:
            (root / d).mkdir()
        for k, spk in enumerate(SPEAKERS[subset]):
            for i in range(2):
                seg = slice((2 * k + i) * 6000, (2 * k + i) * 6000 + 12000)  # 0.75 s
                clean = soxr.resample(speech[seg], 16000, 48000)
                noisy = clean + 0.2 * soxr.resample(noise[seg], 16000, 48000)
                name = f"{spk}_{i + 1:03d}.wav"
                sf.write(root / dirs[0] / name, clean, 48000)
                sf.write(root / dirs[1] / name, noisy, 48000)
                log.append(f"{name[:-4]} babble {2.5 + 5 * i}")
    (root / "logfiles").mkdir()
    (root / "logfiles/log_testset.txt").write_text("\n".join(log) + "\n")
    return root


def test_prepare_resamples_once_with_manifest(src, tmp_path):
    dst = tmp_path / "vb16"
    summary = prepare(src, dst, workers=0)
    assert summary == {"files": 12, "resampled": 12, "skipped": 0}
    m = json.loads((dst / "manifest.json").read_text())
    assert m["kind"] == "manifest" and m["resampler"] == "soxr-HQ"
    assert m["resampler_version"].startswith("soxr ") and m["source_sample_rate"] == 48000
    assert m["valid_speakers"] == ["p226", "p287"]
    e = next(e for e in m["files"] if e["file"] == "p232_002.wav" and e["kind"] == "noisy")
    assert e["snr_db"] == 7.5 and e["duration_s"] == pytest.approx(0.75, abs=1e-3)
    path = dst / e["dir"] / e["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == e["sha256"]
    # The 16 kHz copy is the original 16 kHz speech again (resampled up, then down).
    out, rate = sf.read(dst / "clean_testset_wav/p232_001.wav", dtype="float32")
    orig = sf.read(DATA / "arctic_a0007.wav", dtype="float32")[0][:12000]
    assert rate == 16000 and len(out) == 12000
    assert np.corrcoef(out[100:-100], orig[100:-100])[0, 1] > 0.999


def test_rerun_skips_and_resumes(src, tmp_path):
    dst = tmp_path / "vb16"
    prepare(src, dst, workers=0)
    stamp = (dst / "clean_trainset_28spk_wav/p230_001.wav").stat().st_mtime_ns
    (dst / "noisy_testset_wav/p232_001.wav").unlink()  # a half-done run
    (dst / "noisy_testset_wav/.p232_002.wav.x.tmp").write_bytes(b"partial")
    assert prepare(src, dst, workers=2) == {"files": 12, "resampled": 1, "skipped": 11}
    assert (dst / "clean_trainset_28spk_wav/p230_001.wav").stat().st_mtime_ns == stamp
    assert not list(dst.glob("*/.*.tmp"))
    assert prepare(src, dst, workers=0)["resampled"] == 0


def test_missing_twin_is_found_before_writing(src, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / "noisy_trainset_28spk_wav/p230_002.wav").unlink()
    with pytest.raises(ValueError, match="p230_002.wav"):
        prepare(bad, tmp_path / "out", workers=0)
    assert not (tmp_path / "out").exists()


def test_raw_release_as_data_names_the_command(src):
    with pytest.raises(ValueError, match=r"48000 Hz.*prepare-voicebank"):
        resolve(src)
    with pytest.raises(FileNotFoundError, match="prepare-voicebank"):
        resolve(src / "logfiles")


def test_datasets_on_prepared_folder(src, tmp_path, capsys):
    dst = tmp_path / "vb16"
    assert cli.main(["prepare-voicebank", str(src), str(dst), "--workers", "0"]) == 0
    assert "12 files" in capsys.readouterr().out
    root = resolve(dst)
    train = TrainSet(root, "train", segment_s=1.0)
    valid = TrainSet(root, "valid", segment_s=1.0)
    assert [n for n, _, _ in valid.pairs] == ["p226_001.wav", "p226_002.wav"]
    assert {voicebank.speaker(n) for n, _, _ in train.pairs} == {"p230"}
    noisy, clean = train[0]
    assert noisy.shape == clean.shape == (16000,)  # 0.75 s utterance tiled to a 1 s crop
    assert [n for n, _, _ in TestSet(root)] == ["p232_001.wav", "p232_002.wav"]
    assert voicebank.snr_by_name(root) == {
        "p232_001.wav": 2.5, "p232_002.wav": 7.5
    }  # fmt: skip
    with pytest.raises(ValueError, match="valid: train, valid"):
        TrainSet(root, "test")
