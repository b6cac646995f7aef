"""The bundled demo set: materialised once, deterministic, VoiceBank layout, disjoint speakers."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from bsmamba.data import TestSet, TrainSet, audio, demo, resolve, voicebank


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("BSMAMBA_CACHE", str(cache))
    yield resolve("demo")
    mp.undo()


def test_layout_and_manifest(root):
    assert root.name == "demo-v1" and root.parent.name.startswith("cache")
    for d in voicebank.LAYOUT:
        assert (root / d).is_dir()
    m = json.loads((root / "manifest.json").read_text())
    assert m["kind"] == "manifest" and m["dataset"] == "demo"
    noisy = [e for e in m["files"] if e["kind"] == "noisy"]
    train = Counter(e["snr_db"] for e in noisy if e["dir"] == "noisy_trainset_28spk_wav")
    test = Counter(e["snr_db"] for e in noisy if e["dir"] == "noisy_testset_wav")
    assert set(train) == {0.0, 5.0, 10.0, 15.0} and set(test) == {2.5, 7.5, 12.5, 17.5}
    assert max(test.values()) - min(test.values()) <= 1  # SNRs equally represented
    assert 150 <= sum(train.values()) <= 300 and 16 <= sum(test.values()) <= 24
    # Real noises and generated ones both appear, and test noises differ from train noises.
    train_noise = {e["noise"] for e in noisy if e["dir"].startswith("noisy_train")}
    test_noise = {e["noise"] for e in noisy if e["dir"].startswith("noisy_test")}
    assert not train_noise & test_noise
    assert {"vinyl_hiss", "pink"} <= train_noise


def test_speakers_disjoint_and_both_sexes(root):
    index = json.loads((demo._bundle() / "index.json").read_text())
    train_spk = {voicebank.speaker(p.name) for p in (root / "clean_trainset_28spk_wav").glob("*")}
    test_spk = {voicebank.speaker(p.name) for p in (root / "clean_testset_wav").glob("*")}
    assert len(train_spk) >= 3 and len(test_spk) >= 2 and not train_spk & test_spk
    sex = {e["speaker"]: e["sex"] for e in index["speech"]}
    assert {sex[s] for s in train_spk} >= {"f", "m"} and {sex[s] for s in test_spk} >= {"f", "m"}


def test_snr_as_declared(root):
    m = json.loads((root / "manifest.json").read_text())
    e = next(e for e in m["files"] if e["kind"] == "noisy" and e["dir"] == "noisy_testset_wav")
    clean = audio.read(root / "clean_testset_wav" / e["file"])
    noisy = audio.read(root / "noisy_testset_wav" / e["file"])
    snr = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
    assert abs(snr - e["snr_db"]) < 0.2  # 16-bit quantisation only


def test_datasets(root):
    torch.manual_seed(0)
    train, valid, test = TrainSet(root, "train"), TrainSet(root, "valid"), TestSet(root)
    assert valid.valid_speakers == ("cards",)  # the VB default maps to the demo's own
    assert {voicebank.speaker(n) for n, _, _ in valid.pairs} == {"cards"}
    assert "cards" not in {voicebank.speaker(n) for n, _, _ in train.pairs}
    noisy, clean = train[0]
    assert noisy.shape == clean.shape == (32000,) and noisy.dtype == torch.float32
    assert not torch.equal(noisy, clean)
    a, b = valid[0], valid[0]
    assert torch.equal(a[0], b[0])  # validation crops are fixed
    name, n, c = test[0]
    assert name.endswith(".wav") and n.shape == c.shape and n.shape[0] > 16000


def test_materialise_is_deterministic_and_reused(root, tmp_path):
    again = demo.materialise(tmp_path / "other")
    for d in ("clean_testset_wav", "noisy_trainset_28spk_wav"):
        first = sorted((root / d).glob("*.wav"))[:3]
        for f in first:
            assert (again / d / f.name).read_bytes() == f.read_bytes()
    stamp = (again / "manifest.json").stat().st_mtime_ns
    assert demo.materialise(again) == again
    assert (again / "manifest.json").stat().st_mtime_ns == stamp  # not rebuilt
    assert not list(tmp_path.glob(".other.tmp-*"))


def test_bundle_is_small_and_licensed():
    bundle = demo._bundle()
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size < 5e6
    for folder in {p.parent for p in bundle.rglob("*.ogg")}:
        assert any(p.name in ("LICENSE.md", "COPYING", "README.md") for p in folder.iterdir())
    assert (bundle / "speech_cc-by-sa-3.0").is_dir()


def test_documented_noisy_baseline(root):
    from bsmamba.evaluate import evaluate_dirs

    s = evaluate_dirs(root / "clean_testset_wav", root / "noisy_testset_wav", workers=0)
    assert s["failed"] == 0 and s["scored"] == 22
    for key, want in demo.NOISY_BASELINE.items():
        assert s["metrics"]["enhanced"][key]["mean"] == pytest.approx(want, abs=2e-3), key
    assert set(s["by_snr"]) == {"2.5", "7.5", "12.5", "17.5"}
