"""Resumable, reproducible data order and augmentation randomness.

Training order: one permutation per (seed, epoch), split across ranks, cut to whole batches; a resumed run
starts the epoch at a batch offset. Each sample's augmentation randomness is seeded from (seed, epoch, index)
inside :class:`SeededDataset`, so it does not depend on the number of workers, on which worker loads it, or on
whether the run was interrupted: a resumed run sees exactly the batches an uninterrupted run would.

Evaluation order: :class:`ShardSampler` gives rank r the indices r, r+W, r+2W, ... with no padding, so every
sample is evaluated exactly once even when the data set size is not a multiple of the world size.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate, get_worker_info

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed that is a fixed function of (seed, epoch, index) (splitmix64 mixing)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & _MASK64
    for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = ((x ^ (x >> shift)) * mul) & _MASK64
    return x ^ (x >> 31)


class SeededDataset(Dataset):
    """Wraps a map-style data set; ``ds[(epoch, index)]`` runs ``inner[index]`` under seeded RNGs.

    Python's ``random``, NumPy's global generator, torch's CPU generator and the data set's own augmentation
    generator (``inner.set_rng(seed)``, when it has one) are seeded from :func:`sample_seed`. In the main process (``workers: 0``) their states are restored afterwards, so loading
    leaves the training process's own random streams alone.
    """

    def __init__(self, inner: Dataset, seed: int):
        self.inner = inner
        self.seed = seed

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # expose the inner data set's attributes (ann_file, ...)
        if name in ("inner", "seed"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        in_main = get_worker_info() is None
        if in_main:
            saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(s)
        np.random.seed(s & 0xFFFFFFFF)
        torch.manual_seed(s & 0x7FFFFFFFFFFFFFFF)
        set_rng = getattr(self.inner, "set_rng", None)
        if callable(set_rng):
            set_rng(s)
        try:
            return self.inner[index]
        finally:
            if in_main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


class ResumableSampler(Sampler):
    """Yields ``(epoch, index)`` keys for :class:`SeededDataset`: this rank's whole batches of one epoch.

    Args:
        size: data set length.
        batch_size: per-rank batch size; the epoch is cut to ``size // (batch_size × world_size)`` batches.
        rank, world_size: this process's shard.
        seed: permutation seed (the permutation of epoch e uses seed + e).
        shuffle: permute (training) or keep order.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.size = size
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"data set of {size} samples is smaller than one global batch "
                f"({batch_size} × {world_size} processes)"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and the first batch to yield (the resume position inside the epoch)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        used = self.batches_per_epoch * self.batch_size * self.world_size
        mine = order[:used][self.rank :: self.world_size]
        for i in mine[self.start_batch * self.batch_size :]:
            yield (self.epoch, i)


class ShardSampler(Sampler):
    """Indices ``rank, rank + W, ...`` of a data set: an unpadded, disjoint shard (evaluation)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, size, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def collate_for(dataset, targets: bool = True) -> Any:
    """The data package's batch collation, else torch's default.

    With ``targets`` it builds the training targets once per batch in the worker; without, batches carry only
    keypoints and weights and the trainer draws the targets on its device.
    """
    try:
        from rsn_fast.data.dataset import collate_batch
    except ImportError:
        return default_collate
    return functools.partial(collate_batch, dataset=dataset if targets else None)


def limit_cv2_threads() -> None:
    """One OpenCV thread per process, set in the parent BEFORE loader workers fork.

    Calling ``cv2.setNumThreads`` inside a forked worker after the parent has used OpenCV's pool deadlocks
    (the child waits on the parent's pool condition variables; seen here in ``pthread_cond_destroy``). Each
    worker would otherwise also start a pool as large as the machine and oversubscribe the cores.
    """
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
