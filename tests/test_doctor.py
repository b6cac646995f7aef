import json
import os
import subprocess
import sys

from bsmamba import cli


def test_doctor_json_names_the_backend_auto_picks_and_why(capsys):
    assert cli.main(["doctor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "doctor" and doc["device"] == "cpu"
    assert doc["scan_backend"] == "fused" and "cpu" in doc["scan_backend_reason"]
    assert doc["environment"]["torch"].startswith("2.")
    assert (
        doc["scan_compile_active"] is False and "BSMAMBA_SCAN_COMPILE" in doc["scan_compile_reason"]
    )


def test_doctor_text_and_the_compile_switch_in_a_real_process():
    env = {**os.environ, "BSMAMBA_SCAN_COMPILE": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "fused: tensors on cpu" in res.stdout and "requested" in res.stdout
