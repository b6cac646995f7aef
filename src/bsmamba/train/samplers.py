"""The data order of training: reproducible from the seed, sharded over ranks, resumable.

:class:`EpochSampler` draws each epoch's order from ``(seed, epoch)`` alone and skips what a
checkpoint already saw; :class:`SeededItems` makes each item's random crop a function of
``(seed, epoch, index)``. Together a resumed run sees exactly the batches an unbroken one would.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler[int]):
    """Indices of one rank: a permutation drawn from ``(seed, epoch)``, resumable mid-epoch.

    Each epoch's order depends on the seed and epoch number only (not on the global RNG), the
    tail that does not divide evenly across ranks is dropped so that every rank runs the same
    number of batches, and ``resume_at(epoch, samples)`` skips what a checkpoint already saw.
    """

    def __init__(
        self,
        n: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        keyed: bool = False,
    ):
        self.n, self.shuffle, self.seed, self.keyed = n, shuffle, seed, keyed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._skip: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before each epoch
        self.epoch = epoch

    def resume_at(self, epoch: int, samples: int) -> None:
        self._skip = (epoch, samples)

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        order = order[: len(self) * self.world_size][self.rank :: self.world_size]
        if self.keyed:  # keys for SeededItems: epoch * n + index
            order = order + self.epoch * self.n
        order = order.tolist()
        if self._skip is not None and self._skip[0] == self.epoch:
            order = order[self._skip[1] :]
            self._skip = None
        return iter(order)


class SeededItems(Dataset):
    """Wraps a dataset whose items draw from torch's global RNG (random crops) so that item
    ``key = epoch * n + i`` is item ``i`` drawn under a seed fixed by ``(seed, epoch, i)``.

    The data of a step then depends on nothing but the seed and the position in training: the
    same with or without workers, and the same after a resume (Lightning prefetches a batch
    ahead, so a saved global RNG state would already have moved past the next batch).
    """

    def __init__(self, base: Dataset, seed: int = 0):
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int):
        epoch, i = divmod(int(key), len(self.base))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 1_000_033 + i)
            return self.base[i]
