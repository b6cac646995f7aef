"""Band plans as data: lists of bin widths, low to high frequency, summing to the bin count.

``bsrnn31`` is the usual 16 kHz BSRNN plan (n_fft 512 -> 257 bins): one 2-bin DC band, then
3-bin bands (~94 Hz) up to 1 kHz, twelve 8-bin bands (250 Hz) up to 4 kHz, seven 16-bin bands
(500 Hz) up to 7.5 kHz and a 17-bin top band. ``bsrnn30`` merges the 2-bin DC band
into the next one (widths 5, 3x9, 8x12, 16x7, 17): the "30 bands" the plan speaks of.
"""

from __future__ import annotations

BAND_PLANS: dict[str, list[int]] = {
    "bsrnn31": [2] + [3] * 10 + [8] * 12 + [16] * 7 + [17],
    "bsrnn30": [5] + [3] * 9 + [8] * 12 + [16] * 7 + [17],
}


def band_widths(plan: str | list[int], n_bins: int) -> list[int]:
    """The bin widths of ``plan`` (a name in ``BAND_PLANS`` or a list), checked against n_bins."""
    if isinstance(plan, str):
        if plan not in BAND_PLANS:
            raise ValueError(
                f"unknown band plan {plan!r}; valid plans: {', '.join(BAND_PLANS)} "
                "(or a list of bin widths)"
            )
        widths = list(BAND_PLANS[plan])
    else:
        widths = [int(w) for w in plan]
    if not widths or min(widths) < 1:
        raise ValueError(f"band plan {plan!r}: every band needs at least one bin")
    if sum(widths) != n_bins:
        raise ValueError(
            f"band plan {plan!r} covers {sum(widths)} bins but the STFT has {n_bins} "
            f"(n_fft // 2 + 1); pick a plan made for this n_fft or pass widths summing to {n_bins}"
        )
    return widths


def band_edges_hz(widths: list[int], sample_rate: int, n_fft: int) -> list[tuple[float, float]]:
    """(low, high) edge of each band in Hz: bin k is centred at k * sample_rate / n_fft."""
    hz = sample_rate / n_fft
    edges, start = [], 0
    for w in widths:
        edges.append((start * hz, (start + w) * hz))
        start += w
    return edges
