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

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bsmamba import env, files, heap

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au")
MIN_CHUNK_S = 1.0  # shortest chunk (seconds) the chunked path accepts
MARKER = files.ENHANCED_MARKER  # in an output folder: written by `bsmamba enhance`


def check_chunking(chunk_s: float, overlap_s: float, names=("chunk_s", "overlap_s")) -> None:
    """Raise ``ValueError`` (naming the key, its value and the valid range) for bad chunking.

    A chunk of at least MIN_CHUNK_S overlapping its neighbour by at most half bounds the work
    at about twice one pass; tiny chunks ran for minutes or gave NaN (too few STFT frames).
    """
    if not (math.isfinite(chunk_s) and chunk_s >= MIN_CHUNK_S):
        raise ValueError(f"{names[0]}={chunk_s}: out of range, valid >= {MIN_CHUNK_S:g} (seconds)")
    if not (math.isfinite(overlap_s) and 0 <= overlap_s <= chunk_s / 2):
        raise ValueError(
            f"{names[1]}={overlap_s}: out of range, valid in [0, {chunk_s / 2:g}] "
            f"(seconds, at most half of {names[0]}={chunk_s:g})"
        )


class Enhancer:
    """An enhancer model ready for inference at its sample rate (16 kHz for every preset).

    ``enhance(wav, sample_rate) -> np.ndarray`` float32 (S',) at ``self.sample_rate``; the notes
    about the last call (resampled, downmixed) are in ``self.notes``.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu",
                 chunk_s: float = 10.0, overlap_s: float = 1.0):  # fmt: skip
        check_chunking(chunk_s, overlap_s)
        if isinstance(device, str):
            device = env.resolve_device(device)  # auto: cuda, then mps, then cpu
        self.device = torch.device(device)
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
        with torch.inference_mode(), heap.kept_heap():  # large temporaries reuse pages
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
    from bsmamba import checkpoint as ckpt_io
    from bsmamba.model import BandSplitEnhancer

    path = ckpt_io.resolve(ckpt_or_run_dir)
    ckpt = ckpt_io.load(path, map_location="cpu")
    cfg = dict(ckpt["bsmamba"]["model_config"], checkpointing=False)  # no training: no recompute
    model = BandSplitEnhancer(**cfg)
    state = ckpt_io.model_state(ckpt)
    ckpt_io.check_fits(path, state, model)  # one line, not torch's list of every key
    model.load_state_dict(state)
    enhancer = Enhancer(model, device, **kwargs)
    enhancer.checkpoint = path
    return enhancer


def plan(src: str | Path, dst: str | Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input, output) pairs and notes, checked before any work; raises ``ValueError``.

    A file -> one pair; a folder -> every audio file below it, mirrored into ``dst`` as .wav.
    Refused: an output that is an input, two inputs with one output name (``a.wav``, ``a.flac``),
    a folder into an existing file, and overwriting files of a folder ``enhance`` did not write.
    Left out of the inputs: ``dst`` itself and folders an earlier ``enhance`` wrote (a marker
    file says so), so an output folder inside the input folder is not enhanced again.
    """
    src, dst = Path(src), Path(dst)
    notes: list[str] = []
    if src.is_file():
        out = dst / (src.stem + ".wav") if dst.is_dir() or not dst.suffix else dst
        pairs = [(src, out)]
    elif not src.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    else:
        if dst.is_file() or dst.suffix.lower() in AUDIO_SUFFIXES:
            raise ValueError(
                f"the input {src} is a folder but the output {dst} is "
                f"{'a file' if dst.is_file() else 'named like a file'}; give an output folder"
            )
        if dst.resolve() == src.resolve():
            raise ValueError(
                f"the output folder {dst} is the input folder: the enhanced files would replace "
                "the inputs; choose another output folder"
            )
        found, left_out = _audio_below(src, dst)
        notes += [
            f"left out {d}: " + ("the output folder" if d.resolve() == dst.resolve() else
                                 "output of an earlier bsmamba enhance")
            for d in left_out
        ]  # fmt: skip
        if not found:
            raise FileNotFoundError(f"{src}: no audio files ({', '.join(AUDIO_SUFFIXES)}) below it")
        pairs = [(p, dst / p.relative_to(src).with_suffix(".wav")) for p in found]
    inputs = {p.resolve() for p, _ in pairs}
    by_out: dict[Path, list[Path]] = {}
    for inp, out in pairs:
        if out.resolve() in inputs:
            raise ValueError(
                f"the output {out} would overwrite the input {inp}; choose another output"
            )
        by_out.setdefault(out, []).append(inp)
    clashes = [(out, ins) for out, ins in by_out.items() if len(ins) > 1]
    if clashes:
        out, ins = clashes[0]
        more = f" ({len(clashes)} names clash)" if len(clashes) > 1 else ""
        raise ValueError(
            f"{' and '.join(str(p) for p in ins)} would {'both' if len(ins) == 2 else 'all'} be "
            f"written to {out}{more}; "
            "rename one of them, or enhance them into different output folders"
        )
    if src.is_dir() and dst.is_dir() and not (dst / MARKER).is_file():
        taken = [out for _, out in pairs if out.exists()]
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise ValueError(
                f"{dst} already holds {taken[0]}{more}, not written by bsmamba enhance; "
                "choose a new or empty output folder"
            )
    return pairs, notes


def _audio_below(src: Path, dst: Path) -> tuple[list[Path], list[Path]]:
    """Audio files below ``src`` (sorted) and the folders left out: ``dst`` and marked ones."""
    found, left_out = [], []
    skip = dst.resolve()
    for folder, subdirs, names in os.walk(src):
        keep = []
        for d in sorted(subdirs):
            sub = Path(folder) / d
            if sub.resolve() == skip or (sub / MARKER).is_file():
                left_out.append(sub)
            else:
                keep.append(d)
        subdirs[:] = keep  # os.walk descends only into these
        found += [
            Path(folder) / n
            for n in names
            if Path(n).suffix.lower() in AUDIO_SUFFIXES and (Path(folder) / n).is_file()
        ]
    return sorted(found), left_out


def enhance_path(
    checkpoint: str | Path | Enhancer,
    src: str | Path,
    dst: str | Path,
    device: str = "cpu",
    log=None,
) -> dict[str, Any]:
    """Enhance a file or a folder (recursively) into ``dst`` as 16 kHz wavs; returns a summary.

    Everything :func:`plan` refuses, and an output folder that cannot be written, raise before
    any work. Unreadable or truncated files are reported in ``skipped`` and left out;
    resampling / downmixing notes are in ``notes``. A write that fails (full disk) raises
    ``OSError`` naming the file; the files written before it are complete (atomic writes) and
    kept. ``log`` (a callable taking a line) reports progress, e.g. ``print``.
    """
    import soundfile as sf

    from bsmamba.data import audio

    src, dst = Path(src), Path(dst)
    pairs, plan_notes = plan(src, dst)
    folder_out = src.is_dir()
    files.check_writable(dst if folder_out else pairs[0][1].parent)
    enhancer = checkpoint if isinstance(checkpoint, Enhancer) else load(checkpoint, device)
    if folder_out:  # says "written by enhance": a later run may overwrite it, not re-enhance it
        files.write_json(dst / MARKER, {"written_by": "bsmamba enhance", "input": str(src),
                                        "checkpoint": str(enhancer.checkpoint)})  # fmt: skip
    done, skipped, notes = [], [], [{"file": str(src), "note": n} for n in plan_notes]
    if log:
        for n in plan_notes:
            log(n)
    audio_s, t0 = 0.0, time.perf_counter()
    for inp, out in pairs:
        try:
            truncated = audio.wav_truncated(inp)
            if truncated:  # libsndfile would quietly read the part that is there
                raise ValueError(f"{truncated}; re-copy or re-export the file")
            wav, rate = sf.read(str(inp), dtype="float32", always_2d=True)  # (S, C)
            y = enhancer.enhance(wav[:, 0] if wav.shape[1] == 1 else wav, rate)
        except Exception as e:  # a bad file is reported and skipped, the rest go on
            skipped.append({"file": str(inp), "reason": f"{type(e).__name__}: {e}"})
            if log:
                log(f"skipped {inp}: {e}")
            continue
        try:
            audio.write(out, y, enhancer.sample_rate)
        except OSError as e:  # full disk, ...: every later file would fail the same way
            what = files.error_line(OSError(e.errno, e.strerror))
            kept = f"the {len(done)} file(s) written before it are complete and kept"
            raise OSError(e.errno, f"{what}; {kept}", str(out)) from None
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
