"""`bsmamba enhance`: the command line over :mod:`bsmamba.enhance` (offline), and the engines
that build on it (:mod:`bsmamba.stream` for --stream, :mod:`bsmamba.onnx_engine` for onnxruntime).
Kept apart from the library so that those modules import ``enhance`` and never the reverse."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bsmamba import env, files
from bsmamba.enhance import check_chunking, enhance_path, load, plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .ckpt file or a training run directory "
                        "(with --engine onnxruntime: a file from `bsmamba export`)")  # fmt: skip
    parser.add_argument("input", help="an audio file or a folder (searched recursively)")
    parser.add_argument("output", help="output file, or folder mirroring the input folder")
    parser.add_argument("--device", default="cpu", choices=env.DEVICES)
    parser.add_argument("--engine", default="torch", choices=["torch", "onnxruntime"],
                        help="onnxruntime: run an exported .onnx file (CPU)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--chunk-s", type=float, default=10.0, help="chunk length (s)")
    parser.add_argument("--overlap-s", type=float, default=1.0, help="chunk overlap (s)")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="causal models: enhance chunk by chunk as live audio (bsmamba.stream)",
    )
    parser.add_argument(
        "--stream-chunk",
        type=int,
        default=128,
        help="with --stream: samples per chunk (default 128, one 8 ms hop)",
    )
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit 0 when some files were skipped (default: exit 1)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    if args.threads < 0:
        raise ValueError(
            f"--threads={args.threads}: out of range, valid >= 0 (0 = torch's default)"
        )
    # Everything that can be refused is refused before the model is loaded.
    check_chunking(args.chunk_s, args.overlap_s, ("--chunk-s", "--overlap-s"))
    pairs, _ = plan(args.input, args.output)
    files.check_writable(args.output if Path(args.input).is_dir() else pairs[0][1].parent)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    chunking = dict(chunk_s=args.chunk_s, overlap_s=args.overlap_s)
    if args.engine == "onnxruntime":
        from bsmamba import onnx_engine

        if args.stream:  # a file from `export --stream`
            enhancer = onnx_engine.load_onnx_stream(
                args.checkpoint, args.device, args.threads, args.stream_chunk
            )
        else:
            enhancer = onnx_engine.load_onnx(args.checkpoint, args.device, args.threads, **chunking)
    elif str(args.checkpoint).endswith(".onnx"):
        raise ValueError(f"{args.checkpoint} is an ONNX export: add --engine onnxruntime")
    else:
        enhancer = load(args.checkpoint, args.device, **chunking)
        if args.stream:
            from bsmamba import stream

            enhancer = stream.streaming(enhancer, args.stream_chunk)
    print(f"bsmamba enhance: {enhancer.checkpoint} on {enhancer.device} ({args.engine})")
    if args.stream:
        print(
            f"  streaming in chunks of {args.stream_chunk} samples, algorithmic latency "
            f"{enhancer.latency} samples"
        )
    s = enhance_path(enhancer, args.input, args.output, log=lambda m: print(f"  {m}"))
    rtf = f", RTF {s['rtf']:.3f}" if s["rtf"] is not None else ""
    print(
        f"bsmamba enhance: {s['files']} file(s), {s['audio_s']:.1f} s of audio in "
        f"{s['wall_s']:.1f} s{rtf}; {len(s['skipped'])} skipped"
    )
    # 1: some inputs were not enhanced (named above); 0 with --allow-partial if any were.
    return 1 if s["skipped"] and not (args.allow_partial and s["files"]) else 0
