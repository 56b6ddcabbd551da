"""Triton kernel of megvii_targets (launcher only; targets carry no gradient).

One program per (sample, level, keypoint) map. The 1-D responses are the reference's own cached float32 tables
(reflect-101 folding of the cv2 profile, built in float64), so the kernel's map ``col[y] * (row[x] * scale)``
equals the reference exactly. The integer cells and validity come from the same torch expressions as the
reference, on the device, with no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from rsn_fast.ops._launch import record
from rsn_fast.ops.megvii_targets.reference import _stacked_responses


@triton.jit
def _megvii_kernel(
    rx_ptr,  # float32 (L, W, W): row p of level l is the 1-D response of a one-hot at p
    ry_ptr,  # float32 (L, H, H)
    xi_ptr,  # int64 (N, K) integer x cell (0 where invalid)
    yi_ptr,  # int64 (N, K)
    valid_ptr,  # int8 (N, K)
    out_ptr,  # float32 (N, L, K, H, W) contiguous
    L,
    K,
    W,
    H,
    CENTER: tl.constexpr,  # True: normalise by the value at the keypoint's cell, else by the global max
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    item = tl.program_id(0).to(tl.int64)  # (b, l, j) in output order
    j = item % K
    lvl = (item // K) % L
    b = item // (K * L)
    xi = tl.load(xi_ptr + b * K + j)
    yi = tl.load(yi_ptr + b * K + j)
    ok = tl.load(valid_ptr + b * K + j) != 0
    xs = tl.arange(0, BLOCK_W)
    ys = tl.arange(0, BLOCK_H)
    row = tl.load(rx_ptr + (lvl * W + xi) * W + xs, mask=xs < W, other=0.0)
    col = tl.load(ry_ptr + (lvl * H + yi) * H + ys, mask=ys < H, other=0.0)
    if CENTER:
        denom = tl.sum(tl.where(xs == xi, row, 0.0), axis=0) * tl.sum(tl.where(ys == yi, col, 0.0), axis=0)
    else:
        denom = tl.max(row, axis=0) * tl.max(col, axis=0)
    scale = (255.0 / denom) * tl.where(ok, 1.0, 0.0)
    srow = row * scale
    vals = col[:, None] * srow[None, :]
    offs = item * H * W + ys[:, None] * W + xs[None, :]
    tl.store(out_ptr + offs, vals, mask=(ys[:, None] < H) & (xs[None, :] < W))


def megvii_targets_triton(
    keypoints: torch.Tensor,
    weights: torch.Tensor,
    heatmap_size: Sequence[int],
    kernels: Sequence[int],
    normalize: str = "global_max",
) -> torch.Tensor:
    """Same arguments and result as :func:`rsn_fast.ops.megvii_targets.reference.megvii_targets_reference`."""
    if normalize not in ("global_max", "center"):
        raise ValueError(f"normalize must be 'global_max' or 'center', got {normalize!r}")
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be (N, K, 2), got {tuple(keypoints.shape)}")
    if weights.shape != keypoints.shape[:2]:
        raise ValueError(f"weights must be {tuple(keypoints.shape[:2])}, got {tuple(weights.shape)}")
    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    kernels = tuple(int(k) for k in kernels)
    dev = keypoints.device
    kp = keypoints.detach().to(torch.float64)
    valid = (weights.detach() > 0) & (kp[..., 0] >= 0) & (kp[..., 1] >= 0) & torch.isfinite(kp).all(-1)
    xi = torch.where(valid, kp[..., 0], torch.zeros_like(kp[..., 0])).floor().long()
    yi = torch.where(valid, kp[..., 1], torch.zeros_like(kp[..., 1])).floor().long()
    valid &= (xi < w) & (yi < h)
    xi = torch.where(valid, xi, torch.zeros_like(xi)).contiguous()
    yi = torch.where(valid, yi, torch.zeros_like(yi)).contiguous()
    n, k = weights.shape
    out = torch.empty((n, len(kernels), k, h, w), device=dev, dtype=torch.float32)
    if out.numel() == 0:
        return out
    rx = _stacked_responses(w, kernels, dev)
    ry = _stacked_responses(h, kernels, dev)
    record(_megvii_kernel, (n * len(kernels) * k,), maps=(n * len(kernels) * k, 1))  # one program per map
    _megvii_kernel[(n * len(kernels) * k,)](
        rx,
        ry,
        xi,
        yi,
        valid.to(torch.int8).contiguous(),
        out,
        len(kernels),
        k,
        w,
        h,
        CENTER=normalize == "center",
        BLOCK_H=triton.next_power_of_2(h),
        BLOCK_W=triton.next_power_of_2(w),
    )
    return out
