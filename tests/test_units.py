import pytest

from bsmamba import schema, units


def test_parse_bytes_reads_binary_and_decimal_units_and_names_them_when_wrong():
    assert units.parse_bytes("24GiB") == 24 * 2**30 and units.parse_bytes("1.5GB") == 1_500_000_000
    assert units.parse_bytes("512") == 512 and units.parse_bytes(1e3) == 1000
    with pytest.raises(ValueError, match="GiB"):
        units.parse_bytes("24 gigs")


def test_fmt_bytes_picks_the_largest_unit_or_the_one_asked_for():
    assert units.fmt_bytes(3 * 2**29) == "1.50 GiB"
    assert units.fmt_bytes(2**20) == "1.00 MiB" and units.fmt_bytes(100) == "100 B"
    assert units.fmt_bytes(2**29, unit="GiB") == "0.50 GiB" and units.fmt_bytes(None) == "-"
    assert units.parse_bytes(units.fmt_bytes(5 * 2**30).replace(" ", "")) == 5 * 2**30


def test_every_metric_has_its_digits_and_a_cell_uses_them():
    assert set(units.METRIC_DIGITS) == set(schema.METRIC_KEYS)
    assert units.fmt_metric(12.345, 1.0, "ssnr") == "12.35 ± 1.00"
    assert units.fmt_metric(0.9456, None, "stoi", failures=2) == "0.946 (2 failed)"
    assert units.fmt_metric(None, None, "pesq") == "-"


def test_counts_and_times():
    assert units.fmt_params(1_234_567) == "1.23M" and units.fmt_params(None) == "-"
    assert units.fmt_seconds(0.125) == "0.12 s" and units.fmt_rtf(0.01234) == "0.012"
