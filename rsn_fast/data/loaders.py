"""Loader choice: the torch DataLoader (OpenCV) or the NVIDIA DALI twin, by ``data.backend``.

The one module that knows both pipelines: :mod:`rsn_fast.data.dataset` (records, augmentation, collation) and
:mod:`rsn_fast.data.dali` (the DALI graph) do not import each other. DALI itself is imported only when
``data.backend: dali`` is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import cv2
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from rsn_fast.data.dataset import Collate, TopDownDataset, as_config, build_dataset

__all__ = ["build_dataloader", "build_dali_loader", "build_torch_loader"]


def build_dataloader(
    cfg: Any, split: str, distributed: bool = False, seed: int = 0
) -> tuple[Any, DistributedSampler | None]:
    """The loader of ``cfg.data.backend`` for ``split``: :func:`build_torch_loader` or :func:`build_dali_loader`.

    Both give the same batches, order and shards (see each for the details).
    """
    cfg = as_config(cfg)
    if cfg.data.backend == "dali":
        return build_dali_loader(cfg, split, distributed=distributed, seed=seed)
    return build_torch_loader(cfg, split, distributed=distributed, seed=seed)


def build_torch_loader(
    cfg: Any, split: str, distributed: bool = False, seed: int = 0
) -> tuple[DataLoader, DistributedSampler | None]:
    """The torch DataLoader for ``split`` with workers, pinned memory, persistent workers, DistributedSampler under DDP.

    Training shuffles and drops the last partial batch; call ``sampler.set_epoch(epoch)`` each epoch under DDP.
    Validation keeps order; under DDP the sampler pads with repeats, so deduplicate by ``meta["index"]``.
    Each batch carries ``skipped`` (int64 scalar): images skipped under ``data.bad_images: skip``; sum it over
    an epoch to report.
    """
    cfg = as_config(cfg)
    d = cfg.data
    dataset = build_dataset(cfg, split, item_targets=False)
    train = split == "train"
    rank = 0
    sampler = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=train)
        rank = sampler.rank
    workers = d.workers
    if workers > 0:
        # OpenCV's thread pool is not fork-safe: a forked worker that touches a pool the parent had used
        # deadlocks (seen: cv2.setNumThreads in the worker hangs in pthread_cond_destroy). Stopping the pool in
        # the parent before the workers are forked avoids it; workers run one image per core anyway.
        cv2.setNumThreads(1)
    generator = torch.Generator()
    # Different ranks must not draw the same augmentation for their shards.
    generator.manual_seed(seed + 1_000_003 * rank)
    loader = DataLoader(
        dataset,
        batch_size=d.batch_size if train else d.val_batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=Collate(dataset),
        pin_memory=d.pin_memory and torch.cuda.is_available(),
        drop_last=train,
        persistent_workers=d.persistent_workers and workers > 0,
        prefetch_factor=d.prefetch_factor if workers > 0 else None,
        generator=generator,
    )
    return loader, sampler


def build_dali_loader(
    cfg: Any,
    split: str,
    distributed: bool = False,
    seed: int = 0,
    *,
    sampler: Iterable | None = None,
    seed_fn: Callable[[int, int], int] | None = None,
    shard_id: int | None = None,
    num_shards: int | None = None,
    dataset: TopDownDataset | None = None,
) -> tuple[Any, Any]:
    """The DALI loader for ``split``; same batches, order and sharding rules as ``build_dataloader``.

    Args:
        cfg: the root ``Config`` (or YAML path / mapping); options from ``cfg.data.dali``.
        split: "train" (shuffled, targets, last partial batch dropped) or "val" (in order, partial batch kept).
        distributed: shard with a ``DistributedSampler`` (rank = ``shard_id``, world size = ``num_shards``; both
            default to torch.distributed's); call ``sampler.set_epoch(epoch)`` each epoch, as with torch.
        seed: shuffling seed (and, without ``seed_fn``, the augmentation generator's seed, offset per rank).
        sampler: use this sampler instead (indices or ``(epoch, index)`` keys, e.g. the engine's).
        seed_fn: per-sample augmentation seed for ``(epoch, index)`` keys.
        shard_id, num_shards: explicit shard (without an initialised process group).
        dataset: an already built ``TopDownDataset`` for ``split`` (saves reading the annotations twice).

    Returns:
        (loader, sampler): the sampler is the ``DistributedSampler`` under DDP, the given one, or None.
    """
    from rsn_fast.data.dali import DaliLoader, _import_dali

    _import_dali()  # fail early, naming the package to install
    cfg = as_config(cfg)
    d = cfg.data
    opts = d.dali  # DaliOptions (rsn_fast/config/data.py)
    device = opts.device
    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    if dataset is None:
        dataset = build_dataset(cfg, split, item_targets=False)
    train = split == "train"
    rank = 0
    returned = sampler
    if sampler is None:
        if distributed or num_shards is not None:
            sampler = DistributedSampler(
                dataset, num_replicas=num_shards, rank=shard_id, shuffle=train, seed=seed, drop_last=train
            )
            rank = sampler.rank
            returned = sampler
        elif train:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        else:
            sampler = SequentialSampler(dataset)
    if seed_fn is None:
        # Different ranks must not draw the same augmentation for their shards.
        dataset.set_rng(seed + 1_000_003 * rank)
    loader = DaliLoader(
        dataset,
        sampler,
        batch_size=d.batch_size if train else d.val_batch_size,
        drop_last=train,
        device=device,
        threads=opts.threads,
        prefetch=opts.prefetch,
        dtype=opts.dtype,
        layout=opts.layout,
        seed_fn=seed_fn,
    )
    return loader, returned
