"""Megvii target heatmaps (RSN_SPEC 10.1, 16.7), batched, in plain torch.

The procedure being reproduced, per keypoint and kernel k: a one-hot map at (⌊y⌋, ⌊x⌋), then
``cv2.GaussianBlur(map, (k, k), 0)`` with cv2's default border (BORDER_REFLECT_101), then a rescale so that the
global max (OFF) or the value at the keypoint's pixel (MMPose 1.x) is 255.

The blur of a one-hot is separable and cv2's 2-D border extrapolation is per axis, so each map is the outer
product ``col[y] ⊗ row[x]`` of two 1-D responses. The 1-D response of a one-hot at p on a line of length n is
row ``p`` of an (n, n) matrix ``P`` that accumulates the profile taps after folding indices with reflect-101.
``P`` is built once per (n, k) and cached; a batch is then two gathers and one broadcast multiply, which is
much cheaper than ``conv2d`` over thousands of single-channel maps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

# cv2.getGaussianKernel(k, 0) uses fixed tables for small k instead of the sigma formula (checked in tests).
_SMALL_TABLES = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
    9: [4 / 256, 13 / 256, 30 / 256, 51 / 256, 60 / 256, 51 / 256, 30 / 256, 13 / 256, 4 / 256],
}


def gaussian_profile(k: int) -> np.ndarray:
    """The 1-D profile ``cv2.getGaussianKernel(k, 0)`` as float64 (k,), without calling OpenCV."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {k}")
    if k in _SMALL_TABLES:
        return np.asarray(_SMALL_TABLES[k], dtype=np.float64)
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    x = np.arange(k, dtype=np.float64) - (k - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma * sigma))
    return g / g.sum()


def reflect101(i: int, n: int) -> int:
    """cv2.borderInterpolate(i, n, BORDER_REFLECT_101) (folds repeatedly for offsets larger than n)."""
    if n == 1:
        return 0
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


@functools.lru_cache(maxsize=64)
def response_matrix(n: int, k: int) -> np.ndarray:
    """(n, n) float64: row p is the 1-D blur (kernel k, reflect-101 border) of a one-hot at p."""
    g = gaussian_profile(k)
    c = (k - 1) // 2
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(k):
            out[reflect101(i + j - c, n), i] += g[j]
    return out


_DEVICE_CACHE: dict[tuple, torch.Tensor] = {}


def _stacked_responses(n: int, kernels: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(L, n, n) float32 response matrices on ``device`` (cached)."""
    key = (n, kernels, str(device))
    t = _DEVICE_CACHE.get(key)
    if t is None:
        t = torch.from_numpy(np.stack([response_matrix(n, k) for k in kernels])).to(device, torch.float32)
        _DEVICE_CACHE[key] = t
    return t


def megvii_targets_reference(
    keypoints: torch.Tensor,
    weights: torch.Tensor,
    heatmap_size: Sequence[int],
    kernels: Sequence[int],
    normalize: str = "global_max",
) -> torch.Tensor:
    """Target heatmaps for every kernel.

    Args:
        keypoints: (N, K, 2) float, (x, y) in heatmap pixels (truncated to the integer grid).
        weights: (N, K); a map is all zero where the weight is 0.
        heatmap_size: (W, H).
        kernels: L odd blur sizes, e.g. [11, 9, 7, 5].
        normalize: "global_max" (peak = 255) or "center" (value at the keypoint's pixel = 255).

    Returns:
        (N, L, K, H, W) float32 on the keypoints' device, 0..255 (a "center" map can exceed 255 near borders).
        Zero where weight == 0, x < 0, y < 0, ⌊x⌋ >= W or ⌊y⌋ >= H.
    """
    if normalize not in ("global_max", "center"):
        raise ValueError(f"normalize must be 'global_max' or 'center', got {normalize!r}")
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be (N, K, 2), got {tuple(keypoints.shape)}")
    if weights.shape != keypoints.shape[:2]:
        raise ValueError(f"weights must be {tuple(keypoints.shape[:2])}, got {tuple(weights.shape)}")
    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    kernels = tuple(int(k) for k in kernels)
    device = keypoints.device
    kp = keypoints.detach().to(torch.float64)
    valid = (weights.detach() > 0) & (kp[..., 0] >= 0) & (kp[..., 1] >= 0)
    # Non-finite coordinates produce a zero map rather than an indexing error.
    valid &= torch.isfinite(kp).all(-1)
    xi = torch.where(valid, kp[..., 0], torch.zeros_like(kp[..., 0])).floor().long()
    yi = torch.where(valid, kp[..., 1], torch.zeros_like(kp[..., 1])).floor().long()
    valid &= (xi < w) & (yi < h)
    xi = torch.where(valid, xi, torch.zeros_like(xi))
    yi = torch.where(valid, yi, torch.zeros_like(yi))

    rx = _stacked_responses(w, kernels, device)  # (L, W, W)
    ry = _stacked_responses(h, kernels, device)  # (L, H, H)
    lidx = torch.arange(len(kernels), device=device)[None, :, None]  # (1, L, 1)
    xi, yi = xi[:, None, :], yi[:, None, :]  # (N, 1, K)
    rows = rx[lidx, xi]  # (N, L, K, W)
    cols = ry[lidx, yi]  # (N, L, K, H)
    if normalize == "global_max":
        denom = rows.amax(-1) * cols.amax(-1)
    else:
        denom = rx[lidx, xi, xi] * ry[lidx, yi, yi]
    scale = (255.0 / denom) * valid[:, None, :].to(rows.dtype)  # (N, L, K)
    rows = rows * scale[..., None]
    # One broadcast multiply straight into the (N, L, K, H, W) layout: no transposed copy of the big tensor.
    return cols[..., :, None] * rows[..., None, :]


def megvii_targets_cv2_loop(
    keypoints: np.ndarray,
    weights: np.ndarray,
    heatmap_size: Sequence[int],
    kernels: Sequence[int],
    normalize: str = "global_max",
) -> np.ndarray:
    """The per-keypoint cv2 procedure (OFF ``generate_heatmap``); the specification the batched op must match.

    Used by tests and benchmarks only. Shapes as :func:`megvii_targets_reference`, numpy in and out.
    """
    import cv2

    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    n, k = weights.shape
    out = np.zeros((n, len(kernels), k, h, w), dtype=np.float32)
    for b in range(n):
        for j in range(k):
            x, y = float(keypoints[b, j, 0]), float(keypoints[b, j, 1])
            if weights[b, j] <= 0 or not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0:
                continue
            xi, yi = int(x), int(y)
            if xi >= w or yi >= h:
                continue
            for li, ks in enumerate(kernels):
                m = np.zeros((h, w), dtype=np.float32)
                m[yi, xi] = 1.0
                m = cv2.GaussianBlur(m, (ks, ks), 0)
                peak = m.max() if normalize == "global_max" else m[yi, xi]
                out[b, li, j] = m * (255.0 / peak)
    return out
