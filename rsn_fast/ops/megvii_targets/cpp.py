"""The compiled megvii_targets (``torch.ops.rsn_fast.megvii_targets``: C++ on CPU tensors, CUDA on GPU tensors).

Registers the fake (meta) rule when ``rsn_fast._C`` loaded, so torch.compile can trace the op. Targets carry no
gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rsn_fast import _ext

OP = "rsn_fast::megvii_targets"
MAX_CUDA_KERNELS = 8  # csrc/megvii_targets/megvii_targets_cuda.h kMaxTargetKernels


def megvii_targets_compiled(
    keypoints: torch.Tensor,
    weights: torch.Tensor,
    heatmap_size: Sequence[int],
    kernels: Sequence[int],
    normalize: str = "global_max",
) -> torch.Tensor:
    """Calls the compiled op (arguments and result as :func:`rsn_fast.ops.megvii_targets`)."""
    if normalize not in ("global_max", "center"):
        raise ValueError(f"normalize must be 'global_max' or 'center', got {normalize!r}")
    return torch.ops.rsn_fast.megvii_targets(
        keypoints,
        weights,
        int(heatmap_size[0]),
        int(heatmap_size[1]),
        [int(k) for k in kernels],
        normalize == "center",
    )


def _fake(keypoints, weights, width, height, kernels, center_norm):
    n, k = keypoints.shape[:2]
    return keypoints.new_empty((n, len(kernels), k, height, width), dtype=torch.float32)


_registered = False


def register() -> bool:
    """Registers the fake rule once; False when the extension (and so the op) is missing."""
    global _registered
    if _registered:
        return True
    if not _ext.extension_available() or not hasattr(torch.ops.rsn_fast, "megvii_targets"):
        return False
    torch.library.register_fake(OP)(_fake)
    _registered = True
    return True
