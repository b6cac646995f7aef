import pytest

from bsmamba import config


def test_preset_fills_model_section_and_overrides_win():
    cfg = config.load(overrides=["model.preset=bsrnn"])
    assert cfg.model.mixer == "lstm" and cfg.model.num_layers == 3
    cfg = config.load(overrides=["model.preset=abl1", "model.d_state=8", "train.batch_size=4"])
    assert (cfg.model.layout, cfg.model.d_state, cfg.train.batch_size) == ("intra", 8, 4)


def test_file_layer_sits_between_preset_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  preset: abl2\n  d_state: 16\ntrain:\n  lr: 0.0005\n")
    cfg = config.load(f, ["model.d_state=8"])
    assert (cfg.model.mixer, cfg.model.d_state, cfg.train.lr) == ("bimamba", 8, 0.0005)


@pytest.mark.parametrize(
    "bad, word",
    [
        ("train.batch_size=six", "batch_size"),
        ("train.nope=1", "nope"),
        ("model.preset=x", "preset"),
    ],
)
def test_bad_keys_and_values_are_errors_naming_them(bad, word):
    with pytest.raises(ValueError, match=word):
        config.load(overrides=[bad])


def test_alias_flags_become_overrides():
    import argparse

    p = argparse.ArgumentParser()
    config.add_config_arguments(p, ["preset", "batch_size", "systems"])
    args = p.parse_args(["--preset", "abl3", "--batch-size", "4", "--systems", "bsrnn,abl3"])
    cfg = config.from_args(args)
    assert cfg.model.decoder == "adaptive" and cfg.train.batch_size == 4
    assert list(cfg.study.systems) == ["bsrnn", "abl3"]
