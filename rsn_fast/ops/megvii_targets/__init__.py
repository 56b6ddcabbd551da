"""``megvii_targets``: batched Megvii target heatmaps (RSN_SPEC 10.1, 16.7).

Backends, tried in this order: ``cuda`` (csrc kernel, CUDA tensors), ``cpp`` (csrc C++ kernel, CPU tensors),
``triton`` (GPUs with compute capability >= 8.0, or CPU under TRITON_INTERPRET=1 when the extension is missing),
``reference`` (batched torch, the specification). The compiled kernels share ``torch.ops.rsn_fast.megvii_targets``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch

from rsn_fast.ops._dispatch import Backend, Dispatcher, cpp_reasons, cuda_reasons, register, triton_reasons
from rsn_fast.ops.megvii_targets import cpp as _cpp
from rsn_fast.ops.megvii_targets.reference import (
    gaussian_profile,
    megvii_targets_cv2_loop,
    megvii_targets_reference,
)

__all__ = ["megvii_targets", "megvii_targets_reference", "megvii_targets_cv2_loop", "gaussian_profile"]


_COMPILED_READY = _cpp.register()


def _reference_reasons(*args, **kwargs) -> list[str]:
    return []


def _cuda_reasons(keypoints, weights, heatmap_size, kernels, normalize="global_max") -> list[str]:
    why = cuda_reasons([keypoints, weights], "megvii_targets")
    if len(kernels) > _cpp.MAX_CUDA_KERNELS:
        why.append(f"{len(kernels)} kernels > {_cpp.MAX_CUDA_KERNELS} (the CUDA kernel's limit)")
    return why


def _triton_reasons(keypoints, weights, heatmap_size, kernels, normalize="global_max") -> list[str]:
    return triton_reasons([keypoints, weights])


def _triton_fn(*args, **kwargs):
    # imported lazily: `import rsn_fast` must not need triton
    return importlib.import_module("rsn_fast.ops.megvii_targets.triton").megvii_targets_triton(
        *args, **kwargs
    )


def _cpp_reasons(keypoints, weights, heatmap_size, kernels, normalize="global_max") -> list[str]:
    return cpp_reasons([keypoints, weights], "megvii_targets")


_DISPATCH = register(
    Dispatcher(
        "megvii_targets",
        [
            Backend("cuda", _cpp.megvii_targets_cuda, _cuda_reasons),
            Backend("cpp", _cpp.megvii_targets_compiled, _cpp_reasons),
            Backend("triton", _triton_fn, _triton_reasons),
            Backend("reference", megvii_targets_reference, _reference_reasons),
        ],
        auto_order=("cuda", "cpp", "triton", "reference"),
    ),
    lambda device: (
        torch.tensor([[[10.3, 7.9], [0.5, 0.5], [-1.0, 3.0]]], device=device),
        torch.tensor([[2.0, 1.0, 2.0]], device=device),
        (48, 64),
        (11, 9, 7, 5),
    ),
)


def megvii_targets(
    keypoints: torch.Tensor,
    weights: torch.Tensor,
    heatmap_size: Sequence[int],
    kernels: Sequence[int],
    normalize: str = "global_max",
    backend: str | None = None,
) -> torch.Tensor:
    """Target heatmaps for every kernel: (N, K, 2) heatmap-pixel keypoints → (N, L, K, H, W) float32, 0..255.

    Args:
        keypoints: (N, K, 2) (x, y) in heatmap pixels; the one-hot sits at the truncated position.
        weights: (N, K); zero weight gives a zero map (as do x < 0, y < 0, ⌊x⌋ >= W, ⌊y⌋ >= H).
        heatmap_size: (W, H).
        kernels: L odd blur sizes (``cv2.getGaussianKernel(k, 0)`` profiles, reflect-101 border).
        normalize: "global_max" (OFF, peak 255) or "center" (MMPose 1.x, value at the keypoint's pixel 255).
        backend: "cuda", "cpp", "triton" or "reference"; None: RSN_FAST_BACKEND, then cuda → cpp → triton →
            reference.
    """
    return _DISPATCH(keypoints, weights, heatmap_size, kernels, normalize=normalize, backend=backend)
