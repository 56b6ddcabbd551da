"""Benchmark heatmap decoding (``rsn_fast.ops.decode_heatmaps``, mode "rsn" unless --modes says otherwise).

Providers: ``loop`` (the per-keypoint NumPy/cv2 procedure of RSN_SPEC §12.1, as the reference codebases run it),
``reference`` (batched torch on the CPU), ``cpp`` (the fused C++ CPU kernel), ``reference_gpu`` (batched torch on
the GPU), ``triton``, ``cuda``. CPU providers run on CPU tensors whatever --device says; GPU ones need a GPU.

    python -m benchmarks.bench_decode                 # GPU if present: N=1024, 8192; else CPU: N=256
    python -m benchmarks.bench_decode --device cpu --n 256 --shapes 64x48
    python -m benchmarks.bench_decode --quick         # device suite: N=8192, 64x48, flip, fp16 + fp32
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from benchmarks.common import (
    DTYPES,
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
from rsn_fast.ops.decode_heatmaps import decode_heatmaps

COCO_FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
INPUT = {(64, 48): (192, 256), (96, 72): (288, 384)}  # heatmap (H, W) -> input (W, H)


def numpy_cv2_loop(hm, flipped, centers, boxes, input_size, k=5):
    """RSN's decoder one keypoint at a time (float64 padded maps, cv2 blur, two argmax, quarter offset)."""
    import cv2

    if flipped is not None:
        back = flipped[:, :, :, ::-1].copy()
        for i, j in COCO_FLIP_PAIRS:
            back[:, [i, j]] = back[:, [j, i]]
        hm = (hm + back) * 0.5
    n, kk, h, w = hm.shape
    sx, sy = input_size[0] / w, input_size[1] / h
    out = np.zeros((n, kk, 2))
    scores = np.zeros((n, kk))
    border = 10
    for i in range(n):
        for j in range(kk):
            dr = np.zeros((h + 2 * border, w + 2 * border))
            dr[border:-border, border:-border] = hm[i, j]
            dr = cv2.GaussianBlur(dr, (k, k), 0)
            y, x = np.unravel_index(dr.argmax(), dr.shape)
            dr[y, x] = 0
            py, px = np.unravel_index(dr.argmax(), dr.shape)
            x, y = int(x) - border, int(y) - border
            px, py = int(px) - border - x, int(py) - border - y
            ln = (px * px + py * py) ** 0.5
            if ln > 1e-3:
                x, y = x + 0.25 * px / ln, y + 0.25 * py / ln
            x, y = max(0, min(x, w - 1)), max(0, min(y, h - 1))
            scores[i, j] = hm[i, j, int(round(y)), int(round(x))] / 255 + 0.5
            xi, yi = x * sx + sx / 2, y * sy + sy / 2
            out[i, j, 0] = xi / input_size[0] * boxes[i, 0] + centers[i, 0] - boxes[i, 0] * 0.5
            out[i, j, 1] = yi / input_size[1] * boxes[i, 1] + centers[i, 1] - boxes[i, 1] * 0.5
    return out, scores


def _maps(n, k, h, w, device, dtype, gen):
    yy = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1)
    xx = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w)
    cx = torch.rand(n, k, 1, 1, device=device, generator=gen) * w
    cy = torch.rand(n, k, 1, 1, device=device, generator=gen) * h
    m = 255 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0)
    return (m + torch.rand(m.shape, device=device, generator=gen) * 3).to(dtype)


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", default=None, help="comma list of batch sizes")
    p.add_argument("--shapes", default=None, help="comma list of HxW heatmap sizes (64x48, 96x72)")
    p.add_argument("--flip", default="no,yes", help="comma list of no,yes")
    args = p.parse_args()
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    all_providers = ["loop", "reference", "cpp"] + (["reference_gpu", "triton", "cuda"] if gpu else [])
    providers = pick(args.providers, ["reference_gpu", "cuda", "triton"] if args.quick else all_providers)
    modes = pick(args.modes, ["rsn"])
    ns = [int(v) for v in pick(args.n, ["8192"] if args.quick else (["1024", "8192"] if gpu else ["256"]))]
    shapes = [
        tuple(int(v) for v in s.split("x"))
        for s in pick(args.shapes, ["64x48"] if args.quick else ["64x48", "96x72"])
    ]
    flips = pick(args.flip, ["yes"] if args.quick else ["no", "yes"])
    dtypes = pick(
        args.dtypes, ["fp16", "fp32"] if args.quick else (["fp32", "fp16", "bf16"] if gpu else ["fp32"])
    )
    env = environment(dev)
    copy_gbs = copy_bandwidth_gbs(dev)
    print(
        f"# {env['GPU']}, torch {env['torch']}, CPU threads {torch.get_num_threads()}; copy bandwidth {copy_gbs:.0f} GB/s"
    )
    gen_dev = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for mode in modes:
        for n in ns:
            for h, w in shapes:
                insz = INPUT.get((h, w), (4 * w, 4 * h))
                for flip in flips:
                    for dname in dtypes:
                        dt = DTYPES[dname]
                        hm = _maps(n, 17, h, w, dev, dt, gen_dev)
                        fl = _maps(n, 17, h, w, dev, dt, gen_dev) if flip == "yes" else None
                        c = torch.rand(n, 2, device=dev) * 500
                        b = torch.rand(n, 2, device=dev) * 300 + 50
                        pairs = COCO_FLIP_PAIRS if fl is not None else None
                        hm_c, fl_c, c_c, b_c = (None if t is None else t.cpu() for t in (hm, fl, c, b))
                        shape = f"N{n}xK17x{h}x{w}" + ("+flip" if fl is not None else "")
                        nbytes = hm.numel() * hm.element_size() * (2 if fl is not None else 1)
                        for prov in providers:
                            if prov == "loop" and (mode != "rsn" or dname != "fp32"):
                                continue
                            if prov == "triton" and (why := triton_usable(dev)):
                                print(f"# skip triton: {why}")
                                continue
                            if prov == "cuda" and (why := cuda_ext_usable(dev, "decode_heatmaps")):
                                print(f"# skip cuda: {why}")
                                continue
                            if prov == "loop":
                                fl_np = None if fl_c is None else fl_c.float().numpy()
                                fn = partial(
                                    numpy_cv2_loop,
                                    hm_c.float().numpy(),
                                    fl_np,
                                    c_c.numpy(),
                                    b_c.numpy(),
                                    insz,
                                )
                                ms = time_ms(fn, "cpu", warmup=1, reps=3)
                            elif prov in ("reference", "cpp"):
                                fn = partial(
                                    decode_heatmaps,
                                    hm_c,
                                    c_c,
                                    b_c,
                                    insz,
                                    mode,
                                    flipped=fl_c,
                                    flip_pairs=pairs,
                                    backend=prov,
                                )
                                ms = time_ms(fn, "cpu", warmup=1, reps=3 if prov == "reference" else 10)
                            else:
                                backend = "reference" if prov == "reference_gpu" else prov
                                fn = partial(
                                    decode_heatmaps,
                                    hm,
                                    c,
                                    b,
                                    insz,
                                    mode,
                                    flipped=fl,
                                    flip_pairs=pairs,
                                    backend=backend,
                                )
                                ms = time_ms(fn, dev, warmup=3, reps=10 if args.quick else 30)
                            rows.append(
                                make_row(
                                    env, f"decode_{mode}", prov, "fwd", shape, dname, ms, nbytes, copy_gbs
                                )
                            )
    print(markdown_table(rows, speedup_vs="loop" if "loop" in providers else "reference_gpu"))
    if not args.no_csv:
        print(f"# wrote {write_csv(rows, 'decode_heatmaps', dev)}")


if __name__ == "__main__":
    main()
