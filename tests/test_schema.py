import json

import pytest

from bsmamba import files, schema


def test_document_has_version_and_rejects_camel_case():
    doc = schema.document("benchmark", step_time_s=float("nan"), by_preset={"abl3": {"params": 1}})
    assert doc["schema_version"] == schema.SCHEMA_VERSION and doc["step_time_s"] is None
    with pytest.raises(ValueError, match="stepTime"):
        schema.document("benchmark", stepTime=1.0)
    with pytest.raises(ValueError, match="kind"):
        schema.document("nonsense")


def test_metric_row_order_and_unknown_keys():
    assert list(schema.metric_row({"stoi": 0.9, "pesq": 2.0})) == list(schema.METRIC_KEYS)
    with pytest.raises(ValueError, match="mos"):
        schema.metric_row({"mos": 3})


def test_atomic_write_json_roundtrip_leaves_no_temp(tmp_path):
    p = files.write_json(tmp_path / "a" / "r.json", {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}
    assert [q.name for q in p.parent.iterdir()] == ["r.json"]
