import torch

from bsmamba.encoder import BandSplit


def _touched(enc, band, frame):
    spec = torch.randn(2, 9, 5, dtype=torch.complex64, requires_grad=True)
    feats = enc(spec)
    assert feats.shape == (2, 3, 5, 8)
    (g,) = torch.autograd.grad(feats[:, band, frame].sum(), spec)
    return (g.abs() > 0).nonzero()[:, 1:].unique(dim=0).tolist()  # [bin, frame] pairs


def test_band_split_maps_each_band_to_one_feature_from_its_own_bins_only():
    widths = [2, 3, 4]
    # layernorm: band 1 (bins 2..4) at frame 3 depends on exactly those bins at that frame
    assert _touched(BandSplit(widths, 8, "layernorm"), 1, 3) == [[2, 3], [3, 3], [4, 3]]
    # groupnorm (published): on those bins only, but at every frame (utterance statistics)
    want = [[b, t] for b in (2, 3, 4) for t in range(5)]
    assert _touched(BandSplit(widths, 8, "groupnorm"), 1, 3) == want


def test_parameter_count_is_norm_plus_linear_per_band():
    widths, N = [5, 3, 8], 64
    n = sum(p.numel() for p in BandSplit(widths, N).parameters())
    assert n == sum(2 * 2 * w + 2 * w * N + N for w in widths)
