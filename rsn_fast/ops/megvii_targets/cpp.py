"""The compiled megvii_targets (``torch.ops.rsn_fast.megvii_targets``: C++ on CPU tensors, CUDA on GPU tensors).

Registers the fake (meta) rule when ``rsn_fast._C`` loaded, so torch.compile can trace the op. Targets carry no
gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rsn_fast import _ext
from rsn_fast.ops._dispatch import cuda_op

OP = "rsn_fast::megvii_targets"
MAX_CUDA_KERNELS = 8  # csrc/megvii_targets/megvii_targets_cuda.h kMaxTargetKernels


def megvii_targets_compiled(
    keypoints: torch.Tensor,
    weights: torch.Tensor,
    heatmap_size: Sequence[int],
    kernels: Sequence[int],
    normalize: str = "global_max",
    *,
    _cuda: bool = False,
) -> torch.Tensor:
    """Calls the compiled op (arguments and result as :func:`rsn_fast.ops.megvii_targets`)."""
    if normalize not in ("global_max", "center"):
        raise ValueError(f"normalize must be 'global_max' or 'center', got {normalize!r}")
    op = cuda_op("megvii_targets") if _cuda else torch.ops.rsn_fast.megvii_targets
    return op(
        keypoints,
        weights,
        int(heatmap_size[0]),
        int(heatmap_size[1]),
        [int(k) for k in kernels],
        normalize == "center",
    )


def megvii_targets_cuda(keypoints, weights, heatmap_size, kernels, normalize="global_max") -> torch.Tensor:
    """The CUDA kernel (the emulated one on CPU tensors in a CUDA emulation build)."""
    return megvii_targets_compiled(keypoints, weights, heatmap_size, kernels, normalize, _cuda=True)


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
    if _ext.extension_is_emulation():
        torch.library.register_fake(OP + "_emulated_cuda")(_fake)
    _registered = True
    return True
