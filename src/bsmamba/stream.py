"""Streaming enhancement: a causal model applied chunk by chunk, equal to the offline output.

    streamer = Streamer(model)                  # a BandSplitEnhancer in a causal configuration
    for chunk in mic:                           # any chunk size, in samples at 16 kHz
        play(streamer.process(chunk))           # the enhanced samples that are final so far
    play(streamer.flush())                      # the rest, once the input has ended

Concatenated, the outputs equal ``model(wav)`` of the whole input (float rounding aside).

A configuration is causal when no part reads more than a bounded stretch of the future:

- every time pass runs a unidirectional mixer (``lstm`` or ``mamba``); ``bimamba``'s backward
  block starts at the end of the utterance. Band passes run inside one frame, so a band mixer
  may be bidirectional (BSRNN's BiLSTM across bands stays causal in time);
- ``norm=layernorm`` (per frame); ``groupnorm`` takes its statistics over the whole utterance.

Latency (``latency_samples``): frame t of the centred STFT spans samples [t*hop - n_fft/2,
t*hop + n_fft/2), and the decoder's 3-tap filter needs the noisy frame t+1 to finish frame t.
An output sample is final once every frame overlapping it is, so the output of sample n is
available once sample n + n_fft + hop - 1 has arrived (n at the start of a hop): n_fft + hop
samples, 512 + 128 = 640 samples = 40 ms for every preset (the 32 ms window plus one 8 ms
frame of look-ahead). Compute time comes on top.

``StreamCore`` is the tensor-only part (frames in, windowed enhanced frames out, every state an
explicit tensor). ``Streamer`` adds the framing (the STFT's reflection at both ends) and the
overlap-add. ``bsmamba export --stream`` (:mod:`bsmamba.stream_export`) puts all of it, the
framing and overlap-add too, in one graph that takes and returns one hop a call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from bsmamba.decoders import TAPS
from bsmamba.enhance import Enhancer
from bsmamba.sequence.mamba import Mamba

LOOKAHEAD = TAPS // 2  # frames of look-ahead of the decoder's filter (t-1, t, t+1): 1


def causal_problems(config: dict[str, Any]) -> list[str]:
    """Why a model config (``BandSplitEnhancer.config``) cannot stream: [] when it can."""
    out = []
    if config["norm"] != "layernorm":
        out.append(
            f"norm={config['norm']} normalises over the whole utterance (norm=layernorm "
            "normalises each frame)"
        )
    if config["mixer"] == "bimamba":
        out.append(
            "mixer=bimamba on the time axis reads the future (its backward block starts at the "
            "end of the utterance; mixer=mamba or lstm is unidirectional)"
        )
    return out


def check_causal(config: dict[str, Any]) -> None:
    """Raise ValueError naming every part of ``config`` that is not causal."""
    problems = causal_problems(config)
    if problems:
        name = config.get("preset", "this model")
        raise ValueError(
            f"{name} is not a causal configuration and cannot stream: " + "; ".join(problems)
        )


def latency_samples(config: dict[str, Any]) -> int:
    """Algorithmic latency in samples: the STFT frame (n_fft) plus the decoder's look-ahead
    (LOOKAHEAD hops). 640 samples (40 ms at 16 kHz) for the 512/128 STFT of every preset."""
    stft = config["stft"]
    return stft["n_fft"] + LOOKAHEAD * stft["hop_length"]


def _full_window(frontend, like: torch.Tensor) -> torch.Tensor:
    """The STFT window (n_fft,) in ``like``'s dtype and device, a shorter one centred with zeros
    as ``torch.stft`` does."""
    win = frontend._window(like)
    pad = (frontend.n_fft - frontend.win_length) // 2
    return nn.functional.pad(win, (pad, frontend.n_fft - frontend.win_length - pad))


class _BandGroups(nn.Module):
    """The model's per-band encoder and decoder as one batched product per group of bands with
    equal shapes (5 groups for bsrnn30 instead of 30 small layers each: at one frame a step, a
    layer's cost is mostly dispatch). The same arithmetic as the model's layers; the weights are
    copied when it is built (make the streamer after loading them).

    ``encode(X complex (B, F, k)) -> (B, K, k, N)``; ``decode((B, K, k, N)) -> complex mask
    (B, F, k, 3)``, as ``model.encoder`` and ``model.decoder``.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        widths = encoder.widths
        starts = np.cumsum([0, *widths])
        hidden = [mlp[1].out_features for mlp in decoder.mlps]
        groups: dict[tuple[int, int], list[int]] = {}
        for b, key in enumerate(zip(widths, hidden, strict=True)):
            groups.setdefault(key, []).append(b)
        self.groups = list(groups.items())
        order = [b for _, bands in self.groups for b in bands]  # bands in group order
        bins = [f for b in order for f in range(starts[b], starts[b + 1])]
        self.register_buffer("band_order", torch.tensor(np.argsort(order)), persistent=False)
        self.register_buffer("bin_order", torch.tensor(np.argsort(bins)), persistent=False)

        def stack(tensors):  # one weight per band of the group, stacked: (G, ...)
            return torch.stack([t.detach() for t in tensors]).clone()

        for g, ((w, _), bands) in enumerate(self.groups):
            enc = [(encoder.norms[b], encoder.projs[b]) for b in bands]
            dec = [decoder.mlps[b] for b in bands]
            idx = [list(range(2 * starts[b], 2 * starts[b] + 2 * w)) for b in bands]
            # each norm's affine folded into the product after it: LN(x) * g + b then @ W + c
            # is LN(x) @ (g W) + (b W + c), one op fewer per group and layer
            enc_w = stack([p.weight.t() for _, p in enc])  # (G, 2w, N)
            enc_g, enc_nb = stack([n.weight for n, _ in enc]), stack([n.bias for n, _ in enc])
            dec_w1 = stack([m[1].weight.t() for m in dec])  # (G, N, H)
            dec_g, dec_nb = stack([m[0].weight for m in dec]), stack([m[0].bias for m in dec])
            buffers = {
                "bands": torch.tensor(bands),
                "idx": torch.tensor(idx),  # (G, 2w): the band's (bin, re/im) values
                "enc_w": enc_g[..., None] * enc_w,  # (G, 2w, N)
                "enc_b": (enc_nb[:, None] @ enc_w) + stack([p.bias for _, p in enc])[:, None],
                "dec_w1": dec_g[..., None] * dec_w1,  # (G, N, H)
                "dec_b1": (dec_nb[:, None] @ dec_w1) + stack([m[1].bias for m in dec])[:, None],
                "dec_w2": stack([m[3].weight.t() for m in dec]),  # (G, H, 12w)
                "dec_b2": stack([m[3].bias for m in dec])[:, None],  # (G, 1, 12w)
            }
            for name, t in buffers.items():
                self.register_buffer(f"g{g}_{name}", t, persistent=False)
        self.eps = (encoder.norms[0].eps, decoder.mlps[0][0].eps)

    def encode(self, spec: torch.Tensor) -> torch.Tensor:
        """spec (B, k, F, 2) real (real, imaginary) -> features (B, K, k, N)."""
        B, k = spec.shape[:2]
        v = spec.reshape(B * k, -1)  # (R, F*2), R = B*k
        out, t = [], self._buffers  # a dict lookup: Module.__getattr__ costs more, 30 times a step
        for g, ((w, _), _) in enumerate(self.groups):
            x = v[:, t[f"g{g}_idx"]].transpose(0, 1)  # (G, R, 2w)
            x = nn.functional.layer_norm(x, (2 * w,), eps=self.eps[0])
            out.append(torch.baddbmm(t[f"g{g}_enc_b"], x, t[f"g{g}_enc_w"]))
        x = torch.cat(out)[self.band_order]  # (K, R, N)
        return x.view(x.shape[0], B, k, -1).transpose(0, 1)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """features (B, K, k, N) -> mask (B, k, F, 3, 2) real: the taps on frames t-1, t, t+1."""
        B, K, k, N = x.shape
        x = x.transpose(0, 1).reshape(K, B * k, N)
        out, t = [], self._buffers
        for g, ((w, _), bands) in enumerate(self.groups):
            h = x[t[f"g{g}_bands"]]  # (G, R, N)
            h = nn.functional.layer_norm(h, (N,), eps=self.eps[1])
            h = torch.baddbmm(t[f"g{g}_dec_b1"], h, t[f"g{g}_dec_w1"]).tanh_()
            h = nn.functional.glu(torch.baddbmm(t[f"g{g}_dec_b2"], h, t[f"g{g}_dec_w2"]))
            out.append(h.transpose(0, 1).reshape(B * k, len(bands) * w, TAPS, 2))
        m = torch.cat(out, dim=1)[:, self.bin_order]  # (R, F, 3, 2) in frequency order
        return m.view(B, k, -1, TAPS, 2)


class _MambaSteps:
    """A Mamba block run on a short sequence from carried states, in few large ops: what a
    stream does every hop (a time pass: K rows of one new frame; a band pass: one row of K
    bands). ``Mamba.step``'s recurrence, with the decays and inputs of every step computed at
    once and one multiply-add per step; ``Mamba.forward``'s tiled scan spends ~6 small ops a
    step on sequences this short. The weights are read when it is built.

    ``(x (R, L, dim), conv (R, d_conv-1, d_inner) | None, ssm (R, d_inner, d_state) | None) ->
    (y (R, L, dim), conv, ssm)``; None: the zero states a sequence starts from. Inference only
    (the states are updated in place; run it under ``torch.inference_mode``).
    """

    def __init__(self, m: nn.Module):
        self.d_conv, self.split = m.d_conv, [m.dt_rank, m.d_state, m.d_state]
        self.w_in, self.w_x, self.w_out = m.in_proj.weight, m.x_proj.weight, m.out_proj.weight
        self.w_dt, self.b_dt, self.D = m.dt_proj.weight, m.dt_proj.bias, m.D
        self.w_conv, self.b_conv = m.conv1d.weight[:, 0, :], m.conv1d.bias  # (d_inner, d_conv)
        # A / ln 2, transposed: (d_state, d_inner)
        self.A2t = (-torch.exp(m.A_log.detach()) * math.log2(math.e)).t().contiguous()

    def __call__(self, x: torch.Tensor, conv=None, ssm=None):
        F_ = nn.functional
        L = x.shape[1]
        xs, z = F_.linear(x, self.w_in).chunk(2, dim=-1)  # (R, L, d_inner)
        if conv is None:
            conv = xs.new_zeros(xs.shape[0], self.d_conv - 1, xs.shape[2])
        xp = torch.cat([conv, xs], dim=1)  # the carried conv inputs first
        # depthwise causal conv: out_t = b + sum_j w_j xp_{t+j}
        xc = F_.silu((xp.unfold(1, self.d_conv, 1) * self.w_conv).sum(-1) + self.b_conv)
        dt, B, C = F_.linear(xc, self.w_x).split(self.split, dim=-1)
        delta = F_.softplus(F_.linear(dt, self.w_dt, self.b_dt))  # (R, L, d_inner)
        # states as (d_state, d_inner), d_inner innermost: every broadcast below runs along
        # contiguous rows (as the fused scan); the carried ssm state is its (d_inner, d_state) view
        decay = torch.exp2(delta[:, :, None] * self.A2t)  # exp(delta A), exp2 the cheaper
        hs = B[..., None] * (delta * xc)[:, :, None]  # the inputs, then in place the states
        h = None if ssm is None else ssm.transpose(1, 2)
        for a, b in zip(decay.unbind(1), hs.unbind(1), strict=True):
            if h is not None:
                b.addcmul_(a, h)
            h = b
        y = (C[:, :, None] @ hs)[:, :, 0]  # C_t . h_t: (R, L, d_inner)
        y = torch.addcmul(y, xc, self.D) * F_.silu(z)
        return F_.linear(y, self.w_out), xp[:, L:], h.transpose(1, 2)


class StreamCore(nn.Module):
    """The model on frames, every state explicit: ``Streamer``'s engine, and the pieces that
    ``bsmamba.stream_export.StreamStep`` exports. Inference only (run it without gradients).

    ``forward(frames (B, k, n_fft), *state) -> (out (B, k, n_fft), *state)``: k new STFT frames
    (raw samples, the window is applied here) in; out holds the windowed inverse FFTs of the
    enhanced frames one behind (the decoder needs frame t+1 to finish frame t): the first call's
    first output frame is frame -1, all zeros. ``finish(*state) -> (B, n_fft)``: the last frame,
    when no frame follows (its t+1 tap reads zeros, as offline). ``init_state(B)``: the state at
    the start, a list of tensors: the previous noisy frame, the partial sum and the look-ahead
    tap of the unfinished frame (each (B, F, 2), real and imaginary), then per time pass its
    mixer's states (Mamba: conv (B*K, d_conv-1, d_inner), ssm (B*K, d_inner, d_state); LSTM:
    h, c (1, B*K, 2N)).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        check_causal(model.config)
        self.model = model
        self.n_fft = model.frontend.n_fft
        like = next(model.parameters()).detach()
        self.register_buffer("window", _full_window(model.frontend, like), persistent=False)
        self.passes = [p for block in model.layout.blocks for p in block]
        self.bands = len(model.encoder.widths)
        # Mamba passes run through _MambaSteps; the LSTMs' own kernels are already whole
        self._fast = [_MambaSteps(p.mixer) if isinstance(p.mixer, Mamba) else None
                      for p in self.passes]  # fmt: skip
        self.band_groups = _BandGroups(model.encoder, model.decoder)

    def init_state(self, batch: int = 1) -> list[torch.Tensor]:
        like = self.window
        spec = like.new_zeros(batch, self.model.frontend.n_bins, 2)
        state = [spec, spec.clone(), spec.clone()]
        for p in self.passes:
            if p.axis == "time":
                state += p.mixer.init_state(batch * self.bands, like.device, like.dtype)
        return state

    def forward(self, frames: torch.Tensor, *state: torch.Tensor):
        k = frames.shape[1]
        X = torch.fft.rfft(frames * self.window, dim=-1)  # (B, k, F)
        x = self.band_groups.encode(torch.view_as_real(X))  # (B, K, k, N): as model.encoder
        x, new = self.mix(x, state[3:])
        M = torch.view_as_complex(self.band_groups.decode(x))  # (B, k, F, 3): t-1, t, t+1
        x_prev, partial, tap = (torch.view_as_complex(s) for s in state[:3])  # (B, F)
        Xp = torch.cat([x_prev[:, None], X], dim=1)  # (B, k + 1, F): frames t0-1 ... t0+k-1
        P = M[..., 0] * Xp[:, :k] + M[..., 1] * X  # (B, k, F): all but the t+1 tap
        # frames t0-1 ... t0+k-2 are finished by the frame after them (same sum order as offline)
        done = torch.cat([partial[:, None], P[:, :-1]], 1)
        done = done + torch.cat([tap[:, None], M[:, :-1, :, 2]], 1) * X
        spec_state = [torch.view_as_real(s).clone() for s in (X[:, -1], P[:, -1], M[:, -1, :, 2])]
        return (self._frames(done), *spec_state, *new)

    def mix(self, x: torch.Tensor, state) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The mixer passes on features (B, K, k, N) with the time passes' carried states (in
        ``init_state``'s order) -> (features, the new states)."""
        B, K, k, N = x.shape
        new, rest = [], list(state)
        for p, fast in zip(self.passes, self._fast, strict=True):
            y = nn.functional.layer_norm(x, (N,), p.norm.weight, p.norm.bias, p.norm.eps)
            if p.axis == "band":  # within each frame: the bands are the sequence
                y = y.transpose(1, 2).reshape(B * k, K, N)
                y = fast(y)[0] if fast else p.mixer(y)
                x = x + y.view(B, k, K, N).transpose(1, 2)
                continue
            y = y.reshape(B * K, k, N)
            n = 2  # Mamba: conv, ssm; LSTM: h, c
            y, *s = fast(y, *rest[:n]) if fast else p.mixer.step(y, *rest[:n])
            rest = rest[n:]
            new += s
            x = x + y.view(B, K, k, N)
        return x, new

    def finish(self, *state: torch.Tensor) -> torch.Tensor:
        """The windowed inverse FFT (B, n_fft) of the last frame: its t+1 tap reads zeros."""
        return self._frames(torch.view_as_complex(state[1])[:, None])[:, 0]

    def _frames(self, spec: torch.Tensor) -> torch.Tensor:
        """complex (B, k, F) -> windowed frames (B, k, n_fft), ready to overlap-add."""
        return torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window


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
