import pytest
import torch

from bsmamba.frontend import Frontend


@pytest.mark.parametrize("length", [1, 127, 4000, 16000 + 37])
def test_istft_of_stft_reproduces_the_input(length):
    fe = Frontend()
    wav = torch.randn(2, length, dtype=torch.float64)
    spec = fe.stft(wav)
    assert spec.shape == (2, 257, length // 128 + 1) and spec.is_complex()
    torch.testing.assert_close(fe.istft(spec, length), wav, rtol=0, atol=1e-12)


def test_settings_are_configurable_and_checked():
    fe = Frontend(n_fft=256, hop_length=64, win_length=256, window="hamming")
    assert fe.stft(torch.randn(1, 1000)).shape[1] == 129
    with pytest.raises(ValueError, match="hann, hamming, blackman"):
        Frontend(window="kaiser")
    with pytest.raises(ValueError, match="hop_length"):
        Frontend(hop_length=1024)


def test_window_is_not_saved_in_checkpoints():
    assert "window" not in Frontend().state_dict()
