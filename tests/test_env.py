import pytest
import torch

from bsmamba import env


def test_auto_resolves_to_an_accelerator_torch_sees_and_a_missing_one_is_named():
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps) and mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    assert env.resolve_device("auto") == expected and env.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"unknown train.device 'tpu'; valid: auto, cpu"):
        env.resolve_device("tpu", "train.device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device=cuda but torch sees no CUDA device"):
            env.resolve_device("cuda")
    if not has_mps:
        with pytest.raises(ValueError, match="device=mps but torch sees no MPS device"):
            env.resolve_device("mps")
