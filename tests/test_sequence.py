import pytest
import torch

from bsmamba.sequence import get_mixer
from bsmamba.sequence.bimamba import BiMamba
from bsmamba.sequence.layout import Layout
from bsmamba.sequence.mamba import Mamba

OPTS = {"d_state": 4, "expand": 2, "d_conv": 4}


def _dependence(module, L=10, t=4, dim=8):
    """Which input steps the output at step t depends on."""
    x = torch.randn(2, L, dim, requires_grad=True)
    (g,) = torch.autograd.grad(module(x)[:, t].sum(), x)
    return g.abs().sum(dim=(0, 2)) > 0  # (L,)


def test_mamba_block_is_causal_and_bimamba_backward_branch_reads_the_future():
    torch.manual_seed(0)
    dep = _dependence(Mamba(8, **OPTS))
    assert dep[:5].all() and not dep[5:].any()
    bi = BiMamba(8, **OPTS)
    assert _dependence(bi).all()
    # the backward block alone: output at t depends on t and after only
    dep_bwd = _dependence(lambda x: bi.bwd(x.flip(1)).flip(1))
    assert not dep_bwd[:4].any() and dep_bwd[4:].all()


def test_mamba_standard_initialisation():
    m = Mamba(64, d_state=12)
    assert m.dt_rank == 4 and m.d_inner == 128
    A = -torch.exp(m.A_log)
    torch.testing.assert_close(A[0].detach(), -torch.arange(1.0, 13.0))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.99 and dt.max() <= 0.1 * 1.01
    # in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj of the Gu & Dao block
    n = sum(p.numel() for p in m.parameters())
    assert n == 64 * 256 + (128 * 4 + 128) + 128 * 28 + (4 * 128 + 128) + 128 * 12 + 128 + 128 * 64


def test_bimamba_merges():
    cat, add = BiMamba(8, merge="concat", **OPTS), BiMamba(8, merge="add", **OPTS)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(cat) - n(add) == 2 * 8 * 8 + 8
    with pytest.raises(ValueError, match="concat, add"):
        BiMamba(8, merge="max")


def test_lstm_mixer_is_unidirectional_over_time_and_bidirectional_across_bands():
    torch.manual_seed(0)
    dep_t = _dependence(get_mixer("lstm", 8, axis="time"))
    assert dep_t[:5].all() and not dep_t[5:].any()
    assert _dependence(get_mixer("lstm", 8, axis="band")).all()
    with pytest.raises(ValueError, match="lstm, mamba, bimamba"):
        get_mixer("rnn", 8)
    with pytest.raises(ValueError, match="time, band"):
        get_mixer("lstm", 8, axis="freq")


@pytest.mark.parametrize("mixer", ["lstm", "mamba", "bimamba"])
def test_intra_layout_never_mixes_bands_and_dual_does(mixer):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 6, 8, requires_grad=True)  # (B, K, T, N)
    for layout, mixes in [("intra", False), ("dual", True)]:
        # per-frame norms: only the mixers move information (the published utterance-level
        # GroupNorm shares its statistics across bands, see test_norms)
        net = Layout(layout, mixer, 8, num_layers=1, norm="layernorm", **OPTS)
        y = net(x)
        assert y.shape == x.shape
        # the last band: a unidirectional band pass sees the bands before it
        (g,) = torch.autograd.grad(y[:, -1].sum(), x)
        assert (g[:, :-1].abs().sum() > 0) == mixes


def test_stacked_layout_is_all_time_passes_then_all_band_passes():
    net = Layout("stacked", "lstm", 8, num_layers=2, **OPTS)
    assert [[p.axis for p in block] for block in net.blocks] == [["time"]] * 2 + [["band"]] * 2
    with pytest.raises(ValueError, match="stacked, dual, intra"):
        Layout("triple", "lstm", 8, num_layers=1)


@pytest.mark.parametrize(
    "mixer, merge",
    [("mamba", "concat"), ("bimamba", "concat"), ("bimamba", "add"), ("lstm", None)],
)
def test_inference_time_major_passes_equal_the_module_path(mixer, merge):
    # without gradients a pass hands its mixer time-major input, and BiMamba folds each
    # out_proj into the merge; with gradients (training) the module path runs: same numbers
    torch.manual_seed(0)
    options = {"merge": merge} if merge else {}
    layout = Layout("dual", mixer, 8, num_layers=1, **options, **OPTS).double()
    x = torch.randn(2, 3, 11, 8, dtype=torch.float64)
    want = layout(x)
    assert want.requires_grad
    with torch.no_grad():
        got = layout(x)
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    # hooks on the merge (MAC counting) see it called: the folded path steps aside
    if mixer == "bimamba" and merge == "concat":
        calls = []
        bi = layout.blocks[0][0].mixer
        handle = bi.proj.register_forward_hook(lambda *a: calls.append(1))
        with torch.no_grad():
            torch.testing.assert_close(layout(x), want.detach(), rtol=1e-12, atol=1e-12)
        handle.remove()
        assert calls == [1]


def test_fast_linear_equals_f_linear_and_keeps_gradients():
    from bsmamba.sequence.fastlinear import linear

    torch.manual_seed(0)
    x, w, b = torch.randn(3, 50, 16), torch.randn(24, 16), torch.randn(24)
    want = torch.nn.functional.linear(x, w, b)
    with torch.no_grad():
        torch.testing.assert_close(linear(x, w, b), want, rtol=1e-5, atol=1e-5)
        xt, half = x.transpose(0, 1), w[:, :8]  # strided input and weight
        torch.testing.assert_close(linear(xt[..., :8], half), xt[..., :8] @ half.T)
    w.requires_grad_(True)
    linear(x, w, b).sum().backward()  # with gradients: F.linear and its backward
    torch.testing.assert_close(w.grad, x.sum((0, 1)).expand(24, 16))


def test_lstm_mixer_runs_a_long_batch_in_chunks_without_gradients():
    from bsmamba.sequence import lstm

    torch.manual_seed(0)
    m = get_mixer("lstm", 8, axis="band")
    x = torch.randn(2 * lstm.CHUNK_ROWS + 3, 5, 8)  # three chunks of 171 rows
    want = m(x)  # with gradients: one call over every row
    with torch.no_grad():
        torch.testing.assert_close(m(x), want.detach(), rtol=1e-6, atol=1e-6)
