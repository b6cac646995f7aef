"""End to end: the `smoke` study through the real CLI (real training, enhancement and scoring).

Checks that every number in the report's tables is recomputed from the run files, that the
scores are the real scores of the enhanced files, that a rerun recomputes nothing, and that a
failed system is reported while the others finish.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bsmamba import schema
from bsmamba.study import configs, records, runner

SYSTEMS = ["bsrnn", "abl3"]  # the smoke recipe covers all five; two keep the test short


def _study(*args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", "study", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "study"
    args = ["--recipe", "smoke", "--systems", ",".join(SYSTEMS), "--out", str(out)]
    first = _study(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return out, args, first


def _rec(path: Path) -> dict:
    return json.loads(path.read_text())


def _table(md: str, title: str) -> list[list[str]]:
    """Rows (cells) of the first markdown table after the heading ``title``."""
    block = md.split(title, 1)[1]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    end = next((i for i, ln in enumerate(block.splitlines()) if ln.startswith("## ")), None)
    if end is not None:
        lines = [ln for ln in block.splitlines()[:end] if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _utterances(run: Path) -> dict:
    ev = _rec(run / "stages" / "evaluate.json")
    assert ev["status"] == "done"
    return records.read_utterances(run / ev["per_utterance_csv"])


def _cell(values: np.ndarray, digits: int) -> str:
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def test_every_stage_of_every_system_ran(smoke):
    out, _, first = smoke
    for s in SYSTEMS:
        assert _rec(out / s / "params.json")["status"] == "done"
        assert _rec(out / s / "memory.json")["status"] == "done"
        for stage in ("train", "enhance", "evaluate"):
            assert _rec(out / s / "s0" / "stages" / f"{stage}.json")["status"] == "done", stage
        assert (out / s / "s0" / "results.json").exists()  # the training run dir itself
    assert "Noisy input" in first.stdout and "report:" in first.stdout
    doc = _rec(out / "results.json")
    assert doc["kind"] == "study_results" and doc["systems"] == SYSTEMS
    assert {"plots/pesq_vs_params.png", "plots/pesq_vs_peak_memory.png"} <= set(doc["plots"])


def test_every_number_in_the_report_comes_from_a_run(smoke):
    out, _, _ = smoke
    md = (out / "report.md").read_text()
    rows = {r[0]: r[1:] for r in _table(md, "## Results")}
    assert list(rows) == ["Noisy input", *SYSTEMS]
    digits = [2, 2, 2, 2, 2, 3, 2]
    noisy = records.read_utterances(
        out / "noisy" / _rec(out / "noisy" / "evaluation.json")["per_utterance_csv"]
    )
    for name, utts in [("Noisy input", noisy)] + [
        (s, _utterances(out / s / "s0")) for s in SYSTEMS
    ]:
        for i, (k, d) in enumerate(zip(schema.METRIC_KEYS, digits, strict=True)):
            vals = np.array([u[k] for u in utts.values()], float)
            assert rows[name][i] == _cell(vals[np.isfinite(vals)], d), (name, k)
    for s in SYSTEMS:
        params = _rec(out / s / "params.json")["params"]["total"]
        trained = _rec(out / s / "s0" / "results.json")
        assert params == trained["params"]  # two independent counts agree
        plan = _rec(out / s / "memory.json")["plan"]
        peak = plan["measured_peak_bytes"] or plan["predicted_peak_bytes"]
        pred = "" if plan["measured_peak_bytes"] else " (pred.)"
        enh = _rec(out / s / "s0" / "stages" / "enhance.json")
        assert rows[s][7:] == [
            f"{params / 1e6:.2f}M",
            f"{peak / 2**30:.2f} GiB{pred}",
            f"{trained['step_time_s']:.2f} s",
            f"{enh['rtf']:.3f}",
        ]
    # Per-SNR rows: means of the utterances of that mixing SNR (demo manifest).
    manifest = _rec(Path(_rec(out / "study.json")["data_root"]) / "manifest.json")
    nominal = {e["file"]: e["snr_db"] for e in manifest["files"] if e["dir"] == "noisy_testset_wav"}
    utts = _utterances(out / "abl3" / "s0")
    for label, system, *cells, n in _table(md, "## Per-SNR breakdown"):
        if system != "abl3":
            continue
        names = [f for f in utts if f"{nominal[f]:g} dB" == label]
        assert int(n) == len(names)
        assert cells[0] == f"{np.mean([utts[f]['pesq'] for f in names]):.2f}"


def test_scores_are_the_real_scores_of_the_enhanced_files(smoke):
    from bsmamba import metrics
    from bsmamba.data import audio

    out, _, _ = smoke
    meta = _rec(out / "study.json")
    run = out / "abl3" / "s0"
    name, row = sorted(_utterances(run).items())[0]
    ref = audio.read(Path(meta["clean_dir"]) / name)
    deg = audio.read(run / "enhanced" / name)
    again = metrics.score(ref, deg, 16000)
    for k in ("pesq", "stoi", "si_sdr"):
        assert row[k] == pytest.approx(again[k], abs=1e-4), k


def test_rerun_recomputes_nothing(smoke):
    out, args, _ = smoke
    kept = [p for p in out.rglob("*") if p.is_file() and not _is_report_output(out, p)]
    before = {p: p.stat().st_mtime_ns for p in kept}
    second = _study(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert re.findall(r"\b(running|done|failed)$", second.stdout, re.M) == []
    assert "reused" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == before


def _is_report_output(out: Path, p: Path) -> bool:
    rel = p.relative_to(out).parts
    if p.name == ".lock":  # the study and run locks name their last holder
        return True
    report = ("report.md", "report.html", "results.csv", "results.json", "plots", "audio")
    return rel[0] in (*report, "study.json")


def test_a_damaged_evaluation_is_redone_and_a_failed_system_is_reported(smoke):
    out, args, _ = smoke
    # bsrnn's scores were cut off (its record says done): only that evaluation is redone.
    scores = out / "bsrnn" / "s0" / _rec(out / "bsrnn/s0/stages/evaluate.json")["per_utterance_csv"]
    scores.write_text(scores.read_text()[:-5])
    # abl3 was killed mid-training and left a corrupt last checkpoint: resuming must fail
    # loudly, be reported, and not stop the other system.
    run = out / "abl3" / "s0"
    shutil.rmtree(run / "stages")
    (run / "results.json").unlink()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    res = _study(*args, "study.jobs=1")  # the in-process path (the smoke recipe runs 2 jobs)
    assert res.returncode == 1 and "abl3/s0" in res.stderr
    finished = re.findall(r"^\[study\] (\S+)\s+(\S+)\s+(done|failed|skipped)$", res.stdout, re.M)
    assert finished == [
        ("bsrnn/s0", "evaluate", "done"),
        ("abl3/s0", "train", "failed"),
        ("abl3/s0", "enhance", "skipped"),
        ("abl3/s0", "evaluate", "skipped"),
    ]
    assert re.search(r"bsrnn/s0\s+evaluate\s+recomputing: .*last line is cut off", res.stdout)
    assert _rec(out / "bsrnn" / "s0" / "stages" / "evaluate.json")["status"] == "done"
    assert records.read_utterances(scores)  # whole again
    md = (out / "report.md").read_text()
    assert "Stages that did not finish" in md and "`abl3` s0/train" in md
    rows = {r[0]: r[1:] for r in _table(md, "## Results")}
    assert rows["abl3"][0] == "-" and rows["bsrnn"][0] != "-"


def test_config_order_is_defaults_recipe_file_overrides(tmp_path):
    from bsmamba.study import recipes

    smoke = recipes.recipe("smoke")
    file = tmp_path / "study.yaml"
    file.write_text("train:\n  lr: 0.0042\n  batch_size: 3\nstudy:\n  recipe: smoke\n")
    cfg = runner.study_config(file, ["train.batch_size=5"])
    assert cfg.study.recipe == "smoke"
    assert cfg.train.max_steps == smoke["train.max_steps"]  # recipe over defaults
    assert cfg.train.lr == 0.0042  # file over recipe
    assert cfg.train.batch_size == 5  # override over file
    # A run config is the system's preset plus the study's own model overrides.
    cfg = runner.study_config(None, ["study.recipe=smoke", "model.scan_backend=reference"])
    run = runner.run_config(cfg, "bsrnn", 3, tmp_path / "r")
    assert run.model.mixer == "lstm" and run.model.scan_backend == "reference"
    assert run.train.seed == 3 and run.train.out == str(tmp_path / "r")
    with pytest.raises(ValueError, match="valid recipes"):
        runner.study_config(None, ["study.recipe=nope"])


def test_abl3_only_fallback_when_a_system_does_not_fit(tmp_path):
    # abl1's predicted step fits 2 GiB at batch 6 x 2 s, abl3's does not (the ladder's batch-4
    # rung makes it fit): the plan's last resort trains abl3 alone.
    out = tmp_path / "fb"
    res = _study(
        "--recipe", "smoke", "--systems", "abl1,abl3", "--budget", "2GiB",
        "--abl3-only-fallback", "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "abl3-only fallback" in res.stdout
    abl1 = _rec(out / "abl1" / "s0" / "stages" / "train.json")
    assert abl1["status"] == "skipped" and "abl3-only" in abl1["error"]
    assert _rec(out / "abl3" / "s0" / "stages" / "evaluate.json")["status"] == "done"
    mem = _rec(out / "abl3" / "memory.json")
    assert mem["plan"]["verdict"] == "does_not_fit"
    assert any(e["event"] == "step_down" for e in mem["ladder_events"])
    claims = {c["claim"]: c for c in _rec(out / "results.json")["claims"]}
    row = claims["abl3 fits in memory with batch size 6"]
    assert row["verdict"] == "fails" and "ladder" in row["note"]
    assert claims["abl1 fits in memory with batch size 6"]["verdict"] == "holds"


def test_a_rerun_with_other_config_or_other_data_warns(tmp_path):
    # e.g. a study folder made on demo-v1 and rerun after the demo set changed version
    from bsmamba import config, files

    cfg = runner.study_config(None, ["study.recipe=smoke", f"study.out={tmp_path}"])
    files.write_json(
        tmp_path / "study.json", {"config": config.to_dict(cfg), "data_root": "/cache/demo-v1"}
    )
    assert configs.changed_since_last_run(tmp_path, cfg, Path("/cache/demo-v1")) == []
    lines = configs.changed_since_last_run(tmp_path, cfg, Path("/cache/demo-v2"))
    assert len(lines) == 1 and "/cache/demo-v1" in lines[0] and "/cache/demo-v2" in lines[0]
    other = runner.study_config(
        None, ["study.recipe=smoke", f"study.out={tmp_path}", "train.lr=0.01"]
    )
    lines = configs.changed_since_last_run(tmp_path, other, Path("/cache/demo-v2"))
    assert len(lines) == 2 and "train.lr" in lines[0]


def test_a_run_config_is_resolved_once_and_read_back(tmp_path):
    cfg = runner.study_config(None, ["study.recipe=smoke", "model.scan_backend=reference"])
    rdir = tmp_path / "abl3" / "s1"
    first = configs.resolve_run(cfg, "abl3", 1, rdir)
    assert (rdir / "config.yaml").is_file()
    assert first.model.preset == "abl3" and first.model.scan_backend == "reference"
    assert first.train.seed == 1 and first.train.out == str(rdir)
    # A rerun with another study config continues the run with the config it was started with.
    other = runner.study_config(None, ["study.recipe=smoke", "train.lr=0.5"])
    again = configs.resolve_run(other, "abl3", 1, rdir)
    assert again.train.lr == first.train.lr != 0.5
    assert again.model.scan_backend == "reference"
