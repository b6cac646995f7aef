"""The ``bsmamba`` command line: one subcommand a module, imported only when used.

Each command module provides ``add_arguments(parser)`` and ``main(args) -> int``. Commands that
build configs use ``bsmamba.config.add_config_arguments`` so every key is overridable as
``section.key=value``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bsmamba import files

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "study": ("bsmamba.study.runner", "run the ablation study (train, enhance, score, report)"),
    "report": ("bsmamba.study.report", "rebuild a study's report from its finished runs"),
    "train": ("bsmamba.train.run", "train a preset on the demo set or VoiceBank+DEMAND"),
    "enhance": ("bsmamba.enhance_cli", "enhance a file or a folder with a checkpoint"),
    "evaluate": ("bsmamba.evaluate", "score enhanced audio: PESQ, CSIG, CBAK, COVL, SSNR, STOI"),
    "params": ("bsmamba.params", "parameter counts and MACs per preset, beside the plan's claims"),
    "plan": ("bsmamba.memory.cli", "peak training memory: measured and predicted, with verdict"),
    "presets": ("bsmamba.presets_cli", "print the resolved constructor arguments of each preset"),
    "prepare-voicebank": ("bsmamba.data.voicebank", "resample VoiceBank+DEMAND 48 kHz -> 16 kHz"),
    "doctor": ("bsmamba.doctor", "versions, device, threads and the scan backend `auto` picks"),
    "export": ("bsmamba.export", "export a checkpoint to ONNX, for enhance --engine onnxruntime"),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bsmamba",
        description="Band-split speech enhancement: build, train, measure and compare.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items())
        + "\n\nRun `bsmamba COMMAND --help` for a command's options.",
    )
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    return p


def _version() -> str:
    from bsmamba import __version__

    return f"bsmamba {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        _top_parser().parse_args(argv or ["--help"])
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        _top_parser().parse_args([name])  # prints the valid choices and exits 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"bsmamba {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except (ValueError, OSError) as e:
        # User errors (bad input, a folder that cannot be written, a full disk): one clear line,
        # exit 2, no traceback. Commands write atomically, so what they finished is whole.
        print(f"bsmamba {name}: error: {files.error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"bsmamba {name}: interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report it


if __name__ == "__main__":
    sys.exit(main())
