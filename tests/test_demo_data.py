"""The bundled demo set: materialised once, deterministic, VoiceBank layout, held-out test clips."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from bsmamba.data import DIRS, TEST_DIRS, TrainSet, audio, demo, resolve, voicebank
from bsmamba.scoring import wav_files


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("BSMAMBA_CACHE", str(cache))
    yield resolve("demo")
    mp.undo()


def test_layout_and_manifest(root):
    assert root.name == demo.VERSION == "demo-v3" and root.parent.name.startswith("cache")
    for d in DIRS:
        assert (root / d).is_dir()
    m = json.loads((root / "manifest.json").read_text())
    assert m["kind"] == "manifest" and m["dataset"] == "demo"
    noisy = [e for e in m["files"] if e["kind"] == "noisy"]
    valid_files = set(m["valid_files"])
    train = Counter(
        e["snr_db"]
        for e in noisy
        if e["dir"] == "noisy_trainset_28spk_wav" and e["file"] not in valid_files
    )
    test = Counter(e["snr_db"] for e in noisy if e["dir"] == "noisy_testset_wav")
    assert set(train) == {0.0, 5.0, 10.0, 15.0} and set(test) == {2.5, 7.5, 12.5, 17.5}
    assert max(test.values()) - min(test.values()) <= 1  # SNRs equally represented
    assert 150 <= sum(train.values()) <= 300 and sum(test.values()) == 20
    # Every noise type appears in both sets; no test mixture uses a trained-on noise sample.
    train_noise = {e["noise"] for e in noisy if e["dir"].startswith("noisy_train")}
    test_noise = {e["noise"] for e in noisy if e["dir"].startswith("noisy_test")}
    assert test_noise <= train_noise and {"vinyl_hiss", "pink", "brown"} <= train_noise
    # A recording (generated noises have none) gives one part to each of train, valid and test,
    # one after the other: no validation or test mixture uses a trained-on noise sample.
    role = lambda e: (
        "test" if "test" in e["dir"] else ("valid" if e["file"] in valid_files else "train")
    )  # noqa: E501, E731
    part = {}
    for e in noisy:
        if e["noise_span_s"] is not None:
            assert part.setdefault((role(e), e["noise"]), e["noise_span_s"]) == e["noise_span_s"]
    assert {r for r, _ in part} == {"train", "valid", "test"}  # recordings in all three sets
    for (r, name), (start, _) in part.items():
        before = {"train": None, "valid": "train", "test": "valid"}[r]
        assert start == (0.0 if before is None else part[before, name][1]), name
    # validation is the test's condition: its SNRs, its speakers, its share of the SNRs
    valid_snr = Counter(
        e["snr_db"] for e in noisy if e["file"] in valid_files and "train" in e["dir"]
    )
    assert set(valid_snr) == set(test) and sum(valid_snr.values()) == 20


def test_test_clips_never_train_and_both_sexes(root):
    index = json.loads((demo._bundle() / "index.json").read_text())
    m = json.loads((root / "manifest.json").read_text())
    source = {d: {e["source"] for e in m["files"] if e["dir"] == d} for d in DIRS}
    assert not source["clean_testset_wav"] & source["clean_trainset_28spk_wav"]
    test_spk = {voicebank.speaker(p.name) for p in (root / "clean_testset_wav").glob("*")}
    train_spk = {voicebank.speaker(p.name) for p in (root / "clean_trainset_28spk_wav").glob("*")}
    assert test_spk == set(demo.TEST_CLIPS) and test_spk < train_spk  # matched speakers
    valid = [e for e in m["files"] if e["file"] in set(m["valid_files"]) and "train" in e["dir"]]
    assert {e["speaker"] for e in valid} == set(demo.VALID_CLIPS) == test_spk
    trained = {e["source"] for e in m["files"] if "train" in e["dir"]} - {
        e["source"] for e in valid
    }
    assert not {e["source"] for e in valid} & (trained | source["clean_testset_wav"])
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
    train, valid = TrainSet(root, "train"), TrainSet(root, "valid")
    # the VoiceBank default (p226, p287) maps to the demo's own: its declared validation clips
    declared = set(json.loads((root / "manifest.json").read_text())["valid_files"])
    assert {n for n, _, _ in valid.pairs} == declared and len(declared) == 20
    assert not {n for n, _, _ in train.pairs} & declared
    assert "cards" in {voicebank.speaker(n) for n, _, _ in train.pairs}  # every speaker trains
    # asking for speakers by name still works
    by_name = TrainSet(root, "valid", valid_speakers=["cards"])
    assert {voicebank.speaker(n) for n, _, _ in by_name.pairs} == {"cards"}
    noisy, clean = train[0]
    assert noisy.shape == clean.shape == (32000,) and noisy.dtype == torch.float32
    assert not torch.equal(noisy, clean)
    a, b = valid[0], valid[0]
    assert torch.equal(a[0], b[0])  # validation crops are fixed
    # the test pairs, as evaluate and the study find them: 20 full-length twins
    clean, noisy = (wav_files(root / d) for d in TEST_DIRS)
    assert list(clean) == list(noisy) and len(noisy) == 20
    name = next(iter(noisy))
    n, c = audio.read(noisy[name]), audio.read(clean[name])
    assert n.shape == c.shape and n.shape[0] > 16000


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
    assert s["failed"] == 0 and s["scored"] == 20
    for key, want in demo.NOISY_BASELINE.items():
        assert s["metrics"]["enhanced"][key]["mean"] == pytest.approx(want, abs=2e-3), key
    assert set(s["by_snr"]) == {"2.5", "7.5", "12.5", "17.5"}
