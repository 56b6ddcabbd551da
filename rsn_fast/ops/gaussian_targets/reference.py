"""Unnormalised Gaussian target heatmaps (MMPose 1.x ``MSRAHeatmap`` with ``unbiased=False``), batched torch.

Per keypoint, MMPose's ``generate_gaussian_heatmaps``: skip when the visibility weight is < 0.5; centre
``m = int(keypoint + 0.5)`` (truncation, as ``astype(int64)``); radius ``3σ``; a patch of ``ceil(2·radius + 1)``
cells whose centre cell is ``floor((2·radius + 1) / 2)``, placed with its left/top at ``int(m − radius)`` and cut at
``int(m + radius + 1)`` and at the map; skip when the patch misses the map. Values
``exp(−((gx − c)² + (gy − c)²) / (2σ²))`` in float32, peak 1. Non-finite keypoints give a zero map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def gaussian_targets_reference(
    keypoints: torch.Tensor, weights: torch.Tensor, heatmap_size: Sequence[int], sigma: float
) -> torch.Tensor:
    """Gaussian target heatmaps.

    Args:
        keypoints: (N, K, 2) (x, y) in heatmap pixels.
        weights: (N, K) visibility; < 0.5 gives a zero map.
        heatmap_size: (W, H).
        sigma: Gaussian σ in heatmap pixels (> 0).
    Returns:
        (N, K, H, W) float32 on the keypoints' device, peak 1.
    """
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be (N, K, 2), got {tuple(keypoints.shape)}")
    if weights.shape != keypoints.shape[:2]:
        raise ValueError(f"weights must be {tuple(keypoints.shape[:2])}, got {tuple(weights.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    dev = keypoints.device
    kp = keypoints.detach().to(torch.float32)
    radius = sigma * 3
    full = 2 * radius + 1
    size = math.ceil(full)
    center = float(math.floor(full / 2))
    finite = torch.isfinite(kp).all(-1)
    kp = torch.where(finite[..., None], kp, torch.zeros_like(kp))
    mu = torch.trunc(kp + 0.5).to(torch.float64)  # float32 add, then astype(int64)
    lo = torch.trunc(mu - radius).long()  # (N, K, 2): left, top
    hi = torch.trunc(mu + radius + 1).long()  # right, bottom
    valid = (weights.detach() >= 0.5) & finite
    valid &= (lo[..., 0] < w) & (lo[..., 1] < h) & (hi[..., 0] >= 0) & (hi[..., 1] >= 0)

    def axis(n: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(n, device=dev)
        g = pos - lo[..., i, None]  # patch cell of each heatmap cell, (N, K, n)
        inside = (g >= 0) & (g < size) & (pos < hi[..., i, None])
        d = g.to(torch.float32) - center
        return d * d, inside

    dx2, inx = axis(w, 0)
    dy2, iny = axis(h, 1)
    val = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma**2))
    keep = iny[..., :, None] & inx[..., None, :] & valid[..., None, None]
    return torch.where(keep, val, torch.zeros_like(val))


def gaussian_targets_numpy_loop(
    keypoints, weights, heatmap_size: Sequence[int], sigma: float
):  # pragma: no cover - exercised by tests and benchmarks
    """MMPose's per-keypoint NumPy procedure (written from its description), for tests and benchmarks."""
    import numpy as np

    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    n, k = weights.shape
    out = np.zeros((n, k, h, w), dtype=np.float32)
    radius = sigma * 3
    gsize = 2 * radius + 1
    x = np.arange(0, gsize, 1, dtype=np.float32)
    y = x[:, None]
    x0 = y0 = gsize // 2
    gaussian = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
    for b in range(n):
        for j in range(k):
            if not weights[b, j] >= 0.5 or not np.isfinite(keypoints[b, j]).all():
                continue
            mu = (keypoints[b, j] + 0.5).astype(np.int64)
            left, top = (mu - radius).astype(np.int64)
            right, bottom = (mu + radius + 1).astype(np.int64)
            if left >= w or top >= h or right < 0 or bottom < 0:
                continue
            gx1, gx2 = max(0, -left), min(w, right) - left
            gy1, gy2 = max(0, -top), min(h, bottom) - top
            hx1, hx2 = max(0, left), min(w, right)
            hy1, hy2 = max(0, top), min(h, bottom)
            out[b, j, hy1:hy2, hx1:hx2] = np.maximum(out[b, j, hy1:hy2, hx1:hx2], gaussian[gy1:gy2, gx1:gx2])
    return out
