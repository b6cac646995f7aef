"""``bsmamba enhance`` and ``bsmamba.load``: a trained checkpoint applied to any audio.

    enhancer = bsmamba.load("runs/abl3-demo-s0")        # a .ckpt or a run dir (its best one)
    clean = enhancer.enhance(noisy, sample_rate=44100)   # np (S,) or (S, C)/(C, S) -> 16 kHz (S',)

Any length: a long input is cut into overlapping chunks (``chunk_s`` long, ``overlap_s``
shared with the next); each chunk is enhanced on its own and the chunks are cross-faded with
raised-cosine weights (overlap-add, normalised by the summed weights), so the memory is bounded
and there is no seam. Input at another rate is resampled (soxr HQ) to the model's rate, and
multi-channel input is averaged to mono; both are reported as notes.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


class Enhancer:
    """An enhancer model ready for inference at its sample rate (16 kHz for every preset).

    ``enhance(wav, sample_rate) -> np.ndarray`` float32 (S',) at ``self.sample_rate``; the notes
    about the last call (resampled, downmixed) are in ``self.notes``.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu",
                 chunk_s: float = 10.0, overlap_s: float = 1.0):  # fmt: skip
        if not 0 <= overlap_s < chunk_s:
            raise ValueError(f"need 0 <= overlap_s < chunk_s, got {overlap_s} and {chunk_s}")
        self.device = _device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.sample_rate = int(model.sample_rate)
        self.chunk = int(round(chunk_s * self.sample_rate))
        self.overlap = int(round(overlap_s * self.sample_rate))
        self.notes: list[str] = []
        self.checkpoint: Path | None = None  # set by :func:`load`

    def enhance(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        """Enhance one recording: wav (S,), (S, C) or (C, S) at ``sample_rate`` Hz -> (S',)."""
        from bsmamba.data.audio import resample

        self.notes = []
        x = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
        x = x.astype(np.float32, copy=False)
        if x.ndim == 2:
            ch_axis = 0 if x.shape[0] < x.shape[1] else 1  # channels: the short axis
            self.notes.append(f"downmixed {x.shape[ch_axis]} channels to mono")
            x = x.mean(axis=ch_axis)
        elif x.ndim != 1:
            raise ValueError(f"expected a waveform (S,) or (S, C), got shape {x.shape}")
        if x.size == 0:
            raise ValueError("empty waveform")
        if not np.isfinite(x).all():
            raise ValueError("waveform contains NaN or Inf samples")
        if sample_rate != self.sample_rate:
            self.notes.append(f"resampled {sample_rate} Hz -> {self.sample_rate} Hz")
            x = resample(x, sample_rate, self.sample_rate)
        with torch.inference_mode():
            y = self._chunked(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return y.float().cpu().numpy()

    def _chunked(self, x: torch.Tensor) -> torch.Tensor:
        """x (S,) -> enhanced (S,), in overlapping chunks cross-faded by overlap-add."""
        n, c, o = x.shape[0], self.chunk, self.overlap
        if n <= c:
            return self.model(x[None])[0]
        # Chunk starts on the STFT's frame grid: the frames of a chunk are then frames of the
        # whole file (an off-grid start re-frames the signal and changes the output).
        grid = self.model.frontend.hop_length
        hop = max(grid, (c - o) // grid * grid)
        starts = list(range(0, n - c, hop))
        starts.append(max(starts[-1] + grid, (n - c) // grid * grid))  # the last one ends at n
        ends = [s + c for s in starts[:-1]] + [n]
        out = torch.zeros(n, device=x.device)
        norm = torch.zeros(n, device=x.device)
        for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
            w = torch.ones(e - s, device=x.device)
            if i > 0:  # fade in across the middle of the overlap with the previous chunk
                w *= _fade(ends[i - 1] - s, e - s, x.device)
            if i < len(starts) - 1:  # fade out across the middle of the overlap with the next
                w *= _fade(e - starts[i + 1], e - s, x.device).flip(0)
            out[s:e] += w * self.model(x[None, s:e])[0]
            norm[s:e] += w
        return out / norm


def _fade(overlap: int, length: int, device) -> torch.Tensor:
    """Weights (length,) rising 0 -> 1 over the middle half of the first ``overlap`` samples.

    The outer quarters of an overlap are where a chunk lacks context (its edge); they get
    weight 0 (rising side) or are left to the neighbour, so the cross-fade uses only samples
    that both chunks saw with context on both sides. Raised cosine: fade-in + fade-out = 1.
    """
    w = torch.ones(length, device=device)
    q, half = overlap // 4, max(overlap - 2 * (overlap // 4), 1)
    w[:q] = 0.0
    t = (torch.arange(half, device=device) + 0.5) / half
    w[q : q + half] = torch.sin(0.5 * math.pi * t) ** 2
    return w


def load(ckpt_or_run_dir: str | Path, device: str = "cpu", **kwargs: Any) -> Enhancer:
    """An :class:`Enhancer` from a ``.ckpt`` or a run directory (its best checkpoint).

    Loads with ``torch.load(weights_only=True)``; the model is rebuilt from the config the
    checkpoint embeds. kwargs go to :class:`Enhancer` (``chunk_s``, ``overlap_s``).
    """
    from bsmamba.model import BandSplitEnhancer
    from bsmamba.train import checkpoint as ckpt_io

    path = ckpt_io.resolve(ckpt_or_run_dir)
    ckpt = ckpt_io.load(path, map_location="cpu")
    cfg = dict(ckpt["bsmamba"]["model_config"], checkpointing=False)  # no training: no recompute
    model = BandSplitEnhancer(**cfg)
    model.load_state_dict(ckpt_io.model_state(ckpt))
    enhancer = Enhancer(model, device, **kwargs)
    enhancer.checkpoint = path
    return enhancer


def _inputs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: a file -> one pair; a folder -> every audio file below, mirrored."""
    if src.is_file():
        out = dst / (src.stem + ".wav") if dst.is_dir() or not dst.suffix else dst
        return [(src, out)]
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    found = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"{src}: no audio files ({', '.join(AUDIO_SUFFIXES)}) below it")
    return [(p, dst / p.relative_to(src).with_suffix(".wav")) for p in found]


def enhance_path(
    checkpoint: str | Path | Enhancer,
    src: str | Path,
    dst: str | Path,
    device: str = "cpu",
    log=None,
) -> dict[str, Any]:
    """Enhance a file or a folder (recursively) into ``dst`` as 16 kHz wavs; returns a summary.

    Unreadable files are reported in ``skipped`` and left out; resampling / downmixing notes are
    in ``notes``. ``log`` (a callable taking a line) reports progress, e.g. ``print``.
    """
    import soundfile as sf

    from bsmamba.data import audio

    enhancer = checkpoint if isinstance(checkpoint, Enhancer) else load(checkpoint, device)
    pairs = _inputs(Path(src), Path(dst))
    done, skipped, notes = [], [], []
    audio_s, t0 = 0.0, time.perf_counter()
    for inp, out in pairs:
        try:
            wav, rate = sf.read(str(inp), dtype="float32", always_2d=True)  # (S, C)
            y = enhancer.enhance(wav[:, 0] if wav.shape[1] == 1 else wav, rate)
        except Exception as e:  # a bad file is reported and skipped, the rest go on
            skipped.append({"file": str(inp), "reason": f"{type(e).__name__}: {e}"})
            if log:
                log(f"skipped {inp}: {e}")
            continue
        audio.write(out, y, enhancer.sample_rate)
        audio_s += len(y) / enhancer.sample_rate
        done.append(str(out))
        notes += [{"file": str(inp), "note": n} for n in enhancer.notes]
        if log:
            extra = f" ({'; '.join(enhancer.notes)})" if enhancer.notes else ""
            log(f"{inp} -> {out}{extra}")
    wall = time.perf_counter() - t0
    return {
        "checkpoint": enhancer.checkpoint and str(enhancer.checkpoint),
        "out": str(dst),
        "files": len(done),
        "skipped": skipped,
        "notes": notes,
        "audio_s": audio_s,
        "wall_s": wall,
        "rtf": wall / audio_s if audio_s else None,
    }


# ---- command line ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .ckpt file or a training run directory")
    parser.add_argument("input", help="an audio file or a folder (searched recursively)")
    parser.add_argument("output", help="output file, or folder mirroring the input folder")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
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


def main(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    enhancer = load(args.checkpoint, args.device, chunk_s=args.chunk_s, overlap_s=args.overlap_s)
    print(f"bsmamba enhance: {enhancer.checkpoint} on {enhancer.device}")
    if args.stream:
        from bsmamba import stream

        enhancer = stream.streaming(enhancer, args.stream_chunk)
        print(
            f"  streaming in chunks of {args.stream_chunk} samples, algorithmic latency "
            f"{stream.latency_samples(enhancer.model.config)} samples"
        )
    s = enhance_path(enhancer, args.input, args.output, log=lambda m: print(f"  {m}"))
    rtf = f", RTF {s['rtf']:.3f}" if s["rtf"] is not None else ""
    print(
        f"bsmamba enhance: {s['files']} file(s), {s['audio_s']:.1f} s of audio in "
        f"{s['wall_s']:.1f} s{rtf}; {len(s['skipped'])} skipped"
    )
    return 1 if s["skipped"] and not s["files"] else 0
