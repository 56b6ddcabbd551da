"""``rsn_fast.ops.decode_heatmaps``: heatmaps → image-pixel keypoints and scores (RSN_SPEC.md §12, §16.4).

Backends: ``reference`` (batched torch, any device and dtype). Fused Triton/CUDA/C++ kernels will register here
behind the same function (issue 7) and must match the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rsn_fast.ops._dispatch import Backend, Dispatcher, register
from rsn_fast.ops.decode_heatmaps.reference import MODES, decode_heatmaps_reference

__all__ = ["MODES", "decode_heatmaps", "decode_heatmaps_reference"]


def _reference_reasons(*args, **kwargs) -> list[str]:
    return []


def _example_inputs(device: torch.device) -> tuple:
    n, k, h, w = 2, 17, 64, 48
    heatmaps = torch.rand(n, k, h, w, device=device) * 255
    centers = torch.tensor([[100.0, 120.0], [300.0, 200.0]], device=device)
    box_sizes = torch.tensor([[150.0, 200.0], [90.0, 120.0]], device=device)
    return heatmaps, centers, box_sizes, (192, 256)


_dispatcher = register(
    Dispatcher("decode_heatmaps", [Backend("reference", decode_heatmaps_reference, _reference_reasons)]),
    _example_inputs,
)


def decode_heatmaps(
    heatmaps: torch.Tensor,
    centers: torch.Tensor,
    box_sizes: torch.Tensor,
    input_size: Sequence[float],
    mode: str = "rsn",
    blur_kernel: int = 5,
    flipped: torch.Tensor | None = None,
    flip_pairs: Sequence | None = None,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode keypoints from heatmaps, optionally averaging with the flip-test heatmaps.

    Args:
        heatmaps: (N, K, H, W) heatmaps (RSN: 0..255 scale).
        centers: (N, 2) box centres, image pixels.
        box_sizes: (N, 2) box (w, h), image pixels, after extension and aspect fit (not /200).
        input_size: (W_in, H_in) of the network input.
        mode: "rsn" (official RSN, §12.1), "megvii" (MMPose MegviiHeatmap), "standard" (MMPose MSRAHeatmap),
            "dark" (MMPose MSRAHeatmap, unbiased=True).
        blur_kernel: odd Gaussian kernel size (cv2.getGaussianKernel(k, 0) profile).
        flipped: optional (N, K, H, W) raw heatmaps of the horizontally mirrored input.
        flip_pairs: (i, j) left/right channel pairs; required with ``flipped``.
        backend: force a backend (default: RSN_FAST_BACKEND, then automatic).
    Returns:
        coords (N, K, 2) in image pixels and scores (N, K); float64 for float64 heatmaps, else float32.
    """
    return _dispatcher(
        heatmaps,
        centers,
        box_sizes,
        input_size,
        mode=mode,
        blur_kernel=blur_kernel,
        flipped=flipped,
        flip_pairs=flip_pairs,
        backend=backend,
    )
