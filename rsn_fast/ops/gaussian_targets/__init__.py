"""``gaussian_targets``: unnormalised Gaussian target heatmaps (MMPose MSRAHeatmap, σ given) for other heatmap
models. Backends: ``cuda`` → ``cpp`` → ``reference`` (batched torch, the specification).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rsn_fast.ops._dispatch import Backend, Dispatcher, cpp_reasons, cuda_reasons, register
from rsn_fast.ops.gaussian_targets import cpp as _cpp
from rsn_fast.ops.gaussian_targets.reference import gaussian_targets_numpy_loop, gaussian_targets_reference

__all__ = ["gaussian_targets", "gaussian_targets_reference", "gaussian_targets_numpy_loop"]

_COMPILED_READY = _cpp.register()

_DISPATCH = register(
    Dispatcher(
        "gaussian_targets",
        [
            Backend(
                "cuda",
                _cpp.gaussian_targets_cuda,
                lambda kp, wt, *a, **k: cuda_reasons([kp, wt], "gaussian_targets"),
            ),
            Backend(
                "cpp",
                _cpp.gaussian_targets_compiled,
                lambda kp, wt, *a, **k: cpp_reasons([kp, wt], "gaussian_targets"),
            ),
            Backend("reference", gaussian_targets_reference, lambda *a, **k: []),
        ],
        auto_order=("cuda", "cpp", "reference"),
    ),
    lambda device: (
        torch.tensor([[[10.3, 7.9], [0.5, 0.5], [-1.0, 3.0]]], device=device),
        torch.tensor([[2.0, 1.0, 2.0]], device=device),
        (48, 64),
        2.0,
    ),
)


def gaussian_targets(
    keypoints: torch.Tensor,
    weights: torch.Tensor,
    heatmap_size: Sequence[int],
    sigma: float,
    backend: str | None = None,
) -> torch.Tensor:
    """Unnormalised Gaussian targets: (N, K, 2) heatmap-pixel keypoints → (N, K, H, W) float32, peak 1.

    Args:
        keypoints: (N, K, 2) (x, y) in heatmap pixels.
        weights: (N, K) visibility; < 0.5 gives a zero map (as do patches that miss the map).
        heatmap_size: (W, H).
        sigma: σ in heatmap pixels.
        backend: "cuda", "cpp" or "reference"; None: RSN_FAST_BACKEND, then cuda → cpp → reference.
    """
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be (N, K, 2), got {tuple(keypoints.shape)}")
    if weights.shape != keypoints.shape[:2]:
        raise ValueError(f"weights must be {tuple(keypoints.shape[:2])}, got {tuple(weights.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return _DISPATCH(keypoints, weights, heatmap_size, sigma, backend=backend)
