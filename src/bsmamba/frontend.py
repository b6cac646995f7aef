"""STFT front end: waveform <-> complex spectrogram, an exact pair (iSTFT(STFT(x)) == x).

As ``torch.stft``'s defaults (and the published BSRNN): frames centred, the signal reflected at
both ends. Reflection needs more than n_fft // 2 samples, so a shorter input is first extended
with zeros to that length; the inverse trims back to the requested length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_WINDOWS = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
}


class Frontend(nn.Module):
    """STFT / iSTFT with the settings of ``config.StftConfig``.

    ``stft(wav (B, S)) -> complex (B, F, T)`` with F = n_fft // 2 + 1 and T = S // hop + 1;
    ``istft(spec (B, F, T), length) -> (B, length)``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop_length: int = 128,
        win_length: int = 512,
        window: str = "hann",
    ):
        super().__init__()
        if window not in _WINDOWS:
            raise ValueError(f"unknown window {window!r}; valid windows: {', '.join(_WINDOWS)}")
        if win_length > n_fft or hop_length > win_length or min(hop_length, n_fft) < 1:
            raise ValueError(
                f"stft needs 1 <= hop_length <= win_length <= n_fft, got hop_length={hop_length}, "
                f"win_length={win_length}, n_fft={n_fft}"
            )
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.win_length = win_length
        self._window_fn = _WINDOWS[window]

    def _window(self, like: torch.Tensor) -> torch.Tensor:
        """The window (win_length,) made in ``like``'s dtype and device (float64 stays exact)."""
        return self._window_fn(self.win_length, dtype=like.dtype, device=like.device)

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, S) real -> complex (B, F, T), T = max(S, n_fft // 2 + 1) // hop + 1."""
        short = self.n_fft // 2 + 1 - wav.shape[-1]
        if short > 0:  # reflect padding needs S > n_fft // 2
            wav = F.pad(wav, (0, short))
        return torch.stft(
            wav,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self._window(wav),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """complex spectrogram (B, F, T) -> wav (B, length).

        Windowed overlap-add divided by the summed squared window (what ``torch.istft`` does),
        written out so that it also runs on meta and fake tensors (memory prediction):
        ``torch.istft`` checks the window envelope on data.
        """
        B, _, T = spec.shape
        n_fft, hop = self.n_fft, self.hop_length
        pad = (n_fft - self.win_length) // 2  # torch.stft centres a short window in n_fft
        win = F.pad(self._window(spec.real), (pad, n_fft - self.win_length - pad))
        frames = torch.fft.irfft(spec, n=n_fft, dim=1) * win[:, None]  # (B, n_fft, T)
        total = n_fft + hop * (T - 1)
        fold = dict(output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop))
        wav = F.fold(frames, **fold).reshape(B, total)
        env = F.fold((win**2)[None, :, None].expand(1, n_fft, T), **fold).reshape(total)
        start = n_fft // 2  # undo the centring pad
        wav = wav[:, start : start + length] / env[start : start + length].clamp_min(1e-11)
        return F.pad(wav, (0, length - wav.shape[-1]))
