"""Folded inference BatchNorm + residual add + ReLU: ``y = relu(x * scale[c] + shift[c] (+ residual))``.

Backends, tried in this order: ``cuda`` (csrc kernel, CUDA tensors), ``cpp`` (csrc C++ kernel, CPU tensors),
``reference`` (pure torch). See :mod:`rsn_fast.ops._dispatch` for ``backend=`` and ``RSN_FAST_BACKEND``.
"""

from __future__ import annotations

import torch

from rsn_fast.ops._dispatch import Backend, Dispatcher, cpp_reasons, cuda_reasons, register
from rsn_fast.ops.bn_add_relu import cuda as _cuda
from rsn_fast.ops.bn_add_relu.reference import bn_add_relu_ref

__all__ = ["bn_add_relu", "bn_add_relu_ref"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_COMPILED_READY = _cuda.register()


def _tensors(x, scale, shift, residual=None, relu=True):
    return [t for t in (x, scale, shift, residual) if t is not None]


def _dtype_reasons(x, *args, **kwargs) -> list[str]:
    return [] if x.dtype in _DTYPES else [f"dtype {x.dtype} is not one of float32, float16, bfloat16"]


def _cuda_reasons(*args, **kwargs) -> list[str]:
    return cuda_reasons(_tensors(*args, **kwargs), "bn_add_relu") + _dtype_reasons(*args, **kwargs)


def _cpp_reasons(*args, **kwargs) -> list[str]:
    return cpp_reasons(_tensors(*args, **kwargs), "bn_add_relu") + _dtype_reasons(*args, **kwargs)


_dispatcher = register(
    Dispatcher(
        "bn_add_relu",
        [
            Backend("cuda", _cuda.bn_add_relu_cuda, _cuda_reasons),
            Backend("cpp", _cuda.bn_add_relu_compiled, _cpp_reasons),
            Backend("reference", bn_add_relu_ref, lambda *a, **k: []),
        ],
        auto_order=("cuda", "cpp", "reference"),
    ),
    lambda device: (
        torch.randn(2, 8, 5, 7, device=device),
        torch.rand(8, device=device) + 0.5,
        torch.randn(8, device=device),
        torch.randn(2, 8, 5, 7, device=device),
    ),
)


def _check(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, residual: torch.Tensor | None) -> None:
    if x.dim() != 4:
        raise ValueError(f"bn_add_relu: argument 'x' must be (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"bn_add_relu: argument 'x' must be floating point, got {x.dtype}")
    c = x.shape[1]
    for name, t in (("scale", scale), ("shift", shift)):
        if t.dim() != 1 or t.shape[0] != c:
            raise ValueError(
                f"bn_add_relu: argument '{name}' must have shape (C,) = ({c},) to match x of shape "
                f"{tuple(x.shape)}, got {tuple(t.shape)}"
            )
        if t.device != x.device:
            raise ValueError(f"bn_add_relu: argument '{name}' is on {t.device} but 'x' is on {x.device}")
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(
                f"bn_add_relu: argument 'residual' must have the shape of x {tuple(x.shape)}, "
                f"got {tuple(residual.shape)}"
            )
        if residual.dtype != x.dtype:
            raise ValueError(
                f"bn_add_relu: argument 'residual' must have dtype {x.dtype}, got {residual.dtype}"
            )
        if residual.device != x.device:
            raise ValueError(
                f"bn_add_relu: argument 'residual' is on {residual.device} but 'x' is on {x.device}"
            )


def bn_add_relu(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    residual: torch.Tensor | None = None,
    relu: bool = True,
    backend: str | None = None,
) -> torch.Tensor:
    """Folded BatchNorm (inference) + optional residual add + optional ReLU, in one pass.

    ``y = relu(x * scale[c] + shift[c] + residual)``, computed in float32 and stored in x's dtype. With BN
    parameters: ``scale = weight / sqrt(running_var + eps)``, ``shift = bias - running_mean * scale``.

    Args:
        x: (N, C, H, W) float32/float16/bfloat16, contiguous, channels-last or strided.
        scale: (C,) floating, on x's device.
        shift: (C,) floating, on x's device.
        residual: (N, C, H, W) with x's dtype and device, or None.
        relu: apply the ReLU.
        backend: "cuda", "cpp" or "reference"; None picks automatically (cuda → cpp → reference).

    Returns:
        (N, C, H, W) in x's dtype; channels-last when x is channels-last.

    Raises:
        ValueError: an argument has the wrong shape, dtype or device (the message names it).
        BackendError: the requested backend cannot run these inputs.
    """
    _check(x, scale, shift, residual)
    return _dispatcher(x, scale, shift, residual, relu, backend=backend)
