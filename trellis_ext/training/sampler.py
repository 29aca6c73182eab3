"""A resumable sampler whose every choice is a pure function of (seed, position).

TRELLIS's ``ResumableSampler`` keeps an (epoch, index) state that skips one prefetched batch per resume.
Here nothing needs saving: the run's samples are numbered by a global position p = 0, 1, 2, ... (all
ranks together); epoch ``e = p // n`` shuffles the n items with a permutation keyed by (seed, e), and
position p reads ``perm_e[p % n]``. Rank r of W takes positions ``base + i·W + r`` for its slots
i = 0..B-1 of a step whose first position is ``base``. Resuming at step s recomputes ``base(s)`` and
continues exactly.

:class:`StepBatchSampler` turns that into a ``torch.utils.data.DataLoader`` ``batch_sampler``: per step
a list of keys ``(step, slot, item)`` for one rank, so workers can prefetch while the keys stay exact.
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Tuple

import torch

from .flow import keyed_seed

__all__ = ["ResumableSampler", "StepBatchSampler", "SampleKey"]

SampleKey = Tuple[int, int, int]  # (step, slot within the rank's batch, item index)
SAMPLER_SALT = 0x5A3  # separates the permutation keys from other keyed draws of the same seed


class ResumableSampler:
    def __init__(self, num_items: int, seed: int):
        if num_items < 1:
            raise ValueError("nothing to sample: the item list is empty")
        self.num_items, self.seed = int(num_items), int(seed)
        self._perms: dict = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            gen = torch.Generator().manual_seed(keyed_seed(SAMPLER_SALT, self.seed, epoch))
            self._perms[epoch] = torch.randperm(self.num_items, generator=gen)
        return self._perms[epoch]

    def item(self, position: int) -> int:
        epoch, index = divmod(int(position), self.num_items)
        return int(self.permutation(epoch)[index])

    def items_for_step(self, base_position: int, batch_size: int, rank: int = 0, world_size: int = 1) -> List[int]:
        return [self.item(base_position + i * world_size + rank) for i in range(batch_size)]


class StepBatchSampler:
    """Per step in ``[start, stop)``, the keys of one rank's batch (see the module docstring).

    ``base_position(step)`` gives the global position of the step's first sample (it depends on the batch
    sizes of earlier steps, e.g. a progressive schedule)."""

    def __init__(self, sampler: ResumableSampler, start: int, stop: int, batch_size: int,
                 base_position: Callable[[int], int], rank: int = 0, world_size: int = 1):
        self.sampler, self.start, self.stop = sampler, int(start), int(stop)
        self.batch_size, self.base_position = int(batch_size), base_position
        self.rank, self.world_size = int(rank), int(world_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[List[SampleKey]]:
        for step in range(self.start, self.stop):
            items = self.sampler.items_for_step(self.base_position(step), self.batch_size, self.rank, self.world_size)
            yield [(step, slot, item) for slot, item in enumerate(items)]
