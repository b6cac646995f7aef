"""``bsmamba export CKPT OUT.onnx``: a trained model as one ONNX graph, and the engine that runs it.

What is exported is the model's real-valued spectral core, dynamic in batch and frames:

    spec (B, F, T, 2) float32  -> enhanced spec (B, F, T, 2)      (last axis: real, imaginary)

the encoder, every mixer pass and the mask decoder, with the 3-tap mask applied. Complex tensors
do not export, and the STFT pair stays outside the graph: the runtime (:func:`load_onnx`, or any
other) frames the waveform with the centred, reflect-padded STFT whose settings the file carries
in its metadata (``stft``: sample_rate, n_fft, hop_length, win_length, window).

LSTMs become ONNX ``LSTM`` nodes, a Mamba block's recurrence an ONNX ``Scan`` over the sequence
(the graph pieces: :mod:`bsmamba.export_graph`, :mod:`bsmamba.export_scan`).

``bsmamba enhance --engine onnxruntime MODEL.onnx IN OUT`` runs an exported file through the
same chunking and overlap-add as the torch engine (:class:`bsmamba.enhance.Enhancer`).
``--stream`` writes a causal model as a one-hop-a-call graph instead (:mod:`bsmamba.stream_export`).
Needs the ``export`` extra (onnx, onnxscript, onnxruntime); importing bsmamba never does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from bsmamba.export_graph import MIN_OPSET, SpectralCore, check_opset, set_metadata, trace
from bsmamba.export_scan import chunk_band_lstms, lower_recurrences, ssm_translation
from bsmamba.onnx_engine import FORMAT, FORMAT_VERSION, OnnxModel, need

TOLERANCE = 1e-4  # |onnxruntime - torch| an export must meet on its check input


def export_onnx(model: nn.Module, opset: int = MIN_OPSET, frames: int = 37):
    """``model``'s :class:`~bsmamba.export_graph.SpectralCore` as an ``onnx.ModelProto`` (Mamba
    recurrences as Scan).

    Input ``spec`` (batch, F, frames, 2) and output ``enhanced`` of the same shape, batch and
    frames dynamic. ``frames`` is only the length traced. The metadata carries the STFT settings
    and the model config (see :func:`load_onnx`).
    """
    import copy

    onnx, onnxscript = need("onnx", "onnxscript", what="ONNX export")
    check_opset(onnx, opset)
    core = SpectralCore(copy.deepcopy(model).float().eval())
    spec = torch.randn(2, model.frontend.n_bins, frames, 2)
    dyn = torch.export.Dim.DYNAMIC
    proto = trace(
        core,
        (spec,),
        opset,
        input_names=["spec"],
        output_names=["enhanced"],
        dynamic_shapes=({0: dyn, 2: dyn},),
        custom_translation_table=ssm_translation(onnx, onnxscript),
    )
    proto = chunk_band_lstms(lower_recurrences(proto))
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "stft": json.dumps(model.config["stft"]),
        "model_config": json.dumps(model.config),
    }
    set_metadata(onnx, proto, meta)
    return proto


def check_export(model: nn.Module, proto, seconds: float = 2.0, seed: int = 0) -> float:
    """max |onnxruntime - torch| of the enhanced waveform on ``seconds`` of noise at speech
    level (std 0.1), batch 2, with ``proto`` written to a temporary file. ``model``: float32,
    in eval mode (what :func:`bsmamba.load` gives)."""
    import tempfile

    gen = torch.Generator().manual_seed(seed)
    wav = 0.1 * torch.randn(2, int(seconds * model.sample_rate), generator=gen)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "check.onnx"
        path.write_bytes(proto.SerializeToString())
        with torch.inference_mode():
            ours = OnnxModel(path)(wav)
            theirs = model(wav)
    return float((ours - theirs).abs().max())


# ---- the command -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .ckpt file or a training run directory")
    parser.add_argument("output", help="the ONNX file to write (OUT.onnx)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET,
                        help=f"ONNX opset (default and minimum {MIN_OPSET})")  # fmt: skip
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the file in onnxruntime against torch")  # fmt: skip
    parser.add_argument("--stream", action="store_true",
                        help="causal models: one hop in, one hop out, the states as inputs and "
                        "outputs (for enhance --stream --engine onnxruntime)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    from bsmamba import checkpoint as ckpt_io
    from bsmamba import files
    from bsmamba.enhance import load

    out = Path(args.output)
    if out.suffix != ".onnx":
        raise ValueError(f"{out}: the output must end in .onnx (e.g. {out.with_suffix('.onnx')})")
    if out.is_dir():
        raise ValueError(f"{out} is a folder; give the file to write, e.g. {out / 'model.onnx'}")
    src = ckpt_io.resolve(args.checkpoint)
    if out.resolve() == src.resolve():
        raise ValueError(f"{out} is the checkpoint itself; write the export to another file")
    (onnx, _) = need("onnx", "onnxscript", what="ONNX export")
    check_opset(onnx, args.opset, "--opset")
    if not args.no_check:
        need("onnxruntime", what="checking the export (or pass --no-check)")
    model = load(src).model
    kind = "streaming, one hop a call" if args.stream else "offline"
    if args.stream:
        from bsmamba import stream_export

        stream_export.check_streamable(model)  # not causal: the reasons, before any work
    print(f"bsmamba export: {src} (preset {model.config['preset']}) -> {out}, opset {args.opset}"
          f", {kind}")  # fmt: skip
    if args.stream:
        proto = stream_export.export_stream(model, args.opset)
        check, what = stream_export.check_stream_export, "streamed hop by hop over 1 s of noise"
    else:
        proto = export_onnx(model, args.opset)
        check, what = check_export, "on 2 s of noise"
    if not args.no_check:
        err = check(model, proto)
        verdict = "ok" if err <= TOLERANCE else "FAILED"
        print(f"  onnxruntime vs torch {what}: max |difference| {err:.2e} "
              f"(tolerance {TOLERANCE:g}): {verdict}")  # fmt: skip
        if err > TOLERANCE:
            print(f"bsmamba export: {out} not written", file=sys.stderr)
            return 1
    files.atomic_write(out, lambda f: f.write(proto.SerializeToString()))
    flag = " --stream" if args.stream else ""
    print(f"bsmamba export: wrote {out} ({out.stat().st_size / 1e6:.1f} MB); run it with "
          f"`bsmamba enhance{flag} --engine onnxruntime {out} IN OUT`")  # fmt: skip
    return 0
