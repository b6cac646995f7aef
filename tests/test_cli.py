import subprocess
import sys


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bsmamba.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command():
    from bsmamba.cli import COMMANDS

    out = _cli("--help")
    assert out.returncode == 0
    assert all(name in out.stdout for name in COMMANDS)


def test_unknown_command_and_export_fail_clearly():
    assert _cli("nonsense").returncode == 2
    out = _cli("export", "x.ckpt", "x.onnx")
    assert out.returncode == 2 and "x.ckpt does not exist" in out.stderr


def test_presets_prints_resolved_arguments():
    out = _cli("presets", "bsrnn", "abl3")
    assert out.returncode == 0
    assert "mixer=lstm" in out.stdout and "decoder=adaptive" in out.stdout
