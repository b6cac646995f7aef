import math

import pytest

from bsmamba import config


def test_preset_fills_model_section_and_overrides_win():
    cfg = config.load(overrides=["model.preset=bsrnn"])
    assert cfg.model.mixer == "lstm" and cfg.model.num_layers == 3
    cfg = config.load(overrides=["model.preset=abl1", "model.d_state=8", "train.batch_size=4"])
    assert (cfg.model.layout, cfg.model.d_state, cfg.train.batch_size) == ("intra", 8, 4)


def test_with_preset_carries_only_the_changed_model_keys_to_another_preset():
    cfg = config.load(
        overrides=["model.preset=abl1", "model.scan_backend=reference", "model.stft.hop_length=64"]
    )
    cfg.train.batch_size = 3
    other = config.with_preset(cfg, "bsrnn")
    assert (other.model.preset, other.model.mixer, other.model.num_layers) == ("bsrnn", "lstm", 3)
    assert other.model.scan_backend == "reference" and other.model.stft.hop_length == 64
    assert other.model.layout == "stacked"  # abl1's own "intra" is its preset's, not an override
    assert other.train.batch_size == 3 and cfg.model.preset == "abl1"  # a copy: cfg untouched
    with pytest.raises(ValueError, match="unknown preset"):
        config.with_preset(cfg, "nope")


def test_file_layer_sits_between_preset_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  preset: abl2\n  d_state: 16\ntrain:\n  lr: 0.0005\n")
    cfg = config.load(f, ["model.d_state=8"])
    assert (cfg.model.mixer, cfg.model.d_state, cfg.train.lr) == ("bimamba", 8, 0.0005)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("train.batch_size=six", "train.batch_size=six: not an integer, valid >= 1"),
        ("train.batch_size=abc", "train.batch_size=abc: not an integer, valid >= 1"),
        ("train.batch_size=0", "train.batch_size=0: out of range, valid >= 1"),
        ("data.segment_s=nan", "data.segment_s=nan: not a finite number, valid > 0"),
        ("data.segment_s=inf", "data.segment_s=inf: not a finite number, valid > 0"),
        ("train.threads=-5", "train.threads=-5: out of range, valid >= 0"),
        ("train.lr=-1", "train.lr=-1.0: out of range, valid > 0"),
        ("train.lr=0", "train.lr=0.0: out of range, valid > 0"),
        ("train.compress=1.5", "train.compress=1.5: out of range, valid in (0, 1]"),
        ("study.seeds=0", "study.seeds=0: out of range, valid >= 1"),
        ("train.progress=maybe", "train.progress=maybe: not true or false"),
        ("train.nope=1", "train.nope: no such key in train"),
        ("model.preset=x", "model.preset=x: unknown preset, valid bsrnn, modified"),
    ],
)
def test_bad_keys_and_values_are_one_line_naming_key_value_and_range(bad, message):
    with pytest.raises(ValueError) as e:
        config.load(overrides=[bad])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_bad_value_in_a_config_file_is_named_too(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  batch_size: abc\n")
    with pytest.raises(ValueError, match=r"^train.batch_size=abc: not an integer, valid >= 1$"):
        config.load(f)


def test_every_default_and_preset_is_in_range():
    from bsmamba.presets import PRESETS

    for name in PRESETS:
        config.load(overrides=[f"model.preset={name}"])  # raises if a default is out of range
    cfg = config.load()
    for key in config.RANGES:  # every key of the table exists: a renamed key is not skipped
        assert config.OmegaConf.select(cfg, key) is not None, key
    flat = _flat(config.to_dict(cfg))
    numeric = {k for k, v in flat.items() if type(v) in (int, float)}  # bool is not numeric here
    missing = sorted(numeric - set(config.RANGES))
    assert not missing, f"add the valid range of {missing} to config.RANGES"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize(
    "value, interval, inside",
    [
        (1, "[1, inf)", True),
        (0.999, "[1, inf)", False),
        (0, "(0, inf)", False),
        (1e-9, "(0, inf)", True),
        (1, "(0, 1]", True),
        (math.nan, "[0, inf)", False),
        (math.inf, "[0, inf)", False),
        (4294967296, "[0, 4294967295]", False),
    ],
)
def test_in_range(value, interval, inside):
    assert config.in_range(value, interval) is inside


def test_alias_flags_become_overrides():
    import argparse

    p = argparse.ArgumentParser()
    config.add_config_arguments(p, ["preset", "batch_size", "systems"])
    args = p.parse_args(["--preset", "abl3", "--batch-size", "4", "--systems", "bsrnn,abl3"])
    cfg = config.from_args(args)
    assert cfg.model.decoder == "adaptive" and cfg.train.batch_size == 4
    assert list(cfg.study.systems) == ["bsrnn", "abl3"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  batch_size: [1\n", "is not valid YAML at line 3"),
        ("- a\n- b\n", "is not a config: expected sections like 'train:', got a list"),
    ],
)
def test_a_config_file_that_does_not_parse_is_named(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        config.load(f)
    assert str(e.value).startswith(f"{f} {message}") and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="config file .* does not exist"):
        config.load(tmp_path / "missing.yaml")


def test_a_saved_config_with_retired_keys_still_loads(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text(
        "memory:\n  inject_oom_at_step: -1\n  inject_oom_rank: -1\ntrain:\n  batch_size: 3\n"
    )
    cfg = config.load(old)
    assert cfg.train.batch_size == 3 and "inject_oom_at_step" not in cfg.memory
