import pytest
import torch
from torch import nn

from bsmamba.norms import UtteranceNorm, build_norm


def test_utterance_norm_is_groupnorm_1_on_the_channels_last_view():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)  # (B, K, T, C)
    ours = UtteranceNorm(8).double()
    ref = nn.GroupNorm(1, 8).double()
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.uniform_(-1, 1)
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    want = ref(x.movedim(-1, 1)).movedim(1, -1)
    torch.testing.assert_close(ours(x), want, rtol=0, atol=1e-12)


def test_groupnorm_uses_the_whole_utterance_and_layernorm_each_frame():
    x = torch.randn(1, 4, 6, requires_grad=True)  # (B, T, C)
    for name, whole in (("groupnorm", True), ("layernorm", False)):
        (g,) = torch.autograd.grad(build_norm(name, 6)(x)[:, 2].pow(2).sum(), x)
        others = g[:, [0, 1, 3]].abs().sum()
        assert (others > 0) == whole, name
    with pytest.raises(ValueError, match="groupnorm, layernorm"):
        build_norm("batchnorm", 6)
