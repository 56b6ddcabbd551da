"""``rsn_fast.ops.decode_heatmaps``: heatmaps → image-pixel keypoints and scores (RSN_SPEC.md §12, §16.4).

Backends, tried in this order: ``cuda`` (fused csrc kernel, CUDA tensors), ``cpp`` (fused C++ kernel, CPU
tensors), ``triton`` (compute capability >= 8.0, or CPU tensors under TRITON_INTERPRET=1 when the extension is
missing), ``reference`` (batched torch, any device and dtype, the specification). The compiled kernels share one
torch.library op, ``torch.ops.rsn_fast.decode_heatmaps`` (with a fake rule for torch.compile).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch

from rsn_fast.ops._dispatch import Backend, Dispatcher, cpp_reasons, cuda_reasons, register, triton_reasons
from rsn_fast.ops.decode_heatmaps import cpp as _cpp
from rsn_fast.ops.decode_heatmaps.reference import MODES, _check, decode_heatmaps_reference

__all__ = ["MODES", "decode_heatmaps", "decode_heatmaps_reference"]


_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_COMPILED_READY = _cpp.register()


def _reference_reasons(*args, **kwargs) -> list[str]:
    return []


def _tensors(heatmaps, centers, box_sizes, *args, flipped=None, **kwargs) -> list[torch.Tensor]:
    return [t for t in (heatmaps, centers, box_sizes, flipped) if isinstance(t, torch.Tensor)]


def _input_reasons(heatmaps, *args, **kwargs) -> list[str]:
    if heatmaps.dtype not in _DTYPES:
        return [f"dtype {heatmaps.dtype} is not one of float64, float32, float16, bfloat16"]
    return []


def _cuda_reasons(*args, **kwargs) -> list[str]:
    return cuda_reasons(_tensors(*args, **kwargs), "decode_heatmaps") + _input_reasons(*args, **kwargs)


def _triton_reasons(
    heatmaps, centers, box_sizes, input_size, mode="rsn", blur_kernel=5, **kwargs
) -> list[str]:
    why = triton_reasons(_tensors(heatmaps, centers, box_sizes, **kwargs)) + _input_reasons(heatmaps)
    pad = 10 if mode == "rsn" else (blur_kernel - 1) // 2
    if blur_kernel // 2 >= min(heatmaps.shape[-2:]) + 2 * pad:
        why.append(f"blur_kernel {blur_kernel} is too large for {tuple(heatmaps.shape[-2:])} maps")
    return why


def _triton_fn(*args, **kwargs):
    # imported lazily: `import rsn_fast` must not need triton
    return importlib.import_module("rsn_fast.ops.decode_heatmaps.triton").decode_heatmaps_triton(
        *args, **kwargs
    )


def _cpp_reasons(*args, **kwargs) -> list[str]:
    return cpp_reasons(_tensors(*args, **kwargs), "decode_heatmaps") + _input_reasons(*args, **kwargs)


def _example_inputs(device: torch.device) -> tuple:
    n, k, h, w = 2, 17, 64, 48
    heatmaps = torch.rand(n, k, h, w, device=device) * 255
    centers = torch.tensor([[100.0, 120.0], [300.0, 200.0]], device=device)
    box_sizes = torch.tensor([[150.0, 200.0], [90.0, 120.0]], device=device)
    return heatmaps, centers, box_sizes, (192, 256)


_dispatcher = register(
    Dispatcher(
        "decode_heatmaps",
        [
            Backend("cuda", _cpp.decode_heatmaps_cuda, _cuda_reasons),
            Backend("cpp", _cpp.decode_heatmaps_compiled, _cpp_reasons),
            Backend("triton", _triton_fn, _triton_reasons),
            Backend("reference", decode_heatmaps_reference, _reference_reasons),
        ],
        auto_order=("cuda", "cpp", "triton", "reference"),
    ),
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
        backend: "cuda", "cpp", "triton" or "reference"; None: RSN_FAST_BACKEND, then automatic
            (cuda → cpp → triton → reference).
    Returns:
        coords (N, K, 2) in image pixels and scores (N, K); float64 for float64 heatmaps, else float32.
    """
    _check(heatmaps, centers, box_sizes, input_size, mode, blur_kernel, flipped, flip_pairs)
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
