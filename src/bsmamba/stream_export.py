"""``bsmamba export CKPT OUT.onnx --stream``: a causal model as one ONNX graph for live audio.

One call takes one hop of samples and returns one hop of enhanced samples; everything carried
between calls is an explicit input with a matching output (``<name>`` in, ``<name>_next`` out):

    samples (1, hop) float32, last (1,) bool, *states  ->  enhanced (1, hop), *states_next

The states (all zeros at the start of a stream; names and shapes in the file's ``stream``
metadata and in :data:`bsmamba.onnx_engine.STATE_DOC`): ``hops`` (1,) int64, the calls so far;
``buffer`` (1, n_fft - hop) the latest input samples; ``ola`` and ``ola_env`` (1, n_fft - hop)
the overlap-add tail and its summed squared windows; ``spec_prev``, ``spec_partial``,
``spec_tap`` (1, F, 2) the decoder's look-ahead (as ``StreamCore``); then per time pass i its
mixer's states: ``time{i}_conv`` (K, d_conv - 1, d_inner) and ``time{i}_ssm`` (K, d_state,
d_inner) for Mamba (d_inner innermost, unlike ``Mamba.step``), ``time{i}_h`` and ``time{i}_c``
(1, K, 2N) for an LSTM.

Call c (from 0) reads samples [c*hop, (c+1)*hop) and computes STFT frame f = c + 1 -
n_fft/(2 hop) (the frame that ends with this hop; calls before frame 0 leave the states alone),
reflecting the signal at index 0 as ``torch.stft`` does. Its output is the enhanced samples
[(c - D)*hop, (c - D + 1)*hop) with D = n_fft / hop = 4 (zeros before the stream's start): the
first D calls return zeros, then one hop per hop, the same samples at the same time as
:class:`bsmamba.stream.Streamer`. To end a stream (:meth:`bsmamba.onnx_engine.OnnxStreamer.flush`
does this): pad the input to at least n_fft/2 + 1 samples with zeros, continue it by its
reflection about its last sample until frame S // hop (S the padded length) is computed, call
once more with ``last`` true (that frame's look-ahead tap then reads zeros, as offline), and take
the output of that call followed by ``ola_next / max(ola_env_next, 1e-11)``, cut to S.

The STFT and its inverse are matrix products with the window folded in (one frame a call: a
512 x 514 product needs no complex tensors, which do not export). Every recurrence is plain
ops: a Mamba time pass is one step, a band pass's recurrence over the K bands is unrolled (K is
fixed; no ``Scan`` loop), LSTMs are ``LSTM`` nodes.
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from torch import nn

from bsmamba.causal import check_causal, latency_samples
from bsmamba.export_graph import MIN_OPSET, check_opset, set_metadata, softplus, trace
from bsmamba.onnx_engine import FORMAT_VERSION, STREAM_FORMAT
from bsmamba.stream_core import StreamCore, full_window


def check_streamable(model: nn.Module) -> None:
    """Raise ValueError when ``model`` cannot become a streaming graph: not causal (the reasons
    the Streamer gives), or STFT settings the one-frame-a-call graph does not cover."""
    check_causal(model.config)  # with the Streamer's message
    fe = model.frontend
    if fe.n_fft % (2 * fe.hop_length):
        raise ValueError(
            f"export --stream needs n_fft a multiple of 2 * hop_length (one frame a hop); this "
            f"model has n_fft={fe.n_fft}, hop_length={fe.hop_length}"
        )
    window = full_window(fe, torch.zeros(()))
    if window[0] != 0:
        raise ValueError(
            f"export --stream needs a window that starts at 0 (hann or blackman): frame 0 is "
            f"computed before the sample its first tap reflects arrives; this model's window "
            f"{model.config['stft'].get('window')} starts at {float(window[0]):.3g}"
        )


class StreamStep(nn.Module):
    """One hop in, one hop out, every state explicit: what ``export --stream`` writes.

    ``forward(samples (1, hop), last (1,) bool, *state) -> (enhanced (1, hop), *state)`` with
    the states of :meth:`init_state` (module doc). Shares the model's weights (the per-band
    layers as ``StreamCore``'s batched groups); float32.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        check_streamable(model)
        core = StreamCore(model)
        fe = model.frontend
        self.n, self.hop = fe.n_fft, fe.hop_length
        self.lag = self.n // (2 * self.hop) - 1  # frame f = call - lag
        self.delay = self.n // self.hop  # calls before the output reaches sample 0
        self.groups = core.band_groups
        self.passes = nn.ModuleList(core.passes)
        self.K = core.bands
        window = core.window.double()
        n, bins = self.n, fe.n_bins
        angle = 2 * math.pi * torch.outer(torch.arange(n), torch.arange(bins)).double() / n
        # rfft of the windowed frame, (real, imaginary) interleaved per bin: (n, 2F)
        fwd = torch.stack([angle.cos(), -angle.sin()], -1).reshape(n, 2 * bins) * window[:, None]
        # irfft (bins 1..F-2 count twice; the imaginary parts of DC and Nyquist drop out since
        # their sines are 0), then the synthesis window: (2F, n)
        weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
        weight[0] = weight[-1] = 1.0
        inv = torch.stack([angle.t().cos(), -angle.t().sin()], 1) * weight[..., None] / n
        self.register_buffer("dft", fwd.float(), persistent=False)
        self.register_buffer("idft", (inv.reshape(2 * bins, n) * window).float(), persistent=False)
        self.register_buffer("win2", (window**2).float()[None], persistent=False)
        # the decoder's look-ahead (as StreamCore), then per time pass its mixer's zero states
        # (Mamba's ssm as (K, d_state, d_inner): _ssm_terms keeps d_inner innermost)
        self.core_state = core.init_state(1)[:3]
        for p in core.passes:
            if p.axis == "time":
                m = p.mixer
                self.core_state += (
                    [torch.zeros(self.K, m.d_conv - 1, m.d_inner),
                     torch.zeros(self.K, m.d_state, m.d_inner)]
                    if hasattr(m, "A_log") else list(m.init_state(self.K))
                )  # fmt: skip
        self.state_names = ["hops", "buffer", "ola", "ola_env", "spec_prev", "spec_partial",
                            "spec_tap"]  # fmt: skip
        i = 0
        for p in core.passes:
            if p.axis == "time":
                self.state_names += [f"time{i}_{s}" for s in (("conv", "ssm") if
                                     hasattr(p.mixer, "A_log") else ("h", "c"))]  # fmt: skip
                i += 1

    def init_state(self) -> list[torch.Tensor]:
        """The states at the start of a stream: all zeros (``hops`` int64)."""
        tail = torch.zeros(1, self.n - self.hop)
        return [
            torch.zeros(1, dtype=torch.int64),
            tail,
            tail.clone(),
            tail.clone(),
            *(torch.zeros_like(s) for s in self.core_state),
        ]

    def forward(self, samples, last, hops, buffer, ola, env, prev, partial, tap, *mixer):
        n, hop = self.n, self.hop
        raw = torch.cat([buffer, samples], dim=1)  # (1, n): positions [base, base + n)
        f = hops - self.lag  # (1,) the frame this call computes
        base = f * hop - n // 2
        pos = base + torch.arange(n, device=samples.device)
        # torch.stft's reflection at index 0 (frames 0 .. lag); frame 0's first tap reflects a
        # sample not yet in, but the window is 0 there (check_streamable), so any sample will do
        idx = (pos.abs() - base).clamp(max=n - 1)
        frame = torch.gather(raw, 1, idx[None])
        spec = torch.where(last, 0.0, frame @ self.dft).view(1, 1, -1, 2)  # (1, 1, F, 2)
        x = self.groups.encode(spec)  # (1, K, 1, N)
        ok = hops >= self.lag  # frame f >= 0: calls before it leave the model's states alone
        x, new = self._mix(x, mixer, ok)
        M = self.groups.decode(x)[:, 0]  # (1, F, 3, 2)
        X = spec[:, 0]  # (1, F, 2)

        def cmul(a, b):  # complex products on (..., 2) real pairs
            re = a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1]
            im = a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]
            return torch.stack([re, im], -1)

        P = cmul(M[..., 0, :], prev) + cmul(M[..., 1, :], X)  # all but the t+1 tap
        done = partial + cmul(tap, X)  # frame f - 1, finished
        out = done.reshape(1, -1) @ self.idft  # (1, n): windowed frame f - 1
        # frame f - 1 exists from call lag + 1 on (before it, out is 0 and adds no window)
        w2 = self.win2 * (hops > self.lag).float()
        ola = F.pad(ola, (0, hop)) + out
        env = F.pad(env, (0, hop)) + w2
        y = ola[:, :hop] / env[:, :hop].clamp_min(1e-11)
        y = torch.where(hops >= self.delay, y, 0.0)  # samples before 0 are not output
        spec_states = zip((X, P, M[..., 2, :]), (prev, partial, tap), strict=True)
        states = [torch.where(ok, s, old) for s, old in spec_states]
        return (y, hops + 1, raw[:, hop:], ola[:, hop:], env[:, hop:], *states, *new)

    def _mix(self, x, state, ok):
        """``StreamCore.mix`` in ops that export: Mamba through :func:`_mamba_step` (a time
        pass) and :func:`_mamba_bands` (a band pass), LSTMs as LSTM nodes. Where ``ok`` is
        false (before frame 0) the time passes' states stay as they are."""
        _, K, _, N = x.shape
        new, rest = [], list(state)
        for p in self.passes:
            y = F.layer_norm(x, (N,), p.norm.weight, p.norm.bias, p.norm.eps)
            mamba = hasattr(p.mixer, "A_log")
            if p.axis == "band":  # the bands of the one frame are the sequence
                y = _mamba_bands(p.mixer, y.reshape(K, N)) if mamba else p.mixer(y.reshape(1, K, N))
                x = x + y.view(1, K, 1, N)
                continue
            if mamba:
                y, *s = _mamba_step(p.mixer, y.reshape(K, N), *rest[:2], ok)
            else:
                y, *s = p.mixer.step(y.reshape(K, 1, N), *rest[:2])
                s = [torch.where(ok, a, b) for a, b in zip(s, rest[:2], strict=True)]
            rest = rest[2:]
            new += s
            x = x + y.view(1, K, 1, N)
        return x, new


def _mamba_step(m, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor, ok: torch.Tensor):
    """One step of a Mamba block on R rows (a time pass: the K bands of the new frame) from the
    carried states, in ops that export: x (R, dim), conv (R, d_conv - 1, d_inner), ssm (R,
    d_state, d_inner) -> (y (R, dim), conv, ssm). ``Mamba.step``'s arithmetic. Where ``ok``
    (bool (1,)) is false, the states are zero and stay zero: what enters them is zeroed, on
    (R, d_inner) values rather than a choice between the whole old and new states."""
    xs, z = m.in_proj(x).chunk(2, dim=-1)  # (R, d_inner)
    xs = torch.where(ok, xs, 0.0)
    xp = torch.cat([conv, xs[:, None]], dim=1)  # (R, d_conv, d_inner): the carried inputs first
    w = m.conv1d.weight[:, 0, :].t()  # (d_conv, d_inner)
    xc = F.silu((xp * w).sum(1) + m.conv1d.bias)  # the causal depthwise conv's newest output
    decay, inject, C = _ssm_terms(m, xc, ok)  # (R, d_state, d_inner) twice, (R, d_state)
    h = decay * ssm + inject
    y = (C[:, None] @ h)[:, 0]  # C . h: (R, d_inner)
    return _mamba_out(m, y, xc, z), xp[:, 1:], h


def _mamba_bands(m, x: torch.Tensor) -> torch.Tensor:
    """A Mamba block over the K bands of one frame (a band pass), from zero states, in ops that
    export: x (K, dim) -> (K, dim). The recurrence is unrolled (K is fixed): the decays and
    inputs of every step come from one Split each, and a step is one Mul and one Add (about 2K
    nodes a pass; onnxruntime spends a few microseconds a node at these sizes)."""
    K = x.shape[0]
    xs, z = m.in_proj(x).chunk(2, dim=-1)  # (K, d_inner)
    conv = F.conv1d(xs.t()[None], m.conv1d.weight, m.conv1d.bias, padding=m.d_conv - 1,
                    groups=m.d_inner)  # fmt: skip
    xc = F.silu(conv[0, :, :K].t())  # causal: the first K of the zero-padded outputs
    decay, inject, C = _ssm_terms(m, xc)  # (K, d_state, d_inner) twice, (K, d_state)
    h, hs = None, []
    for a, b in zip(decay.split(1), inject.split(1), strict=True):  # (1, d_state, d_inner)
        h = b if h is None else a * h + b
        hs.append(h)
    y = (C[:, None] @ torch.cat(hs))[:, 0]  # C_k . h_k: (K, d_inner)
    return _mamba_out(m, y, xc, z)


def _ssm_terms(m, xc: torch.Tensor, ok: torch.Tensor | None = None):
    """xc (R, d_inner), the conv's output -> the decays exp(delta A) and the inputs delta B x
    (R, d_state, d_inner), d_inner innermost so that onnxruntime's broadcasts run along rows,
    and C (R, d_state); the inputs zero where ``ok`` is false. softplus as
    :func:`bsmamba.export_graph.softplus`."""
    dt, B, C = m.x_proj(xc).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = softplus(m.dt_proj(dt))  # (R, d_inner)
    A = -torch.exp(m.A_log.float()).t()  # (d_state, d_inner)
    u = delta * xc if ok is None else torch.where(ok, delta * xc, 0.0)
    return torch.exp(delta[:, None] * A), B[..., None] * u[:, None], C


def _mamba_out(m, y: torch.Tensor, xc: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The skip, the gate and the output projection: (R, d_inner) -> (R, dim)."""
    return m.out_proj((y + xc * m.D) * F.silu(z))


def export_stream(model: nn.Module, opset: int = MIN_OPSET):
    """``model``'s :class:`StreamStep` as an ``onnx.ModelProto`` (batch 1, one hop a call).

    Raises ValueError, before tracing, for a model that cannot stream (``check_streamable``).
    The metadata carries ``format`` (``bsmamba-stream-step``), the STFT settings, the model
    config and ``stream`` (JSON: hop, delay_calls, latency_samples, the states' names, shapes
    and dtypes, all zero at the start).
    """
    import copy

    from bsmamba.onnx_engine import need

    (onnx, _) = need("onnx", "onnxscript", what="ONNX export")
    check_streamable(model)
    check_opset(onnx, opset)
    step = StreamStep(copy.deepcopy(model).float().eval())
    state = step.init_state()
    state[0] += 5  # trace past the start (the graph has no branches: any value traces alike)
    args = (torch.randn(1, step.hop), torch.zeros(1, dtype=torch.bool), *state)
    names = step.state_names
    proto = trace(
        step,
        args,
        opset,
        input_names=["samples", "last", *names],
        output_names=["enhanced", *(f"{s}_next" for s in names)],
    )
    init = step.init_state()
    stream = {
        "hop": step.hop,
        "delay_calls": step.delay,
        "latency_samples": latency_samples(model.config),
        "states": [
            {"name": s, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
            for s, t in zip(names, init, strict=True)
        ],
        "init": "zeros",
    }
    meta = {
        "format": STREAM_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "stft": json.dumps(model.config["stft"]),
        "model_config": json.dumps(model.config),
        "stream": json.dumps(stream),
    }
    set_metadata(onnx, proto, meta)
    return proto


def check_stream_export(model: nn.Module, proto, seconds: float = 1.0, seed: int = 0) -> float:
    """max |onnxruntime - torch| over ``seconds`` of noise at speech level (std 0.1) with an odd
    length, streamed hop by hop through :class:`bsmamba.onnx_engine.OnnxStreamer` on ``proto``
    and through :class:`bsmamba.stream.Streamer` (float32 model, eval mode)."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from bsmamba.onnx_engine import OnnxStreamer
    from bsmamba.stream import Streamer

    rng = np.random.default_rng(seed)
    wav = (0.1 * rng.standard_normal(int(seconds * model.sample_rate) + 77)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "check.onnx"
        path.write_bytes(proto.SerializeToString())
        outs = []
        for streamer in (OnnxStreamer(path, threads=1), Streamer(model)):
            hop = streamer.hop
            parts = [streamer.process(wav[i : i + hop]) for i in range(0, len(wav), hop)]
            outs.append(np.concatenate([*parts, streamer.flush()]))
    return float(np.abs(outs[0] - outs[1]).max())
