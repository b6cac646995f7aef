"""Which model configurations can stream, and at what algorithmic latency.

A configuration is causal when no part reads more than a bounded stretch of the future:

- every time pass runs a unidirectional mixer (``lstm`` or ``mamba``); ``bimamba``'s backward
  block starts at the end of the utterance. Band passes run inside one frame, so a band mixer
  may be bidirectional (BSRNN's BiLSTM across bands stays causal in time);
- ``norm=layernorm`` (per frame); ``groupnorm`` takes its statistics over the whole utterance.

Latency (``latency_samples``): frame t of the centred STFT spans samples [t*hop - n_fft/2,
t*hop + n_fft/2), and the decoder's 3-tap filter needs the noisy frame t+1 to finish frame t.
An output sample is final once every frame overlapping it is, so the output of sample n is
available once sample n + n_fft + hop - 1 has arrived (n at the start of a hop): n_fft + hop
samples, 512 + 128 = 640 samples = 40 ms for every preset (the 32 ms window plus one 8 ms
frame of look-ahead). Compute time comes on top.
"""

from __future__ import annotations

from typing import Any

from bsmamba.decoders import TAPS

LOOKAHEAD = TAPS // 2  # frames of look-ahead of the decoder's filter (t-1, t, t+1): 1


def causal_problems(config: dict[str, Any]) -> list[str]:
    """Why a model config (``BandSplitEnhancer.config``) cannot stream: [] when it can."""
    out = []
    if config["norm"] != "layernorm":
        out.append(
            f"norm={config['norm']} normalises over the whole utterance (norm=layernorm "
            "normalises each frame)"
        )
    if config["mixer"] == "bimamba":
        out.append(
            "mixer=bimamba on the time axis reads the future (its backward block starts at the "
            "end of the utterance; mixer=mamba or lstm is unidirectional)"
        )
    return out


def check_causal(config: dict[str, Any]) -> None:
    """Raise ValueError naming every part of ``config`` that is not causal."""
    problems = causal_problems(config)
    if problems:
        name = config.get("preset", "this model")
        raise ValueError(
            f"{name} is not a causal configuration and cannot stream: " + "; ".join(problems)
        )


def latency_samples(config: dict[str, Any]) -> int:
    """Algorithmic latency in samples: the STFT frame (n_fft) plus the decoder's look-ahead
    (LOOKAHEAD hops). 640 samples (40 ms at 16 kHz) for the 512/128 STFT of every preset."""
    stft = config["stft"]
    return stft["n_fft"] + LOOKAHEAD * stft["hop_length"]
