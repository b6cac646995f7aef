"""The LightningModule's own rules: data order, non-finite steps, abort (with real Lightning)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import Dataset

from bsmamba import build_model, config
from bsmamba.train.module import EnhancementModule, EpochSampler, NonFiniteLossError, SeededItems


def test_epoch_sampler_orders_shards_and_resumes():
    a, b = EpochSampler(10, True, seed=1), EpochSampler(10, True, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == list(range(10))  # a permutation, repeatable
    b.set_epoch(4)
    assert list(a) != list(b)  # a new order each epoch
    ranks = [EpochSampler(11, True, seed=1, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.set_epoch(3)
    shards = [list(r) for r in ranks]
    assert [len(s) for s in shards] == [3, 3, 3]  # the uneven tail is dropped on every rank
    assert len(set(sum(shards, []))) == 9
    c = EpochSampler(10, True, seed=1)
    c.set_epoch(3)
    c.resume_at(3, 4)
    assert list(c) == list(a)[4:]  # a checkpoint's 4 samples are not seen twice
    assert list(c) == list(a)  # ... and only once: the next pass is whole
    assert list(EpochSampler(5, False)) == [0, 1, 2, 3, 4]


class _RandomCrop(Dataset):
    """Draws from torch's global RNG per item, as random training crops do."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.rand(3)


def test_seeded_items_depend_on_seed_epoch_and_index_only():
    ds = SeededItems(_RandomCrop(), seed=7)
    torch.manual_seed(0)
    first = ds[4 + 2]  # epoch 1, item 2
    torch.manual_seed(123)  # the global RNG does not matter ...
    assert torch.equal(ds[6], first)
    assert not torch.equal(ds[2], first)  # ... the epoch does
    assert not torch.equal(SeededItems(_RandomCrop(), seed=8)[6], first)  # ... and the seed


class _Pairs(Dataset):
    """(noisy, clean) pairs of 0.25 s; items in ``nan_items`` carry a NaN sample."""

    def __init__(self, n: int, nan_items=()):
        g = torch.Generator().manual_seed(0)
        self.clean = 0.1 * torch.randn(n, 4000, generator=g)
        self.noisy = self.clean + 0.05 * torch.randn(n, 4000, generator=g)
        self.noisy[list(nan_items), 100] = float("nan")

    def __len__(self):
        return len(self.clean)

    def __getitem__(self, i):
        return self.noisy[i], self.clean[i]


def _fit(ds: Dataset, *overrides: str) -> EnhancementModule:
    cfg = config.load(overrides=["train.batch_size=1", "memory.check=false", *overrides])
    module = EnhancementModule(build_model("bsrnn", dim=8, num_layers=1), cfg, ds, ds)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module)
    module.final_step = trainer.global_step
    return module


def test_nonfinite_steps_are_skipped_and_counted():
    module = _fit(_Pairs(6, nan_items=(1, 3, 4)), "train.max_nonfinite=5")
    assert module.nonfinite_steps == 3
    assert module.final_step == 3  # only the finite batches stepped the optimizer
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


def test_too_many_nonfinite_steps_abort_with_a_clear_message():
    with pytest.raises(NonFiniteLossError, match=r"train.max_nonfinite=2.*lower train.lr"):
        _fit(_Pairs(6, nan_items=range(6)), "train.max_nonfinite=2")
