import pytest
import torch

from bsmamba.frontend import Frontend


@pytest.mark.parametrize("length", [1, 127, 4000, 16000 + 37])
def test_istft_of_stft_reproduces_the_input(length):
    fe = Frontend()
    wav = torch.randn(2, length, dtype=torch.float64)
    spec = fe.stft(wav)
    # inputs too short to reflect are first extended with zeros to n_fft // 2 + 1 samples
    assert spec.shape == (2, 257, max(length, 257) // 128 + 1) and spec.is_complex()
    torch.testing.assert_close(fe.istft(spec, length), wav, rtol=0, atol=1e-12)


def test_stft_is_torchs_default_centre_reflect_stft_and_istft_inverts_it():
    wav = torch.randn(2, 5000, dtype=torch.float64)
    win = torch.hann_window(512, dtype=torch.float64)
    want = torch.stft(wav, 512, 128, window=win, return_complex=True)  # center, reflect
    torch.testing.assert_close(Frontend().stft(wav), want, rtol=0, atol=1e-12)
    back = torch.istft(want, 512, 128, window=win, length=5000)
    torch.testing.assert_close(Frontend().istft(want, 5000), back, rtol=0, atol=1e-12)


def test_settings_are_configurable_and_checked():
    fe = Frontend(n_fft=256, hop_length=64, win_length=256, window="hamming")
    assert fe.stft(torch.randn(1, 1000)).shape[1] == 129
    with pytest.raises(ValueError, match="hann, hamming, blackman"):
        Frontend(window="kaiser")
    with pytest.raises(ValueError, match="hop_length"):
        Frontend(hop_length=1024)


def test_window_is_not_saved_in_checkpoints():
    assert "window" not in Frontend().state_dict()
