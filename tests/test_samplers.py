import torch
from torch.utils.data import Dataset

from bsmamba.train.samplers import EpochSampler, SeededItems


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
