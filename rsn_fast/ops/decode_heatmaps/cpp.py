"""The compiled decode_heatmaps (``torch.ops.rsn_fast.decode_heatmaps``): C++ on CPU tensors, CUDA on GPU tensors.

The fake (meta) rule is registered when ``rsn_fast._C`` loaded, so torch.compile can trace the op. The op has
no gradient (its outputs are argmax positions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rsn_fast import _ext
from rsn_fast.ops._dispatch import cuda_op

OP = "rsn_fast::decode_heatmaps"
_PERM_CACHE: dict[tuple, torch.Tensor] = {}


def flip_permutation(num_keypoints: int, flip_pairs: Sequence, device: torch.device) -> torch.Tensor:
    """int64 (K,) channel permutation of the flip-back step (pairs swapped), cached per pairs and device.

    Cached so a GPU decode does not copy it to the device (a host synchronisation) on every call.
    """
    pairs = tuple((int(i), int(j)) for i, j in flip_pairs)
    key = (num_keypoints, pairs, str(device))
    t = _PERM_CACHE.get(key)
    if t is None:
        perm = list(range(num_keypoints))
        for i, j in pairs:
            if not (0 <= i < num_keypoints and 0 <= j < num_keypoints):
                raise ValueError(f"flip_pairs entry {(i, j)} is out of range for {num_keypoints} keypoints")
            perm[i], perm[j] = j, i
        t = torch.tensor(perm, dtype=torch.int64, device=device)
        _PERM_CACHE[key] = t
    return t


def decode_heatmaps_compiled(
    heatmaps: torch.Tensor,
    centers: torch.Tensor,
    box_sizes: torch.Tensor,
    input_size: Sequence[float],
    mode: str = "rsn",
    blur_kernel: int = 5,
    flipped: torch.Tensor | None = None,
    flip_pairs: Sequence | None = None,
    *,
    _cuda: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Calls the compiled op (arguments and results as :func:`rsn_fast.ops.decode_heatmaps`)."""
    perm = None
    if flipped is not None:
        if flip_pairs is None:
            raise ValueError("flipped heatmaps need flip_pairs (pass [] when the keypoint set has none)")
        perm = flip_permutation(heatmaps.shape[1], flip_pairs, heatmaps.device)
        flipped = flipped.to(heatmaps.dtype)
    op = cuda_op("decode_heatmaps") if _cuda else torch.ops.rsn_fast.decode_heatmaps
    return op(
        heatmaps,
        centers,
        box_sizes,
        float(input_size[0]),
        float(input_size[1]),
        mode,
        int(blur_kernel),
        flipped,
        perm,
    )


def decode_heatmaps_cuda(
    heatmaps, centers, box_sizes, input_size, mode="rsn", blur_kernel=5, flipped=None, flip_pairs=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CUDA kernel (the emulated one on CPU tensors in a CUDA emulation build)."""
    return decode_heatmaps_compiled(
        heatmaps, centers, box_sizes, input_size, mode, blur_kernel, flipped, flip_pairs, _cuda=True
    )


def _fake(heatmaps, centers, box_sizes, input_w, input_h, mode, blur_kernel, flipped=None, flip_perm=None):
    dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
    n, k = heatmaps.shape[:2]
    return heatmaps.new_empty((n, k, 2), dtype=dtype), heatmaps.new_empty((n, k), dtype=dtype)


_registered = False


def register() -> bool:
    """Registers the fake rule once; False when the extension (and so the op) is missing."""
    global _registered
    if _registered:
        return True
    if not _ext.extension_available() or not hasattr(torch.ops.rsn_fast, "decode_heatmaps"):
        return False
    torch.library.register_fake(OP)(_fake)
    if _ext.extension_is_emulation():
        torch.library.register_fake(OP + "_emulated_cuda")(_fake)
    _registered = True
    return True
