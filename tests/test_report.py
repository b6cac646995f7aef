"""The study report on a hand-built study folder: aggregation, table, CSV, per-SNR, CLI.

The folder is written in the runner's file formats with known per-utterance scores, so every
aggregate the report prints can be recomputed here from the same inputs (two seeds, so the
"mean over utterances per seed, then across seeds" convention is exercised).
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from bsmamba import schema
from bsmamba.study import records, report, tables
from bsmamba.study.lock import FolderLock

FS = 16000
NAMES = [f"spk_{i:03d}.wav" for i in range(6)]
SNRS = [2.5, 7.5, 12.5, 17.5, 2.5, 7.5]


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _write_scores(path, scores):  # scores: {name: {metric: value}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", *schema.METRIC_KEYS])
        w.writeheader()
        for name, row in scores.items():
            w.writerow({"file": name, **row})


def _scores(rng, offset):
    return {n: {k: float(rng.uniform(1, 3) + offset) for k in schema.METRIC_KEYS} for n in NAMES}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    data = root / "data"
    rng = np.random.default_rng(0)
    clean_dir, noisy_dir = data / "clean_testset_wav", data / "noisy_testset_wav"
    for d in (clean_dir, noisy_dir):
        d.mkdir(parents=True)
    files = []
    for n, snr in zip(NAMES, SNRS, strict=True):
        clean = (0.1 * np.sin(np.arange(FS // 2) * 0.05)).astype("float32")
        sf.write(clean_dir / n, clean, FS)
        sf.write(noisy_dir / n, clean + rng.normal(0, 0.01, clean.size).astype("float32"), FS)
        files.append({"dir": "noisy_testset_wav", "file": n, "snr_db": snr})
    _write_json(data / "manifest.json", {"files": files})
    sdir = root / "studies" / "t"
    systems, seeds = ["bsrnn", "abl3"], [0, 1]
    _write_json(
        sdir / "study.json",
        {
            "recipe": "t",
            "systems": systems,
            "seeds": seeds,
            "data_root": str(data),
            "data": "demo",
            "clean_dir": str(clean_dir),
            "noisy_dir": str(noisy_dir),
            "plan_shape": {"batch_size": 6, "segment_s": 2.0},
            "train_shape": {"batch_size": 4, "segment_s": 1.0},
            "train_budget_s": 80.0,
            "train_max_steps": -1,
            "config": {"study": {"examples": 1, "bootstrap": 100}},
        },
    )
    # Measured input SNR deliberately off the nominal one: the manifest's level must win.
    _write_json(
        sdir / "test_snr.json", {"by_file": {n: s + 0.4 for n, s in zip(NAMES, SNRS, strict=True)}}
    )
    truth = {"noisy": [_scores(rng, 0.0)]}
    _write_scores(sdir / "noisy" / "eval" / "scores.csv", truth["noisy"][0])
    _write_json(
        sdir / "noisy" / "evaluation.json",
        {"status": "done", "per_utterance_csv": "eval/scores.csv"},
    )
    for i, s in enumerate(systems):
        _write_json(
            sdir / s / "params.json",
            {"status": "done", "params": {"total": 2_000_000 + i, "decoder": 900_000 - i}},
        )
        _write_json(
            sdir / s / "memory.json",
            {
                "status": "done",
                "budget": "24GiB",
                "plan": {  # the fields of bsmamba.memory.plan.plan's result the report reads
                    "measured_peak_bytes": (2 + i) * 2**30,
                    "predicted_peak_bytes": 2**31,
                    "needed_bytes": (2 + i) * 2**30,
                    "budget_bytes": 24 * 2**30,
                    "device": "cpu",
                    "verdict": "fits",
                    "verdict_basis": "measured",
                },
            },
        )
        truth[s] = []
        for seed in seeds:
            rdir = sdir / s / f"s{seed}"
            _write_json(
                rdir / "stages" / "train.json",
                {"status": "done", "results": {"step_time_s": 0.5 + seed + i}},
            )
            _write_json(
                rdir / "stages" / "enhance.json", {"status": "done", "rtf": 0.1 * (1 + seed)}
            )
            sc = _scores(rng, 0.5 + i)
            truth[s].append(sc)
            _write_scores(rdir / "eval" / "scores.csv", sc)
            _write_json(
                rdir / "stages" / "evaluate.json",
                {"status": "done", "per_utterance_csv": "eval/scores.csv"},
            )
            (rdir / "enhanced").mkdir()
            for n in NAMES[:2]:
                sf.write(rdir / "enhanced" / n, np.zeros(FS // 2, "float32"), FS)
    doc = report.build(sdir)
    return sdir, doc, truth


def test_means_are_over_utterances_per_seed_then_across_seeds(study):
    sdir, doc, truth = study
    assert doc["kind"] == "study_results" and doc["std_over"] == "seeds"
    for s in ("bsrnn", "abl3"):
        for k in schema.METRIC_KEYS:
            per_seed = [np.mean([u[n][k] for n in NAMES]) for u in truth[s]]
            cell = doc["by_system"][s]["metrics"][k]
            assert cell["mean"] == pytest.approx(np.mean(per_seed))
            assert cell["std"] == pytest.approx(np.std(per_seed, ddof=1))
    noisy = doc["noisy"]["metrics"]["pesq"]  # one "seed": std across utterances
    vals = [truth["noisy"][0][n]["pesq"] for n in NAMES]
    assert noisy["mean"] == pytest.approx(np.mean(vals))
    assert noisy["std"] == pytest.approx(np.std(vals, ddof=1))
    assert doc["by_system"]["abl3"]["step_time_s"] == pytest.approx(np.mean([1.5, 2.5]))
    assert doc["by_system"]["bsrnn"]["rtf"] == pytest.approx(0.15)
    assert doc["by_system"]["abl3"]["peak_bytes"] == 3 * 2**30
    assert doc["by_system"]["abl3"]["peak_source"] == "measured"


def test_per_snr_groups_use_the_nominal_levels(study):
    _, doc, truth = study
    groups = doc["by_system"]["bsrnn"]["by_snr"]
    assert list(groups) == ["2.5 dB", "7.5 dB", "12.5 dB", "17.5 dB"]
    names = [n for n, s in zip(NAMES, SNRS, strict=True) if s == 2.5]
    expect = np.mean([u[n]["pesq"] for u in truth["bsrnn"] for n in names])
    assert groups["2.5 dB"]["pesq"] == pytest.approx(expect)
    assert groups["2.5 dB"]["n_utterances"] == 2
    assert doc["snr_grouping"].startswith("nominal")


def test_report_files_table_order_and_csv(study):
    sdir, doc, _ = study
    md = (sdir / "report.md").read_text()
    head = "| System | PESQ | CSIG | CBAK | COVL | SSNR | STOI | SI-SDR | Params |"
    assert head in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    rows = [ln.split(" | ")[0].strip("| ") for ln in lines[1:4]]
    assert rows == ["Noisy input", "bsrnn", "abl3"]  # noisy row first, then the study's order
    cell = tables.fmt_metric(doc["by_system"]["abl3"]["metrics"], "pesq")
    assert cell in md and " ± " in cell
    assert "batch 6 x 2 s" in md and "batch 4 x 1 s" in md  # both shapes are stated
    assert "Demo-set PESQ is not VB-DMD PESQ" in md
    assert "Claims against measurements" in md
    rows = list(csv.DictReader((sdir / "results.csv").open()))
    assert [r["system"] for r in rows] == ["noisy", "bsrnn", "abl3"]
    assert float(rows[2]["pesq"]) == pytest.approx(
        doc["by_system"]["abl3"]["metrics"]["pesq"]["mean"]
    )
    assert (
        json.loads((sdir / "results.json").read_text())["schema_version"] == schema.SCHEMA_VERSION
    )
    for p in doc["plots"]:
        assert (sdir / p).stat().st_size > 1000
    assert {"plots/pesq_vs_params.png", "plots/pesq_vs_peak_memory.png"} <= set(doc["plots"])
    assert {e["system"] for e in doc["examples"]} == {"bsrnn", "abl3"}
    assert all((sdir / e["png"]).exists() and (sdir / e["wav"]).exists() for e in doc["examples"])


def test_report_command(study, tmp_path):
    sdir, doc, _ = study
    out = subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", "report", str(sdir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Noisy input" in out.stdout
    assert tables.fmt_params(doc["by_system"]["bsrnn"]["params"]) in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "study.json" in bad.stderr
    assert "a study is running" not in out.stderr
    with FolderLock(sdir, what="study"):  # a study still running in this folder: a warning
        held = subprocess.run(
            [sys.executable, "-m", "bsmamba.cli", "report", str(sdir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert held.returncode == 0 and "Noisy input" in held.stdout
    assert f"a study is running in this folder: pid {os.getpid()}" in held.stderr


def test_where_each_run_ran_and_the_memory_verdict_in_words(study, tmp_path):
    sdir = _copy(study, tmp_path)
    rec_path = sdir / "abl3" / "s1" / "stages" / "train.json"
    worker = {"launcher": "slurm", "host": "gpu07", "pid": 7, "gpus": ["2", "3"], "job_id": "9_1"}
    rec_path.write_text(json.dumps({**json.loads(rec_path.read_text()), "worker": worker}))
    doc = report.build(sdir)
    assert (
        doc["runs"]["abl3"]["1"]["worker"] == worker and doc["runs"]["abl3"]["0"]["worker"] is None
    )
    assert doc["runs"]["abl3"]["1"]["train"] == "done"
    rows = tables.worker_rows(doc)
    assert ["abl3", "1", "slurm", "gpu07", "2, 3", "9_1"] in rows
    assert ["bsrnn", "0", "-", "-", "-", "-"] in rows and len(rows) == 4
    md = (sdir / "report.md").read_text()
    assert "## Where each run ran" in md and "| abl3 | 1 | slurm | gpu07 | 2, 3 | 9_1 |" in md
    assert "gpu07" in (sdir / "report.html").read_text()
    fits = next(c for c in doc["claims"] if c["claim"] == "abl3 fits in memory with batch size 6")
    assert fits["measured"].startswith("fits on cpu (measured 3.00 GiB vs budget 24.00 GiB)")


def _copy(study, tmp_path):
    sdir = tmp_path / "study"
    shutil.copytree(study[0], sdir)
    return sdir


def _report(sdir):
    return subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", "report", str(sdir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_damaged_record_is_named_and_never_averaged(study, tmp_path):
    sdir, _, truth = study[0], study[1], study[2]
    sdir = _copy(study, tmp_path)
    csv_path = sdir / "bsrnn" / "s0" / "eval" / "scores.csv"
    text = csv_path.read_text()
    csv_path.write_text(text[: len(text) * 2 // 3])  # cut off mid-row, as a full disk would
    (sdir / "abl3" / "s1" / "stages" / "train.json").write_text('{"status": "do')
    out = _report(sdir)
    assert out.returncode == 1
    damaged = [ln for ln in out.stderr.splitlines() if "damaged, not used" in ln]
    assert len(damaged) == 2
    assert f"{csv_path}: the last line is cut off" in out.stderr
    assert f"delete {sdir / 'bsrnn' / 's0' / 'stages' / 'evaluate.json'} and rerun" in out.stderr
    assert f"{sdir / 'abl3' / 's1' / 'stages' / 'train.json'}: damaged record" in out.stderr
    doc = json.loads((sdir / "results.json").read_text())
    assert doc["by_system"]["bsrnn"]["stages"]["by_seed"]["0"]["evaluate"] == "damaged"
    assert doc["by_system"]["abl3"]["stages"]["by_seed"]["1"]["train"] == "damaged"
    # bsrnn's mean is seed 1's alone: the damaged seed's rows are not in it
    want = np.mean([truth["bsrnn"][1][n]["pesq"] for n in NAMES])
    assert doc["by_system"]["bsrnn"]["metrics"]["pesq"]["mean"] == pytest.approx(want)
    assert doc["by_system"]["bsrnn"]["seeds_scored"] == 1
    assert "### Damaged records (not used)" in (sdir / "report.md").read_text()


def _edit_row(text: str, i: int, fn) -> str:
    lines = text.splitlines(keepends=True)
    lines[i] = fn(lines[i].rstrip("\r\n").split(",")) + "\n"
    return "".join(lines)


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda t: "".join(t.splitlines(keepends=True)[:-1]), "5 rows, its stage record says 6"),
        (
            lambda t: _edit_row(t, 2, lambda c: ",".join([c[0], "abc", *c[2:]])),
            "line 3: pesq='abc'",
        ),
        (lambda t: _edit_row(t, 2, lambda c: ",".join([*c, "9"])), "line 3 has 9 fields"),
        (lambda t: t + t.splitlines(keepends=True)[1], "line 8 repeats spk_000.wav"),
        (lambda t: _edit_row(t, 2, lambda c: ",".join([c[0], "", *c[2:]])), "5 pesq values, its"),
    ],
    ids=["row missing", "not a number", "extra field", "repeated", "blanked cell"],
)
def test_per_utterance_rows_are_checked_against_the_stage_record(study, tmp_path, damage, words):
    sdir = _copy(study, tmp_path)
    rec_path = sdir / "abl3" / "s0" / "stages" / "evaluate.json"
    rec = json.loads(rec_path.read_text())
    counts = {k: {"count": len(NAMES)} for k in schema.METRIC_KEYS}
    rec["summary"] = {"pairs": len(NAMES), "metrics": {"enhanced": counts}}
    rec_path.write_text(json.dumps(rec))
    csv_path = sdir / "abl3" / "s0" / "eval" / "scores.csv"
    assert len(records.read_utterances(csv_path, rec)) == len(NAMES)  # whole: it passes
    csv_path.write_text(damage(csv_path.read_text()))
    with pytest.raises(records.DamagedRecord, match=words) as e:
        records.read_utterances(csv_path, rec)
    assert str(csv_path) in str(e.value)
    doc = report.build(sdir)
    assert doc["by_system"]["abl3"]["seeds_scored"] == 1 and len(doc["damaged"]) == 1


def test_a_failed_measurement_is_counted_in_the_cell(study, tmp_path):
    sdir = _copy(study, tmp_path)
    csv_path = sdir / "abl3" / "s0" / "eval" / "scores.csv"
    rows = list(csv.DictReader(csv_path.open()))
    rows[0]["pesq"] = ""  # PESQ found no speech in a silent output
    _write_scores(csv_path, {r.pop("file"): r for r in rows})
    doc = report.build(sdir)
    cell = doc["by_system"]["abl3"]["metrics"]["pesq"]
    assert cell["failures"] == 1 and doc["by_system"]["bsrnn"]["metrics"]["pesq"]["failures"] == 0
    assert tables.fmt_metric(doc["by_system"]["abl3"]["metrics"], "pesq").endswith("(1 failed)")
    md = (sdir / "report.md").read_text()
    assert "(1 failed) |" in md and "a failure is a result" in md


def _write_dnsmos(record_path, out_dir, rows):
    """A dnsmos stage record and its CSV, through the writers the study uses."""
    from bsmamba.dnsmos import write_outputs  # importing it needs no speechmos

    ok = [r for r in rows if r["status"] == "ok"]
    counts = {k: {"count": len(ok)} for k in schema.DNSMOS_KEYS}
    summary = {"files": len(rows), "metrics": {"enhanced": counts}}
    write_outputs(out_dir, rows, summary)
    rel = records.utterance_csv(out_dir, records.DNSMOS_CSV)
    fields = {"summary": summary, "per_utterance_csv": rel}
    records.write_stage(record_path, "dnsmos", records.DONE, fields)


def _dnsmos_rows(rng, offset):
    return [
        {"file": n, "input": "enhanced", "status": "ok", "seconds": 0.5, "p808": 3.0}
        | {k: round(float(rng.uniform(1, 2) + offset), 4) for k in schema.DNSMOS_KEYS}  # as written
        for n in NAMES
    ]


def test_dnsmos_columns_only_when_asked_mean_over_seeds(study, tmp_path):
    sdir = _copy(study, tmp_path)
    rng = np.random.default_rng(1)
    truth = {"noisy": [_dnsmos_rows(rng, 0.0)]}
    _write_dnsmos(sdir / "noisy" / "dnsmos.json", sdir / "noisy" / "eval", truth["noisy"][0])
    for i, s in enumerate(("bsrnn", "abl3")):
        truth[s] = [_dnsmos_rows(rng, 1.0 + i) for _ in range(2)]
        if s == "abl3":  # one file DNSMOS could not score (silence): left out and counted
            truth[s][1][0] |= {k: None for k in schema.DNSMOS_KEYS} | {"status": "error"}
        for seed, rows in enumerate(truth[s]):
            run = sdir / s / f"s{seed}"
            _write_dnsmos(run / "stages" / "dnsmos.json", run / "eval", rows)

    # Not asked (study.dnsmos false): the records on disk change nothing in the report.
    doc = report.build(sdir)
    assert doc["dnsmos"] is False and "dnsmos_metrics" not in doc["by_system"]["bsrnn"]
    assert "| SIG |" not in (sdir / "report.md").read_text()
    assert "sig" not in next(csv.reader((sdir / "results.csv").open()))
    assert "<th>SIG</th>" not in (sdir / "report.html").read_text()

    meta = json.loads((sdir / "study.json").read_text())
    meta["config"]["study"]["dnsmos"] = True
    (sdir / "study.json").write_text(json.dumps(meta))
    doc = report.build(sdir)
    assert doc["dnsmos"] is True
    for s in ("bsrnn", "abl3"):
        for k in schema.DNSMOS_KEYS:
            per_seed = [np.nanmean([r[k] or np.nan for r in rows]) for rows in truth[s]]
            cell = doc["by_system"][s]["dnsmos_metrics"][k]
            assert cell["mean"] == pytest.approx(np.mean(per_seed))
            assert cell["std"] == pytest.approx(np.std(per_seed, ddof=1))
            assert cell["failures"] == (1 if s == "abl3" else 0)
    noisy = doc["noisy"]["dnsmos_metrics"]["ovrl"]  # one "seed": std across utterances
    vals = [r["ovrl"] for r in truth["noisy"][0]]
    assert noisy["mean"] == pytest.approx(np.mean(vals))
    assert noisy["std"] == pytest.approx(np.std(vals, ddof=1))

    md = (sdir / "report.md").read_text()
    assert "| SI-SDR | SIG | BAK | OVRL | Params |" in md
    results = md.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = {ln.split(" | ")[0].strip("| "): ln.split(" | ") for ln in results.splitlines()}
    cell = tables.fmt_dnsmos(doc["by_system"]["abl3"]["dnsmos_metrics"], "bak")
    assert rows["abl3"][9] == cell and cell.endswith("(1 failed)") and " ± " in cell
    assert rows["Noisy input"][10] == tables.fmt_dnsmos(doc["noisy"]["dnsmos_metrics"], "ovrl")
    page = (sdir / "report.html").read_text()
    assert "<th>SI-SDR</th><th>SIG</th><th>BAK</th><th>OVRL</th>" in page and cell in page
    table = list(csv.DictReader((sdir / "results.csv").open()))
    assert [r["system"] for r in table] == ["noisy", "bsrnn", "abl3"]
    assert float(table[1]["sig_std"]) == pytest.approx(
        doc["by_system"]["bsrnn"]["dnsmos_metrics"]["sig"]["std"]
    )
    assert float(table[0]["ovrl"]) == pytest.approx(noisy["mean"])
    saved = json.loads((sdir / "results.json").read_text())
    assert saved["by_system"]["abl3"]["dnsmos_metrics"]["ovrl"]["n"] == 2

    # A cut-off DNSMOS CSV is named and never averaged, as the intrusive scores.
    cut = sdir / "bsrnn" / "s1" / "eval" / "dnsmos.csv"
    cut.write_text(cut.read_text()[:-3])
    out = _report(sdir)
    assert out.returncode == 1 and f"{cut}: the last line is cut off" in out.stderr
    doc = json.loads((sdir / "results.json").read_text())
    assert doc["by_system"]["bsrnn"]["stages"]["by_seed"]["1"]["dnsmos"] == "damaged"
    assert doc["by_system"]["bsrnn"]["dnsmos_seeds_scored"] == 1
