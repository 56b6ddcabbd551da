"""Data pipeline throughput: the DALI twin (``dali-cpu``, ``dali-gpu``) against the torch DataLoader pipeline.

Run through ``python -m benchmarks.bench_data --providers torch dali-cpu dali-gpu [...]``, which calls
:func:`run_providers` and writes the rows.

Images/s of decode + augmentation (official recipe: scale, rotation, flip, half body) + normalisation + batched
targets, training split, at equal worker/thread counts (torch: ``data.workers``, DALI: ``data.dali.threads``).
Without ``--root`` a synthetic set of 640×480 JPEGs is generated in a temporary folder. ``dali-gpu`` needs a
CUDA GPU and DALI; providers that cannot run are reported as skipped.
"""

from __future__ import annotations

import time

import torch

from rsn_fast.config import load_config
from rsn_fast.data import build_dataloader

PROVIDERS = ("torch", "dali-cpu", "dali-gpu")


def _cfg(root: str, input_size: tuple[int, int], threads: int, batch_size: int):
    return load_config(
        {
            "data": {
                "root": root,
                "train_ann": "annotations/person_keypoints_train.json",
                "val_ann": "annotations/person_keypoints_val.json",
                "train_img_dir": "images",
                "val_img_dir": "images",
                "workers": threads,
                "batch_size": batch_size,
                "recipe": "official",
                "persistent_workers": True,
            },
            "model": {"input_size": list(input_size)},
        }
    )


def _set_dali_options(cfg, device: str, threads: int) -> None:
    cfg.data.dali.device, cfg.data.dali.threads = device, threads


def bench_provider(
    provider: str, root: str, input_size: tuple[int, int], threads: int, batch_size: int, batches: int
) -> float:
    """Images/s of ``provider`` over ``batches`` training batches (after one warm-up batch)."""
    cfg = _cfg(root, input_size, threads, batch_size)
    if provider == "torch":
        loader, _ = build_dataloader(cfg, "train", seed=0)
    else:
        from rsn_fast.data.loaders import build_dali_loader

        _set_dali_options(cfg, provider.split("-")[1], threads)
        loader, _ = build_dali_loader(cfg, "train", seed=0)
    it = iter(loader)
    next(it)  # start-up (workers, pipeline build, first prefetch) is not throughput
    n = 0
    t = time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        n += b["image"].shape[0]
        if b["target"].is_cuda:
            torch.cuda.synchronize()
    ips = n / (time.perf_counter() - t)
    del it
    if hasattr(loader, "close"):
        loader.close()
    return ips


def _skip_reason(provider: str) -> str | None:
    if provider.startswith("dali"):
        from rsn_fast.data.dali import dali_available

        if not dali_available():
            return "DALI not installed"
    if provider == "dali-gpu" and not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def run_providers(
    providers: list[str], root: str, input_size: tuple[int, int], threads: int, batch_size: int, batches: int
) -> list[tuple[str, str, str]]:
    """(bench, case, result) rows, one per provider."""
    rows = []
    for p in providers:
        case = f"{p} threads={threads} batch={batch_size} {input_size[1]}x{input_size[0]}"
        reason = _skip_reason(p)
        if reason:
            rows.append(("pipeline", case, f"skipped: {reason}"))
            continue
        ips = bench_provider(p, root, input_size, threads, batch_size, batches)
        rows.append(("pipeline", case, f"{ips:.1f} img/s"))
    return rows
