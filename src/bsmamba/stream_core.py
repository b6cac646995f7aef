"""The model on STFT frames with every state explicit: what a stream runs each hop.

``StreamCore`` takes k new frames and the carried states and returns the windowed enhanced
frames (one behind: the decoder's look-ahead) and the new states; :class:`bsmamba.stream.Streamer`
adds the framing and the overlap-add, :mod:`bsmamba.stream_export` puts it in one ONNX graph.
At one frame a step, a layer's cost is mostly dispatch, so the per-band layers run as a few
batched products (``_BandGroups``) and Mamba runs its recurrence directly (``_MambaSteps``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bsmamba.causal import check_causal
from bsmamba.decoders import TAPS
from bsmamba.sequence.mamba import Mamba


def full_window(frontend, like: torch.Tensor) -> torch.Tensor:
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
        self.register_buffer("window", full_window(model.frontend, like), persistent=False)
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
