"""Checkpoints: atomic writes, weights_only loads, RNG states as plain data, best-of-run lookup."""

from __future__ import annotations

import datetime
import pickle
import random

import numpy as np
import pytest
import torch

import bsmamba
from bsmamba import checkpoint as ckpt_io
from bsmamba.train.callbacks import AtomicCheckpointIO


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leave a cached Gaussian in NumPy's state
    path = tmp_path / "rng.pt"
    torch.save(ckpt_io.rng_state(), path)
    expected = _draws()
    _draws()  # move every generator on
    ckpt_io.set_rng_state(torch.load(path, weights_only=True))
    assert _draws() == expected


def test_atomic_io_keeps_the_old_file_when_a_write_fails(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    good = {"bsmamba": {"format_version": 2, "model_config": {}}, "w": torch.ones(3)}
    io.save_checkpoint(good, path)
    with pytest.raises(Exception):  # noqa: B017  (whatever pickling raises for a lambda)
        io.save_checkpoint({"bsmamba": {}, "bad": lambda: 0}, path)
    assert torch.equal(io.load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def test_load_refuses_what_it_cannot_trust(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt_io.load(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="not a bsmamba checkpoint"):
        ckpt_io.load(tmp_path / "foreign.ckpt")
    torch.save({"bsmamba": {"format_version": 99}}, tmp_path / "future.ckpt")
    with pytest.raises(ValueError, match="newer"):
        ckpt_io.load(tmp_path / "future.ckpt")
    torch.save({"bsmamba": {"format_version": 1}, "state_dict": {}}, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match="format 1, from a bsmamba before the published BSRNN"):
        ckpt_io.load(tmp_path / "old.ckpt")
    good = ckpt_io.save_model(tmp_path / "good.ckpt", bsmamba.build_model("bsrnn", dim=8))
    (tmp_path / "half.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "pickle.ckpt").write_bytes(pickle.dumps({"bsmamba": {}}))
    # a pickled object (here a datetime): weights_only refuses it
    obj = {"bsmamba": {"format_version": 2}, "x": datetime.date(2020, 1, 1)}
    torch.save(obj, tmp_path / "p.ckpt")
    for name, why in {
        "half.ckpt": "a damaged or truncated PyTorch file",
        "random.ckpt": "not a PyTorch file",
        "empty.ckpt": "not a PyTorch file",
        "pickle.ckpt": "not a PyTorch file",
        "p.ckpt": "holds Python objects besides tensors",
    }.items():
        with pytest.raises(ValueError) as e:
            ckpt_io.load(tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(f"{tmp_path / name} is not a bsmamba checkpoint") and why in msg
        assert "\n" not in msg and "weights_only=False" not in msg and "False" not in msg


def test_run_dir_resolves_to_its_best_checkpoint(tmp_path):
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt_io.resolve(tmp_path / "run")
    (ck / "last.ckpt").write_bytes(b"x")
    assert ckpt_io.resolve(tmp_path / "run") == ck / "last.ckpt"
    for name in (
        "best-e1-s10-pesq=1.850.ckpt",
        "best-e3-s30-pesq=2.105.ckpt",
        "best-e2-s20-pesq=1.990.ckpt",
    ):
        (ck / name).write_bytes(b"x")
    assert ckpt_io.resolve(tmp_path / "run").name == "best-e3-s30-pesq=2.105.ckpt"
    assert ckpt_io.resolve(ck / "last.ckpt") == ck / "last.ckpt"


def test_saved_model_loads_as_an_enhancer(tmp_path):
    model = bsmamba.build_model("bsrnn", dim=8, num_layers=1)
    path = ckpt_io.save_model(tmp_path / "m.ckpt", model)
    enhancer = bsmamba.load(path)
    assert enhancer.model.config == {**model.config, "checkpointing": False}
    wav = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    with torch.no_grad():
        expected = model(torch.from_numpy(wav)[None])[0].numpy()
    np.testing.assert_allclose(enhancer.enhance(wav, 16000), expected, atol=1e-5)


def test_weights_of_another_model_are_one_line(tmp_path):
    small = bsmamba.build_model("bsrnn", dim=8, num_layers=1)
    path = ckpt_io.save_model(tmp_path / "m.ckpt", small)
    ckpt = torch.load(path, weights_only=True)
    ckpt["bsmamba"]["model_config"]["dim"] = 16  # the config says 16, the weights are 8 wide
    torch.save(ckpt, tmp_path / "wide.ckpt")
    ckpt["bsmamba"]["model_config"].update(dim=8, num_layers=2)  # a layer more than it holds
    torch.save(ckpt, tmp_path / "deep.ckpt")
    for name, words in (("wide.ckpt", "of another shape"), ("deep.ckpt", "weights missing (e.g.")):
        with pytest.raises(ValueError) as e:
            bsmamba.load(tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(f"{tmp_path / name} does not fit the model its config describes")
        assert words in msg and "\n" not in msg and len(msg) < 500
    ckpt_io.check_fits(path, ckpt_io.model_state(torch.load(path, weights_only=True)), small)
