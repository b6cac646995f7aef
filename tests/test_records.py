"""Stage records are written and read through one schema; scores read back as evaluate writes."""

import math

import pytest

from bsmamba import schema
from bsmamba.evaluate import write_outputs
from bsmamba.study import records


def test_a_stage_record_has_the_schemas_fields_and_no_others(tmp_path):
    path = tmp_path / "stages" / "enhance.json"
    rec = records.write_stage(path, "enhance", records.DONE, {"rtf": 0.25, "wall_s": 1.5})
    assert records.read(path) == rec and records.status(path) == "done"
    assert rec["stage"] == "enhance" and rec["record_version"] == schema.RECORD_VERSION
    with pytest.raises(ValueError, match=r"unknown fields \['rtf_s'\]"):
        records.write_stage(path, "enhance", records.DONE, {"rtf_s": 0.25})
    with pytest.raises(ValueError, match="unknown stage status"):
        records.write_stage(path, "enhance", "not_available", {})
    assert records.read(path) == rec  # a refused record never replaces the written one
    assert records.status(tmp_path / "none.json") == "missing"
    path.write_text('{"status": "do')
    assert records.status(path) == "damaged"
    with pytest.raises(records.DamagedRecord, match="enhance.json: damaged record"):
        records.read(path)


def test_scores_read_back_as_evaluate_writes_them(tmp_path):
    rows = [
        {"file": "a.wav", "status": "ok", "pesq": 2.5, "stoi": 0.9},
        {"file": "b.wav", "status": "ok", "pesq": math.nan, "stoi": 0.8},
    ]
    summary = {"noisy_dir": None, "pairs": 2}
    write_outputs(tmp_path / "eval", rows, summary)
    rec = {"status": "done", "per_utterance_csv": records.utterance_csv(tmp_path / "eval")}
    rec["summary"] = summary
    assert rec["per_utterance_csv"] == "eval/per_utterance.csv"
    assert records.scores_damage(rec, tmp_path) is None
    scores = records.read_utterances(tmp_path / rec["per_utterance_csv"], rec)
    assert scores["a.wav"]["pesq"] == 2.5 and math.isnan(scores["b.wav"]["pesq"])
    assert math.isnan(scores["a.wav"]["si_sdr"])  # not measured: a failed measurement
    csv_path = tmp_path / "eval" / "per_utterance.csv"
    csv_path.write_text(csv_path.read_text().replace("file,", "name,", 1))
    assert "no 'file' column" in records.scores_damage(rec, tmp_path)
    csv_path.unlink()
    assert "per_utterance.csv" in records.scores_damage(rec, tmp_path)


def test_fits_reads_the_plans_verdict():
    assert records.fits({"verdict": "fits"})
    assert not records.fits({"verdict": "does_not_fit"}) and not records.fits({})
