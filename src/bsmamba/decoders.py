"""Per-band mask decoders: features (B, K, T, N) -> a 3-tap complex filter per bin and frame.

Per band of ``w`` bins (as the 16 kHz BSRNN re-implementation):

    norm(N) -> Linear(N -> H) -> Tanh -> Linear(H -> 2 * w*3*2) -> GLU -> (w, 3 taps, re/im)

with the published norm GroupNorm(1, N) over the band's features of the whole utterance
(``bsmamba.norms``). The enhanced bin is ``sum_k M_k[f, t] * X[f, t + k - 1]`` over the frames
t-1, t, t+1; a neighbour beyond either end of the utterance is left out.

``mask_init="random"`` (default) keeps the framework's initialisation (xavier, zero biases: set
by ``model.py`` as the published BSRNN). ``"identity"`` zeroes each band's last Linear and sets
its bias so that the filter is (0, 1, 0):
an untrained model passes its input through. It is an option, not the default: in a full demo
study on demo-v1 it did not put more systems above the noisy input than ``random`` (docs/study.md,
"Earlier runs").

``uniform``: the same hidden width H = 4N for every band.
``adaptive``: H by the band's upper edge: 4N up to 1 kHz, 2N up to 4 kHz, N above. Speech puts
most of its structure (pitch harmonics, first formants) in the low bands, so those keep the
uniform decoder's capacity while the wide high bands, whose second Linear is the costly one
(H * 12 * w weights), get less.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from bsmamba.bands import band_edges_hz
from bsmamba.norms import build_norm

DECODERS = ("uniform", "adaptive")
TAPS = 3  # frames t-1, t, t+1
MASK_INITS = ("identity", "random")

# adaptive rule: (upper band edge in Hz, hidden width as a multiple of N), first match wins
ADAPTIVE_RULE = ((1000.0, 4), (4000.0, 2), (float("inf"), 1))


def hidden_widths(
    name: str, widths: list[int], dim: int, sample_rate: int = 16000, n_fft: int = 512
) -> list[int]:
    """Hidden width of each band's MLP for decoder ``name`` (uniform | adaptive)."""
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; valid decoders: {', '.join(DECODERS)}")
    if name == "uniform":
        return [4 * dim] * len(widths)
    out = []
    for _, hi in band_edges_hz(widths, sample_rate, n_fft):
        out.append(dim * next(m for edge, m in ADAPTIVE_RULE if hi <= edge + 1e-6))
    return out


class _Tanh(nn.Tanh):
    """Tanh; without gradients as 2 sigmoid(2x) - 1 (equal within 2e-7 in float32, 4e-16 in
    float64): torch's CPU tanh ran ~3x slower than that (one thread, (1251, 256) float32:
    0.80 ms against 0.20-0.28 ms, time.thread_time, min of 9); the uniform decoder alone on 10 s
    went from 70 to 51 ms (abl2, one process, alternately, min of 9). Training keeps torch's
    tanh and its one-op backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return torch.tanh(x)
        return torch.sigmoid(x * 2).mul_(2).sub_(1)


class MaskDecoder(nn.Module):
    """features (B, K, T, N) -> complex mask (B, F, T, 3), F = sum(widths)."""

    def __init__(
        self,
        widths: list[int],
        dim: int,
        hidden: list[int],
        mask_init: str = "random",
        norm: str = "groupnorm",
    ):
        super().__init__()
        if mask_init not in MASK_INITS:
            raise ValueError(f"unknown mask_init {mask_init!r}; valid: {', '.join(MASK_INITS)}")
        self.widths = list(widths)
        self.mlps = nn.ModuleList(
            nn.Sequential(
                build_norm(norm, dim),
                nn.Linear(dim, h),
                _Tanh(),
                nn.Linear(h, 2 * w * TAPS * 2),  # x2 for the GLU gate
                nn.GLU(dim=-1),
            )
            for w, h in zip(self.widths, hidden, strict=True)
        )
        self.mask_init = mask_init
        self.reset_mask()

    def reset_mask(self) -> None:
        """Apply ``mask_init="identity"`` (the model calls it after its own initialisation)."""
        if self.mask_init == "identity":
            for w, mlp in zip(self.widths, self.mlps, strict=True):
                _identity_init(mlp[3], w)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        masks = []
        for k, (w, mlp) in enumerate(zip(self.widths, self.mlps, strict=True)):
            m = mlp(feats[:, k])  # (B, T, w*3*2)
            masks.append(rearrange(m, "b t (w k c) -> b w t k c", w=w, k=TAPS, c=2))
        return torch.view_as_complex(torch.cat(masks, dim=1).contiguous())  # (B, F, T, 3)


def _identity_init(last: nn.Linear, width: int) -> None:
    """Make GLU(last(x)) the filter (0, 1, 0) for every bin, whatever x is."""
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()  # gate half: sigmoid(0) = 0.5
        value = last.bias[: width * TAPS * 2].view(width, TAPS, 2)  # "(w k c)" as in forward
        value[:, 1, 0] = 2.0  # centre tap, real part: 2.0 * 0.5 = 1


def build_decoder(
    name: str,
    widths: list[int],
    dim: int,
    sample_rate: int = 16000,
    n_fft: int = 512,
    mask_init: str = "random",
    norm: str = "groupnorm",
) -> MaskDecoder:
    """A ``uniform`` or ``adaptive`` decoder for the band plan ``widths``."""
    hidden = hidden_widths(name, widths, dim, sample_rate, n_fft)
    return MaskDecoder(widths, dim, hidden, mask_init, norm)


def apply_mask(spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """spec complex (B, F, T), mask complex (B, F, T, 3) -> filtered spec (B, F, T)."""
    T = spec.shape[-1]
    # zero frames beyond both ends; complex padding done on the real view
    padded = torch.view_as_complex(
        F.pad(torch.view_as_real(spec), (0, 0, 1, 1)).contiguous()
    )  # (B, F, T + 2)
    return sum(mask[..., k] * padded[..., k : k + T] for k in range(TAPS))
