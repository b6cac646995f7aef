"""Streaming enhancement: a causal model applied chunk by chunk, equal to the offline output.

    streamer = Streamer(model)                  # a BandSplitEnhancer in a causal configuration
    for chunk in mic:                           # any chunk size, in samples at 16 kHz
        play(streamer.process(chunk))           # the enhanced samples that are final so far
    play(streamer.flush())                      # the rest, once the input has ended

Concatenated, the outputs equal ``model(wav)`` of the whole input (float rounding aside).
Which configurations can stream, and the latency (n_fft + hop samples: 40 ms), are in
:mod:`bsmamba.causal`. ``Streamer`` does the framing (the STFT's reflection at both ends) and
the overlap-add around :class:`bsmamba.stream_core.StreamCore` (the model on frames, every
state explicit); ``bsmamba export --stream`` (:mod:`bsmamba.stream_export`) puts all of it in
one graph that takes and returns one hop a call. ``streaming`` makes an ``Enhancer`` stream.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bsmamba.causal import LOOKAHEAD, latency_samples
from bsmamba.enhance import Enhancer
from bsmamba.stream_core import StreamCore


class Streamer:
    """Chunk-by-chunk enhancement with a causal model; see the module doc.

    ``process(chunk (n,)) -> (m,)``: the enhanced samples that became final (m may be 0);
    ``flush() -> (r,)``: the rest, after which the outputs add up to exactly as many samples as
    went in. numpy in -> float32 numpy out; a tensor in -> a tensor out. Samples at the model's
    rate (``sample_rate``, 16 kHz), mono. ``reset()`` starts a new stream. ``latency`` is in
    samples.
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = None):
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.core = StreamCore(model.to(self.device).eval())
        fe = model.frontend
        self.n_fft, self.hop, self.half = fe.n_fft, fe.hop_length, fe.n_fft // 2
        self.latency = latency_samples(model.config)
        self.sample_rate = int(model.sample_rate)
        self.dtype = self.core.window.dtype
        self._w2 = self.core.window**2  # the overlap-add's envelope of one frame
        self._tensor_io = False  # whether the last chunk was a tensor (then so is the output)
        self.reset()

    def reset(self) -> None:
        self._state = self.core.init_state(1)
        self._x = torch.zeros(0, dtype=self.dtype, device=self.device)  # input from index _x0
        self._x0 = 0
        self._received = 0
        self._next = 0  # next frame to compute
        self._ola = torch.zeros(0, dtype=self.dtype, device=self.device)  # output from _y0
        self._env = torch.zeros_like(self._ola)  # summed squared windows, as offline
        self._y0 = 0

    def process(self, chunk: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        x = self._tensor(chunk)
        self._x = torch.cat([self._x, x])
        self._received += x.shape[0]
        # frame t spans [t*hop - half, t*hop + half); frame 0 reflects sample `half` in as well
        ready = (self._received - self.half) // self.hop + 1 if self._received > self.half else 0
        y = self._run(ready, end=None)
        return y.cpu().numpy() if isinstance(chunk, np.ndarray) else y

    def flush(self) -> np.ndarray | torch.Tensor:
        """The remaining output; the stream is reset afterwards."""
        n = self._received
        if n == 0:
            out = self._x.new_zeros(0)
        else:
            if n <= self.half:  # as offline: too short to reflect, extended with zeros
                self._x = torch.cat([self._x, self._x.new_zeros(self.half + 1 - n)])
            total = max(n, self.half + 1)
            frames = total // self.hop + 1  # as torch.stft with center=True
            out = self._run(frames, end=total, length=n)
        self.reset()
        return out.cpu().numpy() if not self._tensor_io else out

    # ---- internals
    def _tensor(self, chunk) -> torch.Tensor:
        self._tensor_io = isinstance(chunk, torch.Tensor)
        x = chunk if self._tensor_io else torch.from_numpy(np.asarray(chunk, dtype=np.float32))
        if x.dim() != 1:
            raise ValueError(f"expected a mono chunk of samples (n,), got shape {tuple(x.shape)}")
        return x.to(self.device, self.dtype)

    def _frame_block(self, first: int, stop: int, end: int | None) -> torch.Tensor:
        """Frames first..stop-1 (1, k, n_fft) from the input buffer, reflected at index 0 and,
        when ``end`` (the input length) is known, at its last sample."""
        start = first * self.hop - self.half - self._x0
        if start >= 0 and end is None:  # inside the input (every frame but the first two)
            stop_at = start + (stop - first - 1) * self.hop + self.n_fft
            return self._x[start:stop_at].unfold(0, self.n_fft, self.hop)[None]
        idx = torch.arange(first, stop, device=self.device)[:, None] * self.hop
        idx = (idx + torch.arange(-self.half, self.half, device=self.device)).abs()
        if end is not None:
            idx = torch.where(idx > end - 1, 2 * (end - 1) - idx, idx)
        return self._x[idx - self._x0][None]

    def _run(self, ready: int, end: int | None, length: int | None = None) -> torch.Tensor:
        """Compute frames up to ``ready``, overlap-add, and return the samples now final."""
        with torch.inference_mode():
            if ready > self._next:
                frames = self._frame_block(self._next, ready, end)
                out, *self._state = self.core.forward(frames, *self._state)  # no hooks to run
                first = self._next - LOOKAHEAD  # out holds frames first ... ready - 2
                self._add(out[0], first)
                self._next = ready
            if end is not None and self._next > 0:
                self._add(self.core.finish(*self._state), self._next - 1)
            # samples before the first frame not yet finished are final
            final = (self._next - LOOKAHEAD) * self.hop - self.half if end is None else length
            y = self._take(final)
            keep = max(0, self._next * self.hop - self.half - 1)  # frame _next starts at +1
            self._x = self._x[keep - self._x0 :]
            self._x0 = keep
        return y

    def _add(self, frames: torch.Tensor, first: int) -> None:
        """Overlap-add windowed frames (k, n_fft) of frames first ... first+k-1 (skip < 0)."""
        if first < 0:
            frames, first = frames[-first:], 0
        k = frames.shape[0]
        if k == 0:
            return
        start = first * self.hop - self.half - self._y0  # in the ola buffer; may be < 0
        need = start + self.hop * (k - 1) + self.n_fft
        if need > self._ola.shape[0]:
            grow = need - self._ola.shape[0]
            self._ola = torch.cat([self._ola, self._ola.new_zeros(grow)])
            self._env = torch.cat([self._env, self._env.new_zeros(grow)])
        w2 = self._w2
        for i in range(k):  # k is small (a chunk's frames); fold would need the same loop
            s = start + i * self.hop
            lo = max(0, -s)  # samples before index 0 of the output are dropped, as offline
            self._ola[s + lo : s + self.n_fft] += frames[i, lo:]
            self._env[s + lo : s + self.n_fft] += w2[lo:]

    def _take(self, final: int) -> torch.Tensor:
        """Samples _y0 ... final-1, normalised by the summed squared windows, taken out."""
        m = max(0, final - self._y0)
        y = self._ola[:m] / self._env[:m].clamp_min(1e-11)
        self._ola, self._env = self._ola[m:], self._env[m:]
        self._y0 += m
        return y


class StreamingEnhancer(Enhancer):
    """An ``enhance.Enhancer`` that runs each recording through ``streamer`` (a
    :class:`Streamer`, or :class:`bsmamba.onnx_engine.OnnxStreamer`) in chunks of ``chunk``
    samples instead of offline: the same output within float rounding, as live audio would get
    it. ``latency`` is the streamer's, in samples. Build one on a loaded model with
    :func:`streaming`."""

    def __init__(self, streamer, chunk: int = 128, device="cpu", checkpoint=None):
        if chunk < 1:
            raise ValueError(f"stream chunk must be >= 1 sample, got {chunk}")
        # no Enhancer.__init__: there is no offline model and no chunking to set up
        self.streamer, self.chunk = streamer, int(chunk)
        self.device = torch.device(device)
        self.sample_rate = int(streamer.sample_rate)
        self.latency = streamer.latency
        self.notes: list[str] = []
        self.checkpoint = checkpoint

    def _chunked(self, x: torch.Tensor) -> torch.Tensor:
        streamer, c = self.streamer, self.chunk
        streamer.reset()
        out = [streamer.process(x[i : i + c]) for i in range(0, x.shape[0], c)]
        return torch.cat([*out, streamer.flush()])


def streaming(enhancer: Enhancer, chunk: int = 128) -> StreamingEnhancer:
    """``enhancer`` (e.g. from ``bsmamba.load``) made streaming, in chunks of ``chunk`` samples
    (default one 8 ms hop). Raises ValueError, before any work, if its model is not causal."""
    if chunk < 1:
        raise ValueError(f"stream chunk must be >= 1 sample, got {chunk}")
    streamer = Streamer(enhancer.model, enhancer.device)
    return StreamingEnhancer(streamer, chunk, enhancer.device, enhancer.checkpoint)
