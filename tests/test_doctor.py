import json
import subprocess
import sys

from bsmamba import cli


def test_doctor_json_names_the_backend_auto_picks_and_why(capsys):
    assert cli.main(["doctor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "doctor" and doc["device"] == "cpu"
    assert doc["scan_backend"] == "fused" and "cpu" in doc["scan_backend_reason"]
    assert doc["environment"]["torch"].startswith("2.")


def test_doctor_text_in_a_real_process():
    res = subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "fused: tensors on cpu" in res.stdout
