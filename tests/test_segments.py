import numpy as np
import pytest

from bsmamba.data import segments


def test_long_pair_crops_the_same_window():
    clean = np.arange(50_000, dtype=np.float32)
    noisy = clean + 0.5
    n, c = segments.crop_pair(noisy, clean, 32_000, start=1234)
    assert len(n) == len(c) == 32_000 and c[0] == 1234 and np.all(n - c == 0.5)
    assert segments.num_starts(50_000, 32_000) == 18_001


def test_short_utterance_is_tiled_not_padded():
    clean = np.arange(1, 10_001, dtype=np.float32)  # no zeros anywhere
    n, c = segments.crop_pair(clean, clean, 32_000, start=0)
    assert len(c) == 32_000 and np.all(c != 0)  # no zero padding
    assert c[10_000] == 1 and c[29_999] == 10_000  # wrapped around
    assert segments.num_starts(10_000, 32_000) == 40_000 - 32_000 + 1


def test_bad_start_and_mismatch():
    x = np.ones(100, np.float32)
    with pytest.raises(ValueError, match="start"):
        segments.crop_pair(x, x, 50, start=60)
    with pytest.raises(ValueError, match="differ"):
        segments.crop_pair(x, x[:90], 50)
