"""prepare-voicebank on a faithful miniature of the release (tests/vbmini.py); the datasets.

The miniature is real speech plus real noise at the logged SNRs, 48 kHz, as zips or folders,
with the logfiles and the 56-speaker set beside it; CLI behaviour runs in real subprocesses.
"""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import vbmini

from bsmamba.data import TEST_DIRS, TrainSet, manifest_snrs, release, resolve, voicebank
from bsmamba.data.voicebank import prepare
from bsmamba.scoring import wav_files

TEST_SNR = vbmini.snrs("testset")
TRAIN_SNR = vbmini.snrs("trainset_28spk")


@pytest.fixture(scope="module")
def zipped(tmp_path_factory):
    """The release as downloaded: four zips (+ the 56-speaker zips), logfiles/ beside."""
    return vbmini.make(tmp_path_factory.mktemp("zipped"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The zips extracted into folders of their own name (NAME/NAME/), logfiles/ one level up."""
    return vbmini.make(tmp_path_factory.mktemp("folders"), zips=False, logfiles="up", nested=True)


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """Extracted folders (NAME/), logfiles.zip beside them: copied by tests that change it."""
    return vbmini.make(tmp_path_factory.mktemp("flat"), zips=False, logfiles="zip")


@pytest.fixture(scope="module")
def prepared(zipped, tmp_path_factory):
    dst = tmp_path_factory.mktemp("prepared") / "vb16"
    return prepare(zipped, dst, workers=0), dst


def _copy(src: Path, tmp_path: Path) -> Path:
    out = tmp_path / "release"
    shutil.copytree(src, out)
    return out


def _cli(*args, unprivileged: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bsmamba.cli", "prepare-voicebank", *map(str, args)]
    if unprivileged and os.geteuid() == 0:
        # root writes into read-only folders; without CAP_DAC_OVERRIDE it cannot
        capsh = shutil.which("capsh")
        if capsh is None:
            pytest.skip("running as root without capsh: a read-only folder cannot be made")
        cmd = [capsh, "--drop=cap_dac_override", "--", "-c", shlex.join(cmd)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _errors(res: subprocess.CompletedProcess) -> list[str]:
    return [line for line in res.stderr.splitlines() if not line.startswith("warning: ")]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ------------------------------------------------------------------- the release as downloaded


def test_prepare_reads_the_zips_and_reports_what_it_found(prepared, zipped):
    summary, dst = prepared
    assert (summary["files"], summary["resampled"], summary["skipped"]) == (40, 40, 0)
    rel = summary["release"]
    assert {n: (s["kind"], s["files"]) for n, s in rel["by_set"].items()} == {
        "clean_trainset_28spk_wav": ("zip", 12),
        "noisy_trainset_28spk_wav": ("zip", 12),
        "clean_testset_wav": ("zip", 8),
        "noisy_testset_wav": ("zip", 8),
    }
    logs = rel["logfiles"]
    assert logs["where"] == str(zipped / "logfiles") and logs["place"] == "beside the sets"
    assert logs["by_file"]["log_testset.txt"]["used"] == 8
    assert logs["by_file"]["log_trainset_28spk.txt"]["used"] == 12
    assert logs["by_file"]["log_readme.txt"]["role"] == "readme (not parsed)"
    assert logs["by_file"]["log_trainset_56spk.txt"]["role"].startswith("ignored")
    # The 56-speaker set sits beside the 28-speaker one: named as ignored, never mixed in.
    assert [i.split(":")[0] for i in rel["ignored"]] == [
        "clean_trainset_56spk_wav.zip", "noisy_trainset_56spk_wav.zip", "log_trainset_56spk.txt"
    ]  # fmt: skip
    speakers = {voicebank.speaker(p.name) for p in dst.rglob("*.wav")}
    assert speakers == {"p226", "p227", "p228", "p287", "p232", "p257"}
    # The miniature is small: the counts warning names what differs from the release.
    assert rel["warnings"] == [
        "training set: 12 pairs from 4 speakers; the release has 11,572 from 28",
        "test set: 8 pairs; the release has 824 (p232: 4 of 393, p257: 4 of 431)",
    ]
    assert rel["counts"]["by_test_speaker"] == {"p232": 4, "p257": 4}


def test_manifest_records_the_logged_snrs_and_the_resampler(prepared):
    _, dst = prepared
    m = json.loads((dst / "manifest.json").read_text())
    assert m["kind"] == "manifest" and m["resampler"] == "soxr-HQ"
    assert m["resampler_version"].startswith("soxr ") and m["source_sample_rate"] == 48000
    assert m["valid_speakers"] == ["p226", "p287"]
    noisy = {e["dir"]: {} for e in m["files"]}
    for e in m["files"]:
        if "snr_db" in e:
            noisy[e["dir"]][e["file"]] = e["snr_db"]
    assert noisy["noisy_testset_wav"] == TEST_SNR
    assert noisy["noisy_trainset_28spk_wav"] == TRAIN_SNR
    assert noisy["clean_testset_wav"] == {}
    # what evaluate and the study read: the SNRs beside either folder of the test pairs
    assert manifest_snrs(dst / TEST_DIRS[0]) == manifest_snrs(dst / TEST_DIRS[1]) == TEST_SNR
    e = next(e for e in m["files"] if e["file"] == "p257_002.wav" and e["kind"] == "noisy")
    assert e["noise"] == "living" and e["duration_s"] == pytest.approx(1.2, abs=1e-3)
    path = dst / e["dir"] / e["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == e["sha256"]
    assert m["source_fingerprint"] == json.loads((dst / "source.json").read_text())["fingerprint"]


def test_each_prepared_pair_has_its_logged_snr(prepared):
    """Clean and noisy twins stay paired and aligned through the zip, soxr and 16-bit PCM."""
    _, dst = prepared
    for name, snr in TEST_SNR.items():
        clean, rate = sf.read(dst / "clean_testset_wav" / name, dtype="float64")
        noisy, _ = sf.read(dst / "noisy_testset_wav" / name, dtype="float64")
        assert rate == 16000 and len(clean) == len(noisy) == 19200  # 1.2 s
        measured = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
        assert measured == pytest.approx(snr, abs=0.2), name


def test_extracted_folders_are_the_same_release_as_the_zips(folders, prepared, tmp_path):
    rel = release.survey(folders)
    # NAME/NAME/ (a zip extracted into a folder of its name) and logfiles one level up
    assert all(s.path == folders / n / n for n, s in rel.sets.items())
    assert rel.logfiles["where"] == str(folders.parent / "logfiles")
    assert rel.logfiles["place"] == "one level up" and rel.snr == release.survey(folders).snr
    assert len(rel.snr) == 20 and not rel.notes
    dst = tmp_path / "vb16"
    shutil.copytree(prepared[1], dst)
    assert rel.fingerprint() == prepared[0]["release"]["fingerprint"]
    summary = prepare(folders, dst, workers=0)  # same files: nothing redone, nothing refused
    assert (summary["resampled"], summary["skipped"]) == (0, 40)


def test_logfiles_zip_and_no_logfiles(flat, tmp_path):
    rel = release.survey(flat)
    assert rel.logfiles["where"] == str(flat / "logfiles.zip")
    assert {n: s for n, (_, s) in rel.snr.items() if n.startswith("p2")} == TEST_SNR | TRAIN_SNR
    src = _copy(flat, tmp_path)
    (src / "logfiles.zip").unlink()
    rel = release.survey(src)
    assert rel.snr == {} and rel.logfiles["where"] is None
    assert rel.warnings[0].startswith("no logfiles (looked for logfiles/, logfiles.zip")


def test_log_lines_and_files_it_cannot_use_are_counted_and_named(flat, tmp_path):
    src = _copy(flat, tmp_path)
    logs = src / "logfiles"  # a folder beside the sets wins over logfiles.zip
    logs.mkdir()
    lines = [f"{n[:-4]} bus {s:g}" for n, s in TEST_SNR.items() if n != "p257_004.wav"]
    lines[1:1] = ["p232_001 bus", "", "three words here now", "p232_003 office 12.5"]
    lines += ["p999_001 bus 5", "p232_002 living nan"]
    (logs / "log_testset.txt").write_text("\r\n".join(lines) + "\r\n")  # CRLF, as edited on Windows
    (logs / "notes.txt").write_text("mine\n")
    rel = release.survey(src)
    report = rel.logfiles["by_file"]["log_testset.txt"]
    assert report["lines"] == 12 and report["used"] == 7
    assert report["unusable"] == 4 and report["not_in_release"] == 1
    assert report["unusable_examples"] == [
        "line 2: 'p232_001 bus'", "line 4: 'three words here now'", "line 7: p232_003 again"
    ]  # fmt: skip
    assert report["not_in_release_examples"] == ["p999_001"]
    text = "\n".join(rel.warnings)
    assert "log_testset.txt: 4 line(s) not of the form 'name noise snr'" in text
    assert "log_testset.txt: 1 name(s) not in noisy_testset_wav (p999_001)" in text
    assert "noisy_testset_wav: 1 file(s) without a line in log_testset.txt (p257_004.wav)" in text
    assert "no log_trainset_28spk.txt: no SNRs for noisy_trainset_28spk_wav" in text
    assert rel.logfiles["by_file"]["notes.txt"]["role"].startswith("not used")
    assert any("notes.txt is not one of the release's logfiles" in n for n in rel.notes)
    assert "p257_004.wav" not in rel.snr and rel.snr["p232_003.wav"] == ("office", 12.5)


def test_missing_sets_name_the_fix(flat, tmp_path):
    with pytest.raises(ValueError, match=r"one set: pass the folder that holds all four"):
        release.survey(flat / "clean_testset_wav")
    src = _copy(flat, tmp_path)
    for name in ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"):
        shutil.rmtree(src / name)
    with pytest.raises(ValueError, match=r"only the 56-speaker training set is here"):
        release.survey(src)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        release.survey(tmp_path / "nowhere")


def test_a_broken_zip_is_named(zipped, tmp_path):
    src = _copy(zipped, tmp_path)
    data = (src / "noisy_testset_wav.zip").read_bytes()
    (src / "noisy_testset_wav.zip").write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(ValueError, match=r"noisy_testset_wav.zip: not a readable zip.*again"):
        release.survey(src)


def test_missing_twin_is_found_before_writing(flat, tmp_path):
    src = _copy(flat, tmp_path)
    (src / "noisy_trainset_28spk_wav/p228_002.wav").unlink()
    with pytest.raises(ValueError, match="p228_002.wav"):
        prepare(src, tmp_path / "out", workers=0)
    assert not (tmp_path / "out").exists()


def test_a_16khz_file_inside_the_release_is_named(flat, tmp_path):
    src = _copy(flat, tmp_path)
    path = src / "noisy_testset_wav/p257_002.wav"
    wav, rate = sf.read(path, dtype="float32")
    sf.write(path, soxr.resample(wav, rate, 16000), 16000, "PCM_16")  # resampled in place
    with pytest.raises(ValueError, match=r"p257_002.wav is at 16000 Hz: the release is 48 kHz"):
        prepare(src, tmp_path / "out", workers=0)
    assert not (tmp_path / "out").exists()


def test_rerun_skips_and_resumes(zipped, tmp_path):
    dst = tmp_path / "vb16"
    prepare(zipped, dst, workers=0)
    stamp = (dst / "clean_trainset_28spk_wav/p227_001.wav").stat().st_mtime_ns
    (dst / "noisy_testset_wav/p232_001.wav").unlink()  # a half-done run
    (dst / "noisy_testset_wav/.p232_002.wav.x.tmp").write_bytes(b"partial")
    summary = prepare(zipped, dst, workers=2)
    assert (summary["resampled"], summary["skipped"]) == (1, 39)
    assert (dst / "clean_trainset_28spk_wav/p227_001.wav").stat().st_mtime_ns == stamp
    assert not list(dst.glob("*/.*.tmp"))
    assert prepare(zipped, dst, workers=0)["resampled"] == 0


# ------------------------------------------------------------- what prepare refuses (CLI)


def test_dst_inside_src_is_refused_before_anything_is_written(flat, tmp_path):
    src = _copy(flat, tmp_path)
    before = _snapshot(src)
    for dst in (src, src / "vb16", src / "clean_testset_wav"):
        res = _cli(src, dst)
        assert res.returncode == 2 and res.stdout == "", res.stderr
        assert _errors(res) == [
            f"bsmamba prepare-voicebank: error: {dst}: inside the release {src}; "
            "prepare-voicebank never writes into its input (16 kHz copies there would pass for "
            f"the release): choose a folder outside it, e.g. {tmp_path / 'release-16k'}"
        ]
    assert _snapshot(src) == before


def test_dst_inside_a_linked_set_folder_is_refused(flat, tmp_path):
    src = _copy(flat, tmp_path)
    elsewhere = tmp_path / "disk2" / "noisy_testset_wav"
    elsewhere.parent.mkdir()
    shutil.move(src / "noisy_testset_wav", elsewhere)
    (src / "noisy_testset_wav").symlink_to(elsewhere)
    with pytest.raises(ValueError, match=r"vb16: inside the release"):
        prepare(src, elsewhere / "vb16", workers=0)
    assert not (elsewhere / "vb16").exists()


def test_dst_from_another_release_is_refused_unless_replace(prepared, flat, tmp_path):
    dst = tmp_path / "vb16"
    shutil.copytree(prepared[1], dst)
    other = _copy(flat, tmp_path)
    for d in ("clean_testset_wav", "noisy_testset_wav"):
        (other / d / "p257_004.wav").unlink()
    before = _snapshot(dst)
    res = _cli(other, dst)
    assert res.returncode == 2 and len(_errors(res)) == 1
    assert f"{dst}: prepared from another release" in res.stderr and "--replace" in res.stderr
    assert _snapshot(dst) == before
    res = _cli(other, dst, "--replace", "--workers", "0")
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (dst / "noisy_testset_wav").glob("*.wav"))
    assert len(names) == 7 and "p257_004.wav" not in names
    m = json.loads((dst / "manifest.json").read_text())
    assert m["source"] == str(other) and len(m["files"]) == 38


def test_files_prepare_did_not_write_are_refused(prepared, tmp_path):
    dst = tmp_path / "vb16"
    shutil.copytree(prepared[1], dst)
    shutil.copy(dst / "noisy_testset_wav/p232_001.wav", dst / "noisy_testset_wav/p999_001.wav")
    with pytest.raises(ValueError, match=r"1 .wav file\(s\) not in .*noisy_testset_wav/p999_001"):
        prepare(prepared[0]["release"]["src"], dst, workers=0)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match=r"a_file: exists and is not a folder"):
        prepare(prepared[0]["release"]["src"], tmp_path / "a_file", workers=0)
    mine = tmp_path / "mine"
    (mine / "clean_testset_wav").mkdir(parents=True)
    shutil.copy(dst / "noisy_testset_wav/p232_001.wav", mine / "clean_testset_wav/x.wav")
    with pytest.raises(ValueError, match=r"prepare-voicebank did not write .*new or empty folder"):
        prepare(prepared[0]["release"]["src"], mine, workers=0)


def test_read_only_dst_one_line_exit_2_finished_files_kept(zipped, tmp_path):
    dst = tmp_path / "vb16"
    locked = dst / "noisy_testset_wav"  # the last set written: the three others get done
    locked.mkdir(parents=True)
    locked.chmod(0o555)
    res = _cli(zipped, dst, "--workers", "2", unprivileged=True)
    locked.chmod(0o755)
    assert res.returncode == 2
    assert _errors(res) == [
        f"bsmamba prepare-voicebank: error: {locked}: cannot write (Permission denied); the 32 "
        "files prepared so far are kept: make room or fix the permissions, then rerun the same "
        "command to finish"
    ]
    assert len(list(dst.glob("*/*.wav"))) == 32 and not list(dst.rglob("*.tmp"))
    assert not (dst / "manifest.json").exists()
    res = _cli(zipped, dst, "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)  # --json: stdout is the JSON alone, warnings on stderr
    assert (summary["resampled"], summary["skipped"]) == (8, 32)
    assert res.stderr.count("warning: ") == 2


def test_read_only_dst_before_any_work(zipped, tmp_path):
    dst = tmp_path / "vb16"
    dst.mkdir()
    dst.chmod(0o555)
    res = _cli(zipped, dst, unprivileged=True)
    dst.chmod(0o755)
    assert res.returncode == 2
    assert _errors(res) == [
        f"bsmamba prepare-voicebank: error: {dst}: cannot write (Permission denied); the 0 "
        "files prepared so far are kept: make room or fix the permissions, then rerun the same "
        "command to finish"
    ]
    assert list(dst.iterdir()) == []


def test_full_disk_one_line_exit_2_finished_files_kept(zipped, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        res = _cli(zipped, disk / "vb16", "--workers", "0")
        kept = len(list(disk.glob("vb16/*/*.wav")))
        tmp_left = list(disk.rglob("*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert res.returncode == 2 and 0 < kept < 40 and tmp_left == []
    # one line naming the file that did not fit, inside the output folder
    last = res.stderr.splitlines()[-1]
    head, _, tail = last.partition(": cannot write (No space left on device); ")
    assert head.startswith(f"bsmamba prepare-voicebank: error: {disk / 'vb16'}/")
    assert head.endswith(".wav") and tail == (
        f"the {kept} files prepared so far are kept: make room or fix the permissions, "
        "then rerun the same command to finish"
    )
    assert "Traceback" not in res.stderr  # audio.write encodes in memory: one OSError, no noise


# -------------------------------------------------------------------------- the 16 kHz folder


def test_raw_release_as_data_names_the_command(flat, tmp_path):
    with pytest.raises(ValueError, match=r"48000 Hz.*prepare-voicebank"):
        resolve(flat)
    with pytest.raises(FileNotFoundError, match="prepare-voicebank"):
        resolve(flat.parent / "nowhere")
    # A manifest beside the 48 kHz files (what `prepare SRC SRC` once wrote) is not enough.
    src = _copy(flat, tmp_path)
    (src / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match=r"48000 Hz, not 16000 Hz.*prepare-voicebank"):
        resolve(src)


def test_datasets_on_prepared_folder(prepared):
    root = resolve(prepared[1])
    train = TrainSet(root, "train", segment_s=2.0)
    valid = TrainSet(root, "valid", segment_s=1.0)
    assert {voicebank.speaker(n) for n, _, _ in valid.pairs} == {"p226", "p287"}
    assert {voicebank.speaker(n) for n, _, _ in train.pairs} == {"p227", "p228"}
    assert len(train) == len(valid) == 6
    noisy, clean = train[0]
    assert noisy.shape == clean.shape == (32000,)  # 1.2 s utterance tiled to a 2 s crop
    assert [list(wav_files(root / d)) for d in TEST_DIRS] == [sorted(TEST_SNR)] * 2
    with pytest.raises(ValueError, match="valid: train, valid"):
        TrainSet(root, "test")
