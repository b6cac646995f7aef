import pytest

from bsmamba.bands import BAND_PLANS, band_edges_hz, band_widths


def test_shipped_plans_cover_257_bins():
    assert len(BAND_PLANS["bsrnn31"]) == 31 and len(BAND_PLANS["bsrnn30"]) == 30
    for name in BAND_PLANS:
        assert sum(band_widths(name, 257)) == 257
    # the 30-band plan is the 31-band one with its 2-bin DC band merged into the next
    assert BAND_PLANS["bsrnn30"] == [5] + BAND_PLANS["bsrnn31"][2:]


def test_band_edges_hit_1_and_4_khz():
    his = [hi for _, hi in band_edges_hz(BAND_PLANS["bsrnn30"], 16000, 512)]
    assert 1000.0 in his and 4000.0 in his and his[-1] == 257 * 16000 / 512


def test_bad_plans_say_what_is_wrong():
    with pytest.raises(ValueError, match="covers 256 bins but the STFT has 257"):
        band_widths([128, 128], 257)
    with pytest.raises(ValueError, match="valid plans: bsrnn31, bsrnn30"):
        band_widths("bsrnn32", 257)
    with pytest.raises(ValueError, match="at least one bin"):
        band_widths([257, 0], 257)
    assert band_widths([100, 157], 257) == [100, 157]
