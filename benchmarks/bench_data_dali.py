"""Data pipeline throughput: the DALI twin (``dali-cpu``, ``dali-gpu``) against the torch DataLoader pipeline.

``python -m benchmarks.bench_data_dali [--root DIR] [--input 192x256] [--threads 2] [--batch-size 48]
[--batches 10] [--providers torch dali-cpu dali-gpu]``

Images/s of decode + augmentation (official recipe: scale, rotation, flip, half body) + normalisation + batched
targets, training split, at equal worker/thread counts (torch: ``data.workers``, DALI: ``data.dali.threads``).
Without ``--root`` a synthetic set of 640×480 JPEGs is generated in a temporary folder. ``dali-gpu`` needs a
CUDA GPU and DALI; providers that cannot run are reported as skipped. Appends CSV rows to
``benchmarks/results/<device>/bench_data.csv``. ``benchmarks.bench_data`` calls :func:`run_providers`.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import subprocess
import tempfile
import time

import cv2
import torch

from rsn_fast.config import load_config
from rsn_fast.data import build_dataloader
from rsn_fast.data.synthetic import generate

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
    from types import SimpleNamespace

    from rsn_fast.data.dali import dali_options

    opts = dali_options(cfg.data)
    opts.device, opts.threads = device, threads
    if getattr(cfg.data, "dali", None) is not None:
        for k, v in vars(opts).items():
            setattr(cfg.data.dali, k, v)
    else:  # a config without the data.dali section yet
        cfg.data.dali = SimpleNamespace(**vars(opts))


def bench_provider(
    provider: str, root: str, input_size: tuple[int, int], threads: int, batch_size: int, batches: int
) -> float:
    """Images/s of ``provider`` over ``batches`` training batches (after one warm-up batch)."""
    cfg = _cfg(root, input_size, threads, batch_size)
    if provider == "torch":
        loader, _ = build_dataloader(cfg, "train", seed=0)
    else:
        from rsn_fast.data.dali import build_dali_loader

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


def _git_sha() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=None, help="a COCO-format folder like the synthetic set's")
    ap.add_argument("--input", default="192x256", help="input W x H")
    ap.add_argument("--threads", type=int, default=2, help="torch loader workers = DALI threads")
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--images", type=int, default=150, help="synthetic images to generate (without --root)")
    ap.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    a = ap.parse_args()
    input_size = tuple(int(v) for v in a.input.split("x"))
    torch.set_num_threads(1)  # targets in the main process; the workers/threads do the decoding
    # Before anything uses cv2: a forked loader worker calling cv2.setNumThreads (its worker_init) hangs when
    # the parent's cv2 thread pool was already running (seen here after generating the synthetic set).
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = a.root
        if root is None:
            root = tmp
            generate(tmp, a.images, 4, seed=0, width=640, height=480)
        rows = run_providers(a.providers, root, input_size, a.threads, a.batch_size, a.batches)
    print(f"| bench | case | result |  ({os.cpu_count()} CPUs)")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    device = torch.cuda.get_device_name(0).replace(" ", "_") if torch.cuda.is_available() else "cpu"
    out_dir = os.path.join(os.path.dirname(__file__), "results", device)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_data.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        wr = csv.writer(f)
        if new:
            wr.writerow(["date", "git", "host", "cpus", "torch", "bench", "case", "result"])
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        for r in rows:
            wr.writerow([stamp, _git_sha(), platform.node(), os.cpu_count(), torch.__version__, *r])


if __name__ == "__main__":
    main()
