"""The `bsrnn` preset is the published 16 kHz BSRNN, proven in float64.

``_Published`` below is an independent statement of the re-implementation's forward pass, written
from its description (shared REFERENCE, section BSRNN: the repository's module.py), with its own
(B, N, T, K) layout, channels-first GroupNorms and per-band loops. The package's weights are copied
into it by position and both must give the same enhanced spectrum to 1e-10.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bsmamba import build_model
from bsmamba.bands import BAND_PLANS

BANDS31 = [2] + [3] * 10 + [8] * 12 + [16] * 7 + [17]  # written out again, not imported


class _Published(nn.Module):
    """complex spectrum (B, 257, T) -> enhanced complex spectrum (B, 257, T)."""

    def __init__(self, bands: list[int], n: int = 64, layers: int = 5):
        super().__init__()
        self.bands, self.layers = bands, layers
        self.split_norm = nn.ModuleList(nn.GroupNorm(1, 2 * w) for w in bands)
        self.split_fc = nn.ModuleList(nn.Linear(2 * w, n) for w in bands)
        self.norm_t = nn.ModuleList(nn.GroupNorm(1, n) for _ in range(layers))
        self.lstm_t = nn.ModuleList(nn.LSTM(n, 2 * n, batch_first=True) for _ in range(layers))
        self.fc_t = nn.ModuleList(nn.Linear(2 * n, n) for _ in range(layers))
        self.norm_k = nn.ModuleList(nn.GroupNorm(1, n) for _ in range(layers))
        self.lstm_k = nn.ModuleList(
            nn.LSTM(n, 2 * n, batch_first=True, bidirectional=True) for _ in range(layers)
        )
        self.fc_k = nn.ModuleList(nn.Linear(4 * n, n) for _ in range(layers))
        self.dec_norm = nn.ModuleList(nn.GroupNorm(1, n) for _ in bands)
        self.dec_fc1 = nn.ModuleList(nn.Linear(n, 4 * n) for _ in bands)
        self.dec_fc2 = nn.ModuleList(nn.Linear(4 * n, 12 * w) for w in bands)

    def forward(self, spec):
        x = torch.view_as_real(spec)  # (B, F, T, 2)
        B, _, T, _ = x.shape
        # band split: per band (B, T, w*2) in (bin, re/im) order; GroupNorm over (2w, T)
        z, lo = [], 0
        for w, norm, fc in zip(self.bands, self.split_norm, self.split_fc, strict=True):
            band = x[:, lo : lo + w].transpose(1, 2).reshape(B, T, 2 * w)
            z.append(fc(norm(band.transpose(1, 2)).transpose(1, 2)))  # (B, T, N)
            lo += w
        z = torch.stack(z, dim=-1).transpose(1, 2)  # (B, N, T, K)
        N, K = z.shape[1], z.shape[3]
        for i in range(self.layers):  # all time layers first ...
            out = self.norm_t[i](z).permute(0, 3, 2, 1).reshape(B * K, T, N)
            out = self.fc_t[i](self.lstm_t[i](out)[0])
            z = z + out.reshape(B, K, T, N).permute(0, 3, 2, 1)
        for i in range(self.layers):  # ... then all band layers
            out = self.norm_k[i](z).permute(0, 2, 3, 1).reshape(B * T, K, N)
            out = self.fc_k[i](self.lstm_k[i](out)[0])
            z = z + out.reshape(B, T, K, N).permute(0, 3, 1, 2)
        # mask decoder: per band GroupNorm over (N, T), MLP, GLU -> (w, 3 taps, re/im)
        masks = []
        for k, w in enumerate(self.bands):
            h = self.dec_norm[k](z[..., k]).transpose(1, 2)  # (B, T, N)
            h = F.glu(self.dec_fc2[k](torch.tanh(self.dec_fc1[k](h))), dim=-1)
            masks.append(h.reshape(B, T, w, 3, 2))
        m = torch.view_as_complex(torch.cat(masks, dim=2).transpose(1, 2).contiguous())
        # 3-tap filter over frames t-1, t, t+1; the missing neighbour at each edge left out
        s = m[:, :, 1:-1, 0] * spec[:, :, :-2] + m[:, :, 1:-1, 1] * spec[:, :, 1:-1]
        s = s + m[:, :, 1:-1, 2] * spec[:, :, 2:]
        first = m[:, :, 0, 1] * spec[:, :, 0] + m[:, :, 0, 2] * spec[:, :, 1]
        last = m[:, :, -1, 0] * spec[:, :, -2] + m[:, :, -1, 1] * spec[:, :, -1]
        return torch.cat([first[:, :, None], s, last[:, :, None]], dim=2)


def _copy_weights(ours, ref: _Published) -> None:
    """Copy the package model's weights into the statement, module by module, in order."""
    pairs = [(ours.encoder.norms[k], ref.split_norm[k]) for k in range(len(ref.bands))]
    pairs += [(ours.encoder.projs[k], ref.split_fc[k]) for k in range(len(ref.bands))]
    L = ref.layers
    time, band = list(ours.layout.blocks)[:L], list(ours.layout.blocks)[L:]
    assert len(band) == L and all(len(b) == 1 for b in time + band)  # stacked: one pass a block
    for i in range(L):
        (t,), (k,) = time[i], band[i]
        assert (t.axis, k.axis) == ("time", "band")
        pairs += [
            (t.norm, ref.norm_t[i]),
            (t.mixer.lstm, ref.lstm_t[i]),
            (t.mixer.proj, ref.fc_t[i]),
        ]
        pairs += [
            (k.norm, ref.norm_k[i]),
            (k.mixer.lstm, ref.lstm_k[i]),
            (k.mixer.proj, ref.fc_k[i]),
        ]
    for k, mlp in enumerate(ours.decoder.mlps):
        pairs += [(mlp[0], ref.dec_norm[k]), (mlp[1], ref.dec_fc1[k]), (mlp[3], ref.dec_fc2[k])]
    with torch.no_grad():
        for src, dst in pairs:
            for (name, a), (name_b, b) in zip(
                src.named_parameters(), dst.named_parameters(), strict=True
            ):
                assert name == name_b and a.shape == b.shape, (name, name_b)
                b.copy_(a)
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters())


@pytest.mark.parametrize("layers", [1, 3, 5])
@pytest.mark.parametrize("length", [4000, 7777])
def test_bsrnn_equals_the_published_forward_pass_in_float64(layers, length):
    torch.manual_seed(layers)
    ours = build_model("bsrnn", band_plan="bsrnn31", num_layers=layers).double().eval()
    ref = _Published(BANDS31, 64, layers).double().eval()
    _copy_weights(ours, ref)
    wav = torch.randn(2, length, dtype=torch.float64)
    spec = torch.stft(
        wav,
        512,
        128,
        window=torch.hann_window(512, dtype=torch.float64),
        onesided=True,
        return_complex=True,
    )  # fmt: skip  (torch's defaults)
    with torch.no_grad():
        want = ref(spec)
        got = ours.forward_spectral(wav)
        wav_out = ours(wav)
    assert got.shape == want.shape == spec.shape
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-10
    istft = torch.istft(want, 512, 128, window=torch.hann_window(512, dtype=torch.float64),
                        length=length)  # fmt: skip
    assert float((wav_out - istft).abs().max() / istft.abs().max()) <= 1e-10


def test_published_sizes_and_initialisation():
    assert BAND_PLANS["bsrnn31"] == BANDS31
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model("bsrnn", band_plan="bsrnn31", num_layers=5)) == 2_963_024
    assert count(build_model("bsrnn", band_plan="bsrnn31", num_layers=3)) == 2_317_136
    assert count(_Published(BANDS31, 64, 5)) == 2_963_024
    assert count(build_model("bsrnn", band_plan="bsrnn31", dim=128, num_layers=6)) == 11_417_488
    torch.manual_seed(0)
    m = build_model("bsrnn")
    lstm = m.layout.blocks[0][0].mixer.lstm
    eye = torch.eye(lstm.weight_hh_l0.shape[1])
    # orthogonal recurrent weights (4H x H: orthonormal columns), zero biases everywhere
    torch.testing.assert_close(lstm.weight_hh_l0.T @ lstm.weight_hh_l0, eye, atol=1e-5, rtol=0)
    biases = [p for n, p in m.named_parameters() if n.endswith("bias") and "norm" not in n]
    assert biases and all(float(b.detach().abs().max()) == 0.0 for b in biases)
    # xavier-uniform: every Linear weight within +-sqrt(6 / (fan_in + fan_out)), and not tiny
    for lin in [m.encoder.projs[0], m.decoder.mlps[0][1], lstm]:
        w = (lin.weight if isinstance(lin, nn.Linear) else lin.weight_ih_l0).detach()
        bound = (6 / sum(w.shape)) ** 0.5
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound
