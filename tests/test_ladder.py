import pytest
import torch

from bsmamba import config
from bsmamba.memory import ladder
from bsmamba.memory import predict as Pr
from bsmamba.memory import step as S


def cfg_of(*overrides):
    return config.load(overrides=list(overrides))


def walk(cfg):
    """Every rung step_down takes from ``cfg`` until the ladder is exhausted."""
    events = []
    while (stepped := ladder.step_down(cfg, "test")) is not None:
        cfg, event = stepped
        events.append(event)
    return cfg, events


def test_mamba_preset_walks_batch_then_d_state_then_checkpointing():
    cfg = cfg_of("model.preset=abl3")
    final, events = walk(cfg)
    assert [e["rung"] for e in events] == [
        "train.batch_size=4",
        "model.d_state=8",
        "model.checkpointing=true",
    ]
    assert [e["restart"] for e in events] == [False, True, False]  # only d_state changes shapes
    assert (final.train.batch_size, final.model.d_state, final.model.checkpointing) == (4, 8, True)
    assert final.train.grad_accumulate == 1 and events[0]["effective_batch"] == 4
    assert cfg.train.batch_size == 6 and cfg.model.d_state == 12  # the input is not modified


def test_keep_effective_batch_uses_an_exact_divisor():
    cfg = cfg_of("model.preset=abl1", "memory.keep_effective_batch=true")
    cfg, event = ladder.step_down(cfg, "test")
    assert (cfg.train.batch_size, cfg.train.grad_accumulate) == (3, 2)  # 6 = 3 x 2, not 4 x 1.5
    assert event["effective_batch"] == 6
    assert {c["key"] for c in event["changes"]} == {"train.batch_size", "train.grad_accumulate"}


def test_lstm_preset_skips_d_state_and_rungs_never_raise_memory():
    final, events = walk(cfg_of("model.preset=bsrnn"))
    assert [e["rung"] for e in events] == ["train.batch_size=4", "model.checkpointing=true"]
    # batch already below the rung, d_state already below 8: only checkpointing is left
    _, events = walk(cfg_of("model.preset=abl2", "train.batch_size=2", "model.d_state=6"))
    assert [e["rung"] for e in events] == ["model.checkpointing=true"]


def test_a_rung_with_an_unknown_key_is_an_error_naming_it():
    cfg = cfg_of("memory.ladder=[train.batchsize=2]")
    with pytest.raises(ValueError, match="batchsize"):
        ladder.step_down(cfg, "test")
    with pytest.raises(ValueError, match="section.key=value"):
        ladder.step_down(cfg_of("memory.ladder=[smaller]"), "test")


def test_is_oom_recognises_out_of_memory_errors_only(monkeypatch):
    assert ladder.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert ladder.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert ladder.is_oom(MemoryError())
    assert not ladder.is_oom(RuntimeError("shape mismatch"))
    assert not ladder.is_oom(ValueError("out of memory"))  # not a runtime failure
    monkeypatch.setenv(ladder.INJECT_OOM_ENV, "2")
    ladder.inject_oom(1)  # other steps: nothing
    with pytest.raises(torch.OutOfMemoryError) as e:
        ladder.inject_oom(2)
    assert ladder.is_oom(e.value)
    ladder.inject_oom(2)  # it fired once: the same step again runs
    monkeypatch.setenv(ladder.INJECT_OOM_ENV, "2:1")  # only rank 1
    ladder.inject_oom(2, rank=0)
    with pytest.raises(torch.OutOfMemoryError):
        ladder.inject_oom(2, rank=1)


def small(*more):
    # no discriminator: 0.1 s crops are too short for it, and the budgets below are the
    # generator's step alone (tests/test_memory_plan.py counts the discriminator)
    base = ("model.preset=modified", "data.segment_s=0.1", "train.device=cpu")
    return cfg_of(*base, "train.metricgan=false", *more)


def test_fit_steps_down_until_the_prediction_fits_the_budget():
    at4 = Pr.predict(config.model_kwargs(small()), 4, 0.1)["peak_bytes"]
    at6 = Pr.predict(config.model_kwargs(small()), 6, 0.1)["peak_bytes"]
    assert at4 < at6
    cfg, events = ladder.fit(small(f"memory.budget={(at4 + at6) // 2}"))
    assert cfg.train.batch_size == 4 and cfg.model.d_state == 12  # one rung was enough
    assert [e["event"] for e in events] == ["plan", "step_down", "plan"]
    assert [e["verdict"] for e in events if e["event"] == "plan"] == ["does_not_fit", "fits"]
    assert "budget" in ladder.describe(events[0]) and "6 -> 4" in ladder.describe(events[1])
    # does not fit even on the last rung: a clear error, not a silent run into OOM
    with pytest.raises(ValueError, match="memory.budget"):
        ladder.fit(small("memory.budget=1MiB", "memory.ladder=[train.batch_size=4]"))
    assert ladder.fit(small("memory.check=false", "memory.budget=1MiB")) == (
        small("memory.check=false", "memory.budget=1MiB"),
        [],
    )


def test_injected_oom_during_training_continues_on_the_next_rung_keeping_finished_steps(
    monkeypatch,
):
    """A real model and Adam; an OOM at step 2 steps down and the loop resumes at step 2."""
    from bsmamba.model import BandSplitEnhancer

    cfg = small("train.batch_size=3", "memory.ladder=[train.batch_size=2]")
    monkeypatch.setenv(ladder.INJECT_OOM_ENV, "2")
    torch.manual_seed(0)
    model = BandSplitEnhancer(**config.model_kwargs(cfg))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    done, step, events, batches = [], 0, [], []
    while step < 4:
        try:
            ladder.inject_oom(step)
            noisy = torch.randn(cfg.train.batch_size, 1600)
            S.step_loss(model, noisy, noisy * 0.5).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done.append(step)
            batches.append(cfg.train.batch_size)
            step += 1
        except Exception as e:
            if not ladder.is_oom(e):
                raise
            cfg, event = ladder.step_down(cfg, f"out of memory: {e}")
            events.append(event)
            assert not event["restart"]  # a batch rung keeps the weights: go on from this step
    assert done == [0, 1, 2, 3] and batches == [3, 3, 2, 2]
    assert len(events) == 1 and "injected" in events[0]["reason"]
