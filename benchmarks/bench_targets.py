"""Benchmark target heatmaps: ``megvii_targets`` (batch 48 x 17 keypoints x 4 kernels) and ``gaussian_targets``.

Providers: ``loop`` (the per-keypoint cv2 / NumPy procedure, as the data loaders of the reference codebases run
it), ``reference`` (batched torch on the CPU), ``cpp`` (C++ CPU kernel), ``reference_gpu``, ``triton``
(megvii only), ``cuda``.

    python -m benchmarks.bench_targets              # 48 x 17 x [11, 9, 7, 5] at 64x48 (and 96x72)
    python -m benchmarks.bench_targets --quick      # device suite: 64x48, GPU providers
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from benchmarks.common import (
    base_parser,
    copy_bandwidth_gbs,
    cuda_ext_usable,
    environment,
    make_row,
    markdown_table,
    pick,
    time_ms,
    triton_usable,
    write_csv,
)
from rsn_fast.ops.gaussian_targets import gaussian_targets, gaussian_targets_numpy_loop
from rsn_fast.ops.megvii_targets import megvii_targets, megvii_targets_cv2_loop

KERNELS = [11, 9, 7, 5]
SIGMA = 2.0


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--shapes", default=None, help="comma list of HxW heatmap sizes")
    args = p.parse_args()
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    default = ["loop", "reference", "cpp"] + (["reference_gpu", "triton", "cuda"] if gpu else [])
    providers = pick(args.providers, ["reference_gpu", "triton", "cuda"] if args.quick and gpu else default)
    modes = pick(args.modes, ["megvii", "gaussian"])
    shapes = [
        tuple(int(v) for v in s.split("x"))
        for s in pick(args.shapes, ["64x48"] if args.quick else ["64x48", "96x72"])
    ]
    env = environment(dev)
    copy_gbs = copy_bandwidth_gbs(dev)
    print(
        f"# {env['GPU']}, torch {env['torch']}, CPU threads {torch.get_num_threads()}; copy bandwidth {copy_gbs:.0f} GB/s"
    )
    rng = np.random.default_rng(0)
    n, k = args.batch, 17
    rows = []
    for h, w in shapes:
        kp = np.stack([rng.uniform(0, w, (n, k)), rng.uniform(0, h, (n, k))], -1).astype(np.float32)
        wt = rng.integers(1, 3, (n, k)).astype(np.float32)
        kp_c, wt_c = torch.from_numpy(kp), torch.from_numpy(wt)
        kp_d, wt_d = kp_c.to(dev), wt_c.to(dev)
        for mode in modes:
            levels = len(KERNELS) if mode == "megvii" else 1
            shape = f"B{n}xK{k}" + (f"xL{levels}" if mode == "megvii" else f"xs{SIGMA:g}") + f"x{h}x{w}"
            nbytes = n * levels * k * h * w * 4
            for prov in providers:
                if prov == "cuda" and (why := cuda_ext_usable(dev, f"{mode}_targets")):
                    print(f"# skip cuda: {why}")
                    continue
                if prov == "triton" and (mode != "megvii" or (why := triton_usable(dev))):
                    print(f"# skip triton for {mode}: {why if mode == 'megvii' else 'no Triton kernel'}")
                    continue
                if mode == "megvii":
                    loop = partial(megvii_targets_cv2_loop, kp, wt, (w, h), KERNELS)
                    op = partial(megvii_targets, heatmap_size=(w, h), kernels=KERNELS)
                else:
                    loop = partial(gaussian_targets_numpy_loop, kp, wt, (w, h), SIGMA)
                    op = partial(gaussian_targets, heatmap_size=(w, h), sigma=SIGMA)
                if prov == "loop":
                    ms = time_ms(loop, "cpu", warmup=1, reps=5)
                elif prov in ("reference", "cpp"):
                    ms = time_ms(partial(op, kp_c, wt_c, backend=prov), "cpu", warmup=2, reps=10)
                else:
                    backend = "reference" if prov == "reference_gpu" else prov
                    ms = time_ms(partial(op, kp_d, wt_d, backend=backend), dev, warmup=5, reps=30)
                rows.append(
                    make_row(env, f"{mode}_targets", prov, "fwd", shape, "fp32", ms, nbytes, copy_gbs)
                )
    print(markdown_table(rows, speedup_vs="loop" if "loop" in providers else "reference_gpu"))
    if not args.no_csv:
        print(f"# wrote {write_csv(rows, 'targets', dev)}")


if __name__ == "__main__":
    main()
