"""BandSplitEnhancer: the one model class every preset builds, in the published BSRNN framework.

wav (B, S) --STFT--> (B, F, T) --BandSplit--> (B, K, T, N)
  --Layout of mixer passes--> (B, K, T, N) --MaskDecoder--> 3-tap complex mask (B, F, T, 3)
  --filter the noisy STFT--> (B, F, T) --iSTFT--> enhanced wav (B, S)

As the 16 kHz BSRNN re-implementation: no level normalisation of the waveform (the utterance-level
GroupNorms of encoder, passes and decoder make the mask independent of the input level), and its
initialisation: xavier-uniform Linear and LSTM input weights, orthogonal LSTM recurrent weights,
zero biases. Mamba blocks keep Mamba's own initialisation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from bsmamba.bands import band_widths
from bsmamba.config import ModelConfig, StftConfig
from bsmamba.decoders import apply_mask, build_decoder
from bsmamba.encoder import BandSplit
from bsmamba.frontend import Frontend
from bsmamba.sequence.layout import Layout

_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig))
_STFT_KEYS = tuple(f.name for f in dataclasses.fields(StftConfig))


def resolve_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Complete constructor kwargs with ``ModelConfig`` defaults; unknown keys are errors."""
    unknown = set(kwargs) - set(_KEYS)
    if unknown:
        raise ValueError(f"unknown model argument(s) {sorted(unknown)}; valid: {', '.join(_KEYS)}")
    out = dataclasses.asdict(ModelConfig())
    stft = kwargs.get("stft") or {}
    if dataclasses.is_dataclass(stft):
        stft = dataclasses.asdict(stft)
    stft = dict(stft)
    bad = set(stft) - set(_STFT_KEYS)
    if bad:
        raise ValueError(f"unknown stft argument(s) {sorted(bad)}; valid: {', '.join(_STFT_KEYS)}")
    out.update({k: v for k, v in kwargs.items() if k != "stft"})
    out["stft"] = {**out["stft"], **stft}
    for key, low in (("dim", 1), ("num_layers", 1), ("d_state", 1), ("d_conv", 1), ("expand", 1),
                     ("dt_rank", 0)):  # fmt: skip
        if not isinstance(out[key], int) or out[key] < low:
            raise ValueError(f"model.{key} must be an integer >= {low}, got {out[key]!r}")
    return out


class BandSplitEnhancer(nn.Module):
    """Band-split speech enhancer; takes exactly the keys of ``config.ModelConfig``.

    ``forward(wav (B, S)) -> (B, S)``: enhanced waveform, any length S >= 1.
    ``forward_spectral(wav (B, S)) -> est complex (B, F, T)``: the enhanced spectrum, to compare
    with ``frontend.stft(clean)``.
    """

    def __init__(self, **kwargs):
        super().__init__()
        cfg = resolve_kwargs(kwargs)
        self._config = cfg
        self.frontend = Frontend(**cfg["stft"])
        widths = band_widths(cfg["band_plan"], self.frontend.n_bins)
        self.encoder = BandSplit(widths, cfg["dim"], cfg["norm"])
        self.layout = Layout(
            cfg["layout"],
            cfg["mixer"],
            cfg["dim"],
            cfg["num_layers"],
            norm=cfg["norm"],
            checkpointing=cfg["checkpointing"],
            d_state=cfg["d_state"],
            d_conv=cfg["d_conv"],
            expand=cfg["expand"],
            dt_rank=cfg["dt_rank"],
            scan_backend=cfg["scan_backend"],
            merge=cfg["merge"],
        )
        self.decoder = build_decoder(
            cfg["decoder"],
            widths,
            cfg["dim"],
            cfg["stft"]["sample_rate"],
            cfg["stft"]["n_fft"],
            cfg["mask_init"],
            cfg["norm"],
        )
        _published_init(self)
        self.decoder.reset_mask()

    @property
    def config(self) -> dict[str, Any]:
        """The resolved constructor kwargs as a plain, JSON-able dict (what checkpoints embed)."""
        return {**self._config, "stft": dict(self._config["stft"])}

    @property
    def checkpointing(self) -> bool:
        return self.layout.checkpointing

    @checkpointing.setter
    def checkpointing(self, on: bool) -> None:
        self.layout.checkpointing = bool(on)
        self._config["checkpointing"] = bool(on)

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    def forward_spectral(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, S) -> enhanced spectrum complex (B, F, T)."""
        if wav.dim() != 2:
            raise ValueError(
                f"expected a waveform batch (B, samples), got shape {tuple(wav.shape)}"
            )
        spec = self.frontend.stft(wav)  # (B, F, T)
        mask = self.decoder(self.layout(self.encoder(spec)))  # (B, F, T, 3)
        return apply_mask(spec, mask)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, S) -> enhanced wav (B, S)."""
        return self.frontend.istft(self.forward_spectral(wav), wav.shape[-1])


def _published_init(model: nn.Module) -> None:
    """The published BSRNN initialisation on every Linear and LSTM outside the Mamba blocks."""
    from bsmamba.sequence.mamba import Mamba

    own = {id(m) for block in model.modules() if isinstance(block, Mamba) for m in block.modules()}
    for m in model.modules():
        if id(m) in own:
            continue
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LSTM):
            for name, p in m.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(p)
                else:  # bias_ih, bias_hh
                    nn.init.zeros_(p)


def build_model(preset: str = "abl3", **overrides) -> BandSplitEnhancer:
    """``BandSplitEnhancer`` from a preset (``bsmamba.presets.PRESETS``) plus keyword overrides."""
    from bsmamba.presets import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return BandSplitEnhancer(**{**PRESETS[preset], **overrides, "preset": preset})
