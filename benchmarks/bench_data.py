"""Data pipeline throughput and batched targets vs the per-keypoint cv2 loop.

``python -m benchmarks.bench_data [--root DIR] [--input 192x256] [--workers 1 2 4] [--batches 20]``

Without ``--root`` a synthetic set is generated in a temporary folder. Measures images/s of the training
pipeline (decode + augmentation + normalisation + batched targets, through the DataLoader) per worker count, and
the median time of ``megvii_targets`` against ``megvii_targets_cv2_loop`` for one batch. Prints a markdown table
and appends CSV rows to ``benchmarks/results/<device>/bench_data.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch

from rsn_fast.config import load_config
from rsn_fast.data import build_dataloader
from rsn_fast.data.synthetic import generate
from rsn_fast.ops.megvii_targets import megvii_targets, megvii_targets_cv2_loop


def _git_sha() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"


def bench_loader(
    root: str, input_size: tuple[int, int], workers: int, batches: int, batch_size: int
) -> float:
    cfg = load_config(
        {
            "data": {
                "root": root,
                "train_ann": "annotations/person_keypoints_train.json",
                "val_ann": "annotations/person_keypoints_val.json",
                "train_img_dir": "images",
                "val_img_dir": "images",
                "workers": workers,
                "batch_size": batch_size,
                "recipe": "paper",
            },
            "model": {"input_size": list(input_size)},
        }
    )
    loader, _ = build_dataloader(cfg, "train", seed=0)
    it = iter(loader)
    next(it)  # start-up (worker spawn, first prefetch) is not throughput
    n = 0
    t = time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        n += b["image"].shape[0]
    return n / (time.perf_counter() - t)


def bench_targets(
    n: int, k: int, heatmap: tuple[int, int], kernels: list[int], repeats: int
) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    kp = np.stack([rng.uniform(0, heatmap[0], (n, k)), rng.uniform(0, heatmap[1], (n, k))], -1).astype(
        np.float32
    )
    w = rng.integers(0, 3, (n, k)).astype(np.float32)
    kt, wt = torch.from_numpy(kp), torch.from_numpy(w)
    megvii_targets(kt, wt, heatmap, kernels)
    t_batched, t_loop = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        megvii_targets(kt, wt, heatmap, kernels)
        t_batched.append(time.perf_counter() - t)
        t = time.perf_counter()
        megvii_targets_cv2_loop(kp, w, heatmap, kernels)
        t_loop.append(time.perf_counter() - t)
    return statistics.median(t_batched), statistics.median(t_loop)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=None, help="a COCO-format folder like the synthetic set's")
    ap.add_argument("--input", default="192x256", help="input W x H")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--providers",
        nargs="+",
        default=["torch", "dali-cpu", "dali-gpu"],
        help="torch (DataLoader workers) and the DALI twin on CPU/GPU (benchmarks/bench_data_dali.py)",
    )
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads for the target timing (workers use 1)"
    )
    a = ap.parse_args()
    input_size = tuple(int(v) for v in a.input.split("x"))
    heatmap = (input_size[0] // 4, input_size[1] // 4)
    torch.set_num_threads(a.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = a.root
        if root is None:
            root = tmp
            generate(tmp, 160, 4, seed=0, width=640, height=480)
        if "torch" in a.providers:
            for w in a.workers:
                ips = bench_loader(root, input_size, w, a.batches, a.batch_size)
                rows.append(("loader", f"workers={w}", f"{ips:.1f} img/s"))
        dali = [p for p in a.providers if p.startswith("dali")]
        if dali:
            from benchmarks.bench_data_dali import run_providers

            # DALI threads = the largest worker count, so both pipelines get the same CPU share.
            rows += run_providers(dali, root, input_size, max(a.workers), a.batch_size, a.batches)
    for kernels in ([11, 9, 7, 5], [15, 11, 9, 7, 5]):
        tb, tl = bench_targets(a.batch_size, 17, heatmap, kernels, a.repeats)
        rows.append(
            (
                "targets",
                f"N={a.batch_size} K=17 L={len(kernels)} {heatmap[0]}x{heatmap[1]}",
                f"batched {tb * 1e3:.2f} ms",
            )
        )
        rows.append(
            (
                "targets",
                f"N={a.batch_size} K=17 L={len(kernels)} {heatmap[0]}x{heatmap[1]}",
                f"cv2 loop {tl * 1e3:.2f} ms ({tl / tb:.1f}x)",
            )
        )
    print(f"| bench | case | result |  (input {input_size[0]}x{input_size[1]}, {os.cpu_count()} CPUs)")
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
        for r in rows:
            wr.writerow(
                [datetime.datetime.now().isoformat(timespec="seconds"), _git_sha(), platform.node(),
                 os.cpu_count(), torch.__version__, *r]
            )  # fmt: skip


if __name__ == "__main__":
    main()
