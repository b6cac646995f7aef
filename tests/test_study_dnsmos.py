"""study.dnsmos end to end: the smoke study through the real CLI, then the same study again with
DNSMOS turned on (real speechmos models on the real enhanced files).

Checks that the SIG, BAK, OVRL columns are absent by default, that turning them on later computes
only the DNSMOS stages, that every cell is the mean ± std of the files' own DNSMOS scores (in
[1, 5]), and that a missing extra is one clear line before any work starts.
"""

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bsmamba import schema

MISSING = [m for m in ("speechmos", "onnxruntime", "librosa") if not importlib.util.find_spec(m)]
needs_nr = pytest.mark.skipif(
    bool(MISSING), reason=f"the nr extra is not installed (missing: {', '.join(MISSING)})"
)
SYSTEM = "bsrnn"  # one system, the smoke recipe's 2 test utterances: ~40 s of CPU in all


def _study(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bsmamba.cli", "study", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def _rec(path: Path) -> dict:
    return json.loads(path.read_text())


def _results(md: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and rows (by first cell) of report.md's results table."""
    block = md.split("## Results", 1)[1].split("\n## ", 1)[0]
    lines = [[c.strip() for c in ln.strip("|").split("|")] for ln in block.splitlines()]
    lines = [cells for cells in lines if len(cells) > 1]
    return lines[0], {r[0]: r for r in lines[2:]}


def _files(out: Path) -> dict[Path, int]:
    """Every file a rerun must leave alone, with its mtime (the report's outputs aside)."""
    report = ("report.md", "report.html", "results.csv", "results.json", "plots", "audio")
    return {
        p: p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.is_file() and p.name != ".lock" and p.relative_to(out).parts[0] not in report
        and p.name != "study.json"
    }  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("dnsmos") / "study"
    args = ["--recipe", "smoke", "--out", str(out), f"study.systems=[{SYSTEM}]"]
    plain = _study(*args)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    default = {
        "md": (out / "report.md").read_text(),
        "html": (out / "report.html").read_text(),
        "csv": (out / "results.csv").read_text(),
        "json": _rec(out / "results.json"),
    }
    before = _files(out)
    asked = _study(*args, "study.dnsmos=true")
    assert asked.returncode == 0, asked.stdout[-3000:] + asked.stderr[-3000:]
    return out, args, default, before, asked


@needs_nr
@pytest.mark.slow  # the study fixture: two real smoke studies, ~45 s of CPU
def test_columns_are_absent_by_default(study):
    out, _, default, _, _ = study
    header, _ = _results(default["md"])
    assert header[7] == "SI-SDR" and header[8] == "Params"
    assert not {"SIG", "BAK", "OVRL"} & set(header)
    assert "<th>SIG</th>" not in default["html"]
    assert "sig" not in default["csv"].splitlines()[0].split(",")
    assert default["json"]["dnsmos"] is False
    assert "dnsmos_metrics" not in default["json"]["by_system"][SYSTEM]


@needs_nr
@pytest.mark.slow  # the study fixture: two real smoke studies, ~45 s of CPU
def test_turned_on_later_only_dnsmos_is_computed(study):
    out, _, _, before, asked = study
    ran = re.findall(r"^\[study\] (\S+)\s+(\S+)\s+running$", asked.stdout, re.M)
    assert ran == [("noisy", "dnsmos"), (f"{SYSTEM}/s0", "dnsmos")]
    after = _files(out)
    new = sorted(str(p.relative_to(out)) for p in set(after) - set(before))
    assert new == [
        f"{SYSTEM}/s0/eval/dnsmos.csv",
        f"{SYSTEM}/s0/eval/dnsmos.json",
        f"{SYSTEM}/s0/stages/dnsmos.json",
        "noisy/dnsmos.json",
        "noisy/eval/dnsmos.csv",
        "noisy/eval/dnsmos.json",
    ]
    assert {p: after[p] for p in before} == before  # nothing that was there was rewritten
    assert "was run with other values" not in asked.stdout  # turning it on is no config change


@needs_nr
@pytest.mark.slow  # the study fixture: two real smoke studies, ~45 s of CPU
def test_every_dnsmos_cell_is_the_mean_of_the_files_scores(study):
    out, _, _, _, _ = study
    header, rows = _results((out / "report.md").read_text())
    assert header[7:11] == ["SI-SDR", "SIG", "BAK", "OVRL"]
    doc = _rec(out / "results.json")
    table = {r["system"]: r for r in csv.DictReader((out / "results.csv").open())}
    for name, row_name, base, rec in [
        ("noisy", "Noisy input", out / "noisy", out / "noisy" / "dnsmos.json"),
        (SYSTEM, SYSTEM, out / SYSTEM / "s0", out / SYSTEM / "s0" / "stages" / "dnsmos.json"),
    ]:
        r = _rec(rec)
        assert r["status"] == "done" and r["stage"] == "dnsmos"
        scores = list(csv.DictReader((base / r["per_utterance_csv"]).open()))
        assert len(scores) == 2 and all(s["status"] == "ok" for s in scores)
        for i, k in enumerate(schema.DNSMOS_KEYS):
            vals = np.array([float(s[k]) for s in scores])
            assert ((vals >= 1.0) & (vals <= 5.0)).all(), (name, k, vals)
            cell = f"{vals.mean():.2f} ± {vals.std(ddof=1):.2f}"
            assert rows[row_name][8 + i] == cell, (name, k)
            assert float(table[name][k]) == pytest.approx(vals.mean(), abs=1e-5)
            m = doc["by_system"][name] if name != "noisy" else doc["noisy"]
            assert m["dnsmos_metrics"][k]["mean"] == pytest.approx(vals.mean(), abs=1e-5)
    page = (out / "report.html").read_text()
    assert "<th>SI-SDR</th><th>SIG</th><th>BAK</th><th>OVRL</th>" in page
    assert f">{rows[SYSTEM][10]}</td>" in page


@needs_nr
@pytest.mark.slow  # the study fixture: two real smoke studies, ~45 s of CPU
def test_the_scores_are_speechmos_scores_of_the_enhanced_files(study):
    from speechmos import dnsmos

    from bsmamba.data import audio

    out, _, _, _, _ = study
    run = out / SYSTEM / "s0"
    row = next(csv.DictReader((run / "eval" / "dnsmos.csv").open()))
    again = dnsmos.run(audio.read(run / "enhanced" / row["file"], 16000), 16000)
    assert float(row["ovrl"]) == pytest.approx(again["ovrl_mos"], abs=1e-4)
    assert float(row["sig"]) == pytest.approx(again["sig_mos"], abs=1e-4)


@needs_nr
@pytest.mark.slow  # the study fixture: two real smoke studies, ~45 s of CPU
def test_a_rerun_with_dnsmos_recomputes_nothing_and_report_needs_no_extra(study):
    out, args, _, _, _ = study
    kept = _files(out)
    again = _study(*args, "study.dnsmos=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert re.findall(r"\b(running|done|failed)$", again.stdout, re.M) == []
    assert _files(out) == kept
    # `bsmamba report` only reads the records: it works where speechmos is not installed.
    hide = "import sys\nsys.modules['speechmos'] = None\nfrom bsmamba import cli\n"
    code = hide + f"sys.exit(cli.main(['report', {str(out)!r}]))"
    rep = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert re.search(r"OVRL", rep.stdout)


def test_missing_extra_is_one_line_before_any_work(tmp_path):
    out = tmp_path / "study"
    hide = "import sys\nsys.modules['speechmos'] = None\nfrom bsmamba import cli\n"
    args = ["study", "--recipe", "smoke", "--out", str(out), "study.dnsmos=true"]
    res = subprocess.run(
        [sys.executable, "-c", hide + f"sys.exit(cli.main({args!r}))"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "study.dnsmos=true needs the 'speechmos' package" in lines[0]
    assert 'pip install -e ".[nr]"' in lines[0]
    assert not out.exists()  # nothing started: no study folder, no test set, no lock
