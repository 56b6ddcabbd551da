"""The compiled gaussian_targets (``torch.ops.rsn_fast.gaussian_targets``: C++ on CPU, CUDA on GPU) + fake rule."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rsn_fast import _ext
from rsn_fast.ops._dispatch import cuda_op

OP = "rsn_fast::gaussian_targets"


def gaussian_targets_compiled(
    keypoints: torch.Tensor,
    weights: torch.Tensor,
    heatmap_size: Sequence[int],
    sigma: float,
    *,
    _cuda: bool = False,
) -> torch.Tensor:
    """Calls the compiled op (arguments and result as :func:`rsn_fast.ops.gaussian_targets`)."""
    op = cuda_op("gaussian_targets") if _cuda else torch.ops.rsn_fast.gaussian_targets
    return op(keypoints, weights, int(heatmap_size[0]), int(heatmap_size[1]), float(sigma))


def gaussian_targets_cuda(keypoints, weights, heatmap_size, sigma) -> torch.Tensor:
    """The CUDA kernel (the emulated one on CPU tensors in a CUDA emulation build)."""
    return gaussian_targets_compiled(keypoints, weights, heatmap_size, sigma, _cuda=True)


def _fake(keypoints, weights, width, height, sigma):
    n, k = keypoints.shape[:2]
    return keypoints.new_empty((n, k, height, width), dtype=torch.float32)


_registered = False


def register() -> bool:
    """Registers the fake rule once; False when the extension (and so the op) is missing."""
    global _registered
    if _registered:
        return True
    if not _ext.extension_available() or not hasattr(torch.ops.rsn_fast, "gaussian_targets"):
        return False
    torch.library.register_fake(OP)(_fake)
    if _ext.extension_is_emulation():
        torch.library.register_fake(OP + "_emulated_cuda")(_fake)
    _registered = True
    return True
