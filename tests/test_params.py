import json

from bsmamba import build_model, cli, params
from bsmamba.bands import BAND_PLANS


def test_count_splits_the_total_into_components():
    model = build_model("abl2", dim=16, d_state=4)
    c = params.count(model)
    assert c["total"] == sum(p.numel() for p in model.parameters())
    assert c["total"] == c["encoder"] + sum(c["layers"]) + c["decoder"]
    assert len(c["layers"]) == 2 and set(c["passes"][0]) == {"time", "band"}
    assert sum(c["passes"][0].values()) == c["layers"][0]


def test_macs_per_second_match_a_hand_count_for_an_lstm_model():
    N = 8
    model = build_model("bsrnn", dim=N, num_layers=1, layout="intra")
    T, K, F = 16000 // 128 + 1, 30, 257
    widths = BAND_PLANS["bsrnn30"]
    expected = (
        T * sum(2 * w * N for w in widths)  # band-split Linear
        + K * T * 4 * 2 * N * (N + 2 * N)  # time LSTM N -> 2N, one direction
        + K * T * 2 * N * N  # its projection 2N -> N
        + K * T * N * 4 * N  # decoder first Linear
        + T * sum(4 * N * 12 * w for w in widths)  # decoder second Linear
        + 12 * F * T  # 3-tap complex mask
    )
    assert params.macs_per_s(model) == expected
    assert model.training  # restored


def test_macs_per_second_match_a_hand_count_for_a_mamba_model():
    N, S, d = 8, 4, 16  # dim, d_state, d_inner = expand * dim
    model = build_model("modified", dim=N, d_state=S, num_layers=1, layout="intra")
    T, K, F = 16000 // 128 + 1, 30, 257
    widths = BAND_PLANS["bsrnn30"]
    r = 1  # dt_rank = ceil(8 / 16)
    per_step = (
        N * 2 * d  # in_proj
        + d * 4  # depthwise conv, d_conv 4
        + d * (r + 2 * S)  # x_proj
        + r * d  # dt_proj
        + 3 * d * S  # the selective scan
        + d * N  # out_proj
    )
    expected = (
        T * sum(2 * w * N for w in widths)  # band-split Linear
        + K * T * per_step  # one time pass over every band
        + K * T * N * 4 * N  # decoder first Linear
        + T * sum(4 * N * 12 * w for w in widths)  # decoder second Linear
        + 12 * F * T  # 3-tap complex mask
    )
    assert params.macs_per_s(model) == expected


def test_params_command_reports_claims_and_says_where_they_fail(capsys):
    assert cli.main(["params", "abl2", "abl3", "dim=16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "params" and set(doc["by_preset"]) == {"abl2", "abl3"}
    r = doc["by_preset"]["abl3"]
    assert r["params_diff"] == r["params"] - r["claimed_params"]
    assert r["claimed_params"] == 2_300_000 and r["macs_per_s"] > 0
    by_claim = {c["claim"]: c for c in doc["claims"]}
    # at dim 16 the models are tiny: the plan's absolute counts cannot hold
    assert not by_claim["abl3 has ~2.3M parameters"]["holds"]
    assert any("adaptive decoder" in c.lower() for c in by_claim)
    assert cli.main(["params", "abl3", "dim=16"]) == 0
    assert "DOES NOT HOLD" in capsys.readouterr().out


def test_unknown_preset_is_a_one_line_error(capsys):
    assert cli.main(["params", "abl9"]) == 2
    assert "valid presets" in capsys.readouterr().err
