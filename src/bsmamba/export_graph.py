"""How a model becomes an ONNX graph: torch code that exports, the tracer, and the rewrite of
the Mamba recurrence into an ONNX ``Scan`` (used by :mod:`bsmamba.export` for the offline
graph and by :mod:`bsmamba.stream_export` for the streaming one).

LSTMs become ONNX ``LSTM`` nodes. A Mamba block's recurrence becomes an ONNX ``Scan`` over the
sequence (frames for a time pass, bands for a band pass), so any length runs; the decay
exp(Δ·A) and the state are computed in float32 inside the loop body, one step at a time, so no
(L, batch, d_inner, d_state) tensor is ever made. The torch side of that step is a custom op
(:func:`_ssm_recurrence`) that torch.export keeps whole; the exporter writes it as a
``bsmamba.SsmRecurrence`` node, which :mod:`bsmamba.export_scan` then replaces by the ``Scan``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from bsmamba.decoders import TAPS
from bsmamba.norms import UtteranceNorm
from bsmamba.scan.fused import scan_time_major
from bsmamba.sequence.bimamba import BiMamba
from bsmamba.sequence.layout import _Pass
from bsmamba.sequence.mamba import Mamba

MIN_OPSET = 18  # the lowest that torch.onnx's dynamo exporter writes
DOMAIN = "bsmamba"


def check_opset(onnx, opset: int, flag: str = "opset") -> None:
    """Raise ValueError unless ``opset`` lies in MIN_OPSET .. the newest this ``onnx`` knows."""
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"{flag} {opset}: out of range, valid {MIN_OPSET}..{newest} (this onnx)")


def trace(module: nn.Module, args: tuple, opset: int, **kwargs):
    """``torch.onnx.export(module, args, dynamo=True, ...)`` without the exporter's chatter
    ("no torchvision", deprecation warnings); kwargs go to the exporter. -> ``onnx.ModelProto``."""
    import logging
    import warnings

    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, args, opset_version=opset, dynamo=True, verbose=False, **kwargs
            )
    finally:
        quiet.setLevel(level)
    return program.model_proto


def set_metadata(onnx, proto, meta: dict[str, str]) -> None:
    """Replace ``proto``'s metadata by ``meta`` and check the model."""
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto)


# ---- the recurrence as one op -------------------------------------------------------------------


@torch.library.custom_op("bsmamba::ssm_recurrence", mutates_args=())
def _ssm_recurrence(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """y_t = C_t . h_t, h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, h_{-1} = 0.

    Time-major: u, delta (L, b, d); A (d, n); B, C (L, b, n) -> y (L, b, d). Delta arrives with
    its bias and softplus applied; D u and the gate are added by the caller.
    """
    return scan_time_major(u, delta, B, C, A)[0]


@_ssm_recurrence.register_fake
def _(u, delta, A, B, C):
    return torch.empty_like(u)


class _ExportPass(nn.Module):
    """A layout pass (:class:`bsmamba.sequence.layout._Pass`) that hands its mixer time-major
    input: (L, batch, N) straight from (B, K, T, N), one transpose in and one out.

    The module path's "(b k) t n" / "(b t) k n" batches, with every mixer transposing to
    time-major inside (the Mamba scan and the ONNX LSTM both want it), cost onnxruntime a
    transpose on each side of each tensor; a band pass, (K, B*T, N), is even a plain reshape.
    Mamba and BiMamba mixers only.
    """

    def __init__(self, p: nn.Module):
        super().__init__()
        self.axis, self.norm = p.axis, _exportable(p.norm)
        self.mixer = _time_major(p.mixer, taps=p.axis == "band")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        y = self.norm(x)
        if self.axis == "time":
            out = self.mixer(rearrange(y, "b k t n -> t (b k) n"))
            return x + rearrange(out, "t (b k) n -> b k t n", b=B)
        out = self.mixer(rearrange(y, "b k t n -> k (b t) n"))
        return x + rearrange(out, "k (b t) n -> b k t n", b=B)


def _time_major(mixer: nn.Module, taps: bool) -> nn.Module:
    """The export form of a Mamba or BiMamba ``mixer`` on time-major (L, batch, dim) input."""
    return (_ExportMamba if isinstance(mixer, Mamba) else _ExportBiMamba)(mixer, taps)


class _ExportMamba(nn.Module):
    """A Mamba block's forward on (L, batch, dim) with its recurrence as :func:`_ssm_recurrence`
    (same weights). ``taps``: the causal depthwise conv as d_conv shifted multiply-adds instead
    of a ``Conv`` node between two transposes (onnxruntime, one thread, ad-hoc timing: 24 ms
    against 31 ms at (L 30, batch 1251, d_inner 128), 22 against 15 ms at (1251, 30, 128))."""

    def __init__(self, block: Mamba, taps: bool = False):
        super().__init__()
        self.block, self.taps = block, taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.out_proj(self.gated(x))

    def gated(self, x: torch.Tensor) -> torch.Tensor:  # (L, b, dim) -> (L, b, d_inner)
        m, L = self.block, x.shape[0]
        # two half-width products: xs and z come out whole, with no Split copying them
        xs, z = (F.linear(x, w) for w in m.in_proj.weight.split(m.d_inner))
        if self.taps:  # out_t = bias + sum_j w_j xs_{t - (d_conv - 1) + j}
            xp = F.pad(xs, (0, 0, 0, 0, m.d_conv - 1, 0))
            w = m.conv1d.weight[:, 0, :]  # (d_inner, d_conv)
            xc = m.conv1d.bias + sum(xp[j : j + L] * w[:, j] for j in range(m.d_conv))
        else:
            xc = m.conv1d(xs.permute(1, 2, 0))[..., :L].permute(2, 0, 1)
        xc = F.silu(xc)
        dt, Bm, Cm = m.x_proj(xc).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
        delta = softplus(m.dt_proj(dt))
        y = _ssm_recurrence(xc, delta, -torch.exp(m.A_log.float()), Bm, Cm)
        return (y + xc * m.D) * F.silu(z)


class _ExportBiMamba(nn.Module):
    """:class:`bsmamba.sequence.bimamba.BiMamba` on (L, batch, dim), each direction's out_proj
    folded into the merge: proj(cat(W_f g_f, W_b g_b)) = (P_f W_f) g_f + (P_b W_b) g_b + bias,
    two (d_inner -> dim) products instead of three and no concatenation."""

    def __init__(self, mixer: nn.Module, taps: bool = False):
        super().__init__()
        self.fwd, self.bwd = _ExportMamba(mixer.fwd, taps), _ExportMamba(mixer.bwd, taps)
        with torch.no_grad():
            wf, wb = mixer.fwd.out_proj.weight, mixer.bwd.out_proj.weight
            if mixer.proj is None:  # merge "add"
                bias = None
            else:
                pf, pb = mixer.proj.weight.chunk(2, dim=1)
                wf, wb, bias = pf @ wf, pb @ wb, mixer.proj.bias
        self.register_buffer("w_fwd", wf.detach().clone(), persistent=False)
        self.register_buffer("w_bwd", wb.detach().clone(), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y_fwd = F.linear(self.fwd.gated(x), self.w_fwd, self.bias)
        return y_fwd + F.linear(self.bwd.gated(x.flip(0)), self.w_bwd).flip(0)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus in a form whose ONNX ops onnxruntime runs fast (its Softplus node is ~3x
    slower); equal to ``F.softplus`` within float32 rounding for every x.

    log(1 + e^x) > x, so the max only acts where the clamp does (x > 30, where softplus(x) = x
    in float32), and e^x never overflows. Five ONNX ops (Min, Exp, Add, Log, Max) against the
    seven of relu(x) + log1p(exp(-|x|)): onnxruntime, one thread, (30, 1251, 128) float32
    13.3 against 15.6 ms (ad-hoc timing, min of 9, not kept).
    """
    return torch.maximum(torch.log1p(torch.exp(x.clamp(max=30.0))), x)


# ---- the spectral core ---------------------------------------------------------------------------


class SpectralCore(nn.Module):
    """``model``'s encoder, mixers and decoder on a real-valued spectrum (what is exported).

    forward(spec (B, F, T, 2)) -> enhanced (B, F, T, 2): ``view_as_real`` of
    ``apply_mask(spec, decoder(layout(encoder(spec))))`` written without complex tensors.
    Shares ``model``'s weights; layout passes run through :class:`_ExportPass` (mixers on
    time-major input), utterance norms through :class:`_ExportNorm`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder, self.decoder = _exportable(model.encoder), _exportable(model.decoder)
        self.layout = _exportable(model.layout)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        enc, dec = self.encoder, self.decoder
        feats = torch.stack(
            [
                proj(norm(rearrange(band, "b w t c -> b t (w c)")))
                for band, norm, proj in zip(
                    spec.split(enc.widths, dim=1), enc.norms, enc.projs, strict=True
                )
            ],
            dim=1,
        )  # (B, K, T, N)
        feats = self.layout(feats)
        # the mask with its (tap, re/im) axes first: each tap's part is then one contiguous
        # block, where picking it off the last axes was a strided Gather (12 a forward,
        # 2.4 ms each at 10 s in onnxruntime)
        mask = torch.cat(
            [
                rearrange(mlp(feats[:, i]), "b t (w k c) -> k c b w t", w=w, k=TAPS, c=2)
                for i, (w, mlp) in enumerate(zip(dec.widths, dec.mlps, strict=True))
            ],
            dim=3,
        )  # (3, 2, B, F, T)
        T = spec.shape[2]
        # the real and imaginary parts, each with a zero frame beyond either end
        xr, xi = (F.pad(x, (1, 1)) for x in rearrange(spec, "b f t c -> c b f t"))
        re = im = 0
        for k in range(TAPS):  # complex multiply-accumulate of frames t-1, t, t+1
            sr, si = xr[..., k : k + T], xi[..., k : k + T]
            mr, mi = mask[k, 0], mask[k, 1]
            re = re + mr * sr - mi * si
            im = im + mr * si + mi * sr
        return torch.stack([re, im], dim=-1)


class _ExportNorm(nn.Module):
    """:class:`bsmamba.norms.UtteranceNorm` with its statistics reduced one axis at a time.

    One LayerNormalization node over an utterance's (K, T, N) values sums ~10^6 floats in
    onnxruntime with a float32 accumulator: errors of ~1e-3 on the normalised values of a
    full-size model (docs/inference.md). A mean of means (equal in exact arithmetic) keeps every
    partial sum short.
    """

    def __init__(self, norm: UtteranceNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x
        for d in range(x.dim() - 1, 0, -1):
            mean = mean.mean(d, keepdim=True)
        centred = x - mean
        var = centred * centred
        for d in range(x.dim() - 1, 0, -1):
            var = var.mean(d, keepdim=True)
        return centred * torch.rsqrt(var + self.norm.eps) * self.norm.weight + self.norm.bias


def _exportable(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module``'s tree with export versions of layout passes (and their
    mixers) and UtteranceNorm."""
    import copy

    # LSTM passes stay as they are: the exporter bakes the traced length into the reshapes
    # of a time-major LSTM's output (onnxruntime then refuses any other length)
    if isinstance(module, _Pass) and isinstance(module.mixer, (Mamba, BiMamba)):
        return _ExportPass(module)
    if isinstance(module, UtteranceNorm):
        return _ExportNorm(module)
    out = copy.copy(module)
    out._modules = {k: _exportable(v) for k, v in module._modules.items()}
    return out
