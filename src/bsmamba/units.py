"""Numbers in and out: byte sizes a user writes, and how every table prints counts and metrics.

One place so the plan, the study report and ``evaluate`` print the same value the same way.
Nothing here imports the rest of the package.
"""

from __future__ import annotations

import re

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BINARY = {"TiB": 2**40, "GiB": 2**30, "MiB": 2**20, "KiB": 2**10}

# Decimal places per metric key (schema.METRIC_KEYS): the precision papers report VB-DMD
# results with; STOI is a fraction in [0, 1], so it gets one more.
METRIC_DIGITS = {"pesq": 2, "csig": 2, "cbak": 2, "covl": 2, "ssnr": 2, "stoi": 3, "si_sdr": 2}


def parse_bytes(text: str | int | float) -> int:
    """'24GiB' / '512MB' / '1.5e9' / 1000 -> bytes (int). Raises ValueError naming valid units."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = (m.group(2).lower() or "b") if m else None
    if not m or unit not in _UNITS:
        raise ValueError(
            f"memory size {text!r} not understood; write a number with one of "
            "B, KiB, MiB, GiB, TiB, KB, MB, GB, TB (e.g. 24GiB)"
        )
    return int(float(m.group(1)) * _UNITS[unit])


def fmt_bytes(n: float | None, unit: str | None = None) -> str:
    """Bytes -> '1.50 GiB' ('-' for None). ``unit`` ('GiB', 'MiB', ...) fixes the unit, so a
    table column reads in one unit; by default the largest binary unit that is >= 1."""
    if n is None:
        return "-"
    if unit is not None:
        return f"{n / _BINARY[unit]:.2f} {unit}"
    for name in ("GiB", "MiB", "KiB"):
        if abs(n) >= _BINARY[name]:
            return f"{n / _BINARY[name]:.2f} {name}"
    return f"{int(n)} B"


def fmt_params(n: int | None) -> str:
    """Parameter count -> '1.23M' ('-' for None)."""
    return "-" if n is None else f"{n / 1e6:.2f}M"


def fmt_seconds(s: float | None) -> str:
    """Seconds -> '0.12 s' ('-' for None)."""
    return "-" if s is None else f"{s:.2f} s"


def fmt_rtf(r: float | None) -> str:
    """Real-time factor (processing seconds per audio second) -> '0.012' ('-' for None)."""
    return "-" if r is None else f"{r:.3f}"


def fmt_metric(mean: float | None, std: float | None, key: str, failures: int = 0) -> str:
    """One metric cell: 'mean ± std' in ``METRIC_DIGITS[key]`` places, '(n failed)' appended
    when some utterances could not be scored, '-' when not measured."""
    if mean is None:
        return "-"
    d = METRIC_DIGITS[key]
    spread = f" ± {std:.{d}f}" if std is not None else ""
    failed = f" ({failures} failed)" if failures else ""
    return f"{mean:.{d}f}{spread}{failed}"
