"""Depthwise 2-D convolution (stride 1, odd square kernel 3..31), forward and backward.

Public function: :func:`depthwise_conv2d`. Backends: ``reference`` (torch, any device), ``triton`` (CUDA with
compute capability >= 8.0, or CPU under ``TRITON_INTERPRET=1``), ``cuda`` (``rsn_fast._C``).
Registered as ``torch.ops.rsn_fast.depthwise_conv2d`` with a fake implementation and autograd, so
torch.compile traces it without a graph break.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from rsn_fast.ops._dispatch import Backend, Dispatcher, cuda_reasons, register, triton_reasons
from rsn_fast.ops._export import exporting
from rsn_fast.ops.depthwise_conv2d import cuda as _cuda
from rsn_fast.ops.depthwise_conv2d import reference as _reference

__all__ = ["depthwise_conv2d", "check_inputs", "DISPATCHER"]

OP = "depthwise_conv2d"
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MIN_K, MAX_K = 3, 31


def _triton_module() -> ModuleType:
    # imported lazily: `import rsn_fast` must not need triton
    return importlib.import_module("rsn_fast.ops.depthwise_conv2d.triton")


def _impl(backend: str):
    if backend == "reference":
        return _reference.depthwise_conv2d_forward, _reference.depthwise_conv2d_backward
    if backend == "triton":
        m = _triton_module()
        return m.forward, m.backward
    if backend == "cuda":
        return _cuda.forward, _cuda.backward
    raise ValueError(f"{OP}: unknown backend {backend!r}")


def check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> None:
    """Raise ValueError/TypeError naming the argument when the inputs are not a valid depthwise convolution."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{OP}: argument 'x' must be a Tensor, got {type(x).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{OP}: argument 'weight' must be a Tensor, got {type(weight).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{OP}: argument 'x' must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in DTYPES:
        raise TypeError(f"{OP}: argument 'x' must be float16, bfloat16, float32 or float64, got {x.dtype}")
    C = x.shape[1]
    if weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"{OP}: argument 'weight' must have shape (C, 1, k, k), got {tuple(weight.shape)}")
    if weight.shape[0] != C:
        raise ValueError(f"{OP}: argument 'weight' has {weight.shape[0]} channels but 'x' has {C}")
    k = weight.shape[-1]
    if k % 2 == 0 or not MIN_K <= k <= MAX_K:
        raise ValueError(f"{OP}: argument 'weight' kernel size must be odd in [{MIN_K}, {MAX_K}], got {k}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{OP}: argument 'weight' has dtype {weight.dtype} but 'x' has {x.dtype}")
    if weight.device != x.device:
        raise ValueError(f"{OP}: argument 'weight' is on {weight.device} but 'x' is on {x.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (C,):
            shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(f"{OP}: argument 'bias' must have shape ({C},), got {shape}")
        if bias.dtype != x.dtype:
            raise TypeError(f"{OP}: argument 'bias' has dtype {bias.dtype} but 'x' has {x.dtype}")
        if bias.device != x.device:
            raise ValueError(f"{OP}: argument 'bias' is on {bias.device} but 'x' is on {x.device}")
    if not isinstance(padding, int) or not 0 <= padding <= k - 1:
        raise ValueError(f"{OP}: argument 'padding' must be an int in [0, {k - 1}], got {padding!r}")
    if x.shape[2] + 2 * padding - k + 1 <= 0 or x.shape[3] + 2 * padding - k + 1 <= 0:
        raise ValueError(f"{OP}: argument 'x' spatial size {tuple(x.shape[2:])} is too small for k={k}")


def _triton_reasons(x, weight, bias=None, padding=None) -> list[str]:
    why = triton_reasons([x])
    if x.dtype not in KERNEL_DTYPES:
        why.append(f"dtype {x.dtype} not supported")
    return why


def _cuda_reasons(x, weight, bias=None, padding=None) -> list[str]:
    why = cuda_reasons([x], _cuda.FWD_OP)
    if x.dtype not in CUDA_DTYPES:
        why.append(f"dtype {x.dtype} not supported")
    return why


DISPATCHER = register(
    Dispatcher(
        OP,
        [
            Backend("cuda", _cuda.forward, _cuda_reasons),
            Backend("triton", lambda *a: _triton_module().forward(*a), _triton_reasons),
            Backend("reference", _reference.depthwise_conv2d_forward, lambda *a, **k: []),
        ],
    ),
    lambda device: (torch.randn(2, 8, 16, 16, device=device), torch.randn(8, 1, 9, 9, device=device)),
)


def _out_format(x: torch.Tensor) -> torch.memory_format:
    cl = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


@torch.library.custom_op("rsn_fast::depthwise_conv2d", mutates_args=())
def _depthwise_conv2d_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, backend: str
) -> torch.Tensor:
    y = _impl(backend)[0](x, weight, bias, padding)
    # every backend returns x's layout; the reference (F.conv2d) may not for ambiguous strides
    return y.contiguous(memory_format=_out_format(x))


@_depthwise_conv2d_op.register_fake
def _(x, weight, bias, padding, backend):
    N, C, H, W = x.shape
    k = weight.shape[-1]
    shape = (N, C, H + 2 * padding - k + 1, W + 2 * padding - k + 1)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_out_format(x))


@torch.library.custom_op("rsn_fast::depthwise_conv2d_backward", mutates_args=())
def _depthwise_conv2d_backward_op(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    padding: int,
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, db = _impl(backend)[1](grad, x, weight, padding, need_input, need_weight, need_bias)
    empty = x.new_empty((0,))
    dx = dx.contiguous(memory_format=_out_format(x)) if dx is not None else empty
    dw = dw.contiguous() if dw is not None else empty.clone()
    db = db.contiguous() if db is not None else empty.clone()
    return dx, dw, db


@_depthwise_conv2d_backward_op.register_fake
def _(grad, x, weight, padding, need_input, need_weight, need_bias, backend):
    empty = x.new_empty((0,))
    dx = torch.empty_like(x, memory_format=_out_format(x)) if need_input else empty
    dw = torch.empty(weight.shape, dtype=x.dtype, device=x.device) if need_weight else x.new_empty((0,))
    db = x.new_empty((x.shape[1],)) if need_bias else x.new_empty((0,))
    return dx, dw, db


def _setup_context(ctx, inputs, output):
    x, weight, bias, padding, backend = inputs
    ctx.save_for_backward(x, weight)
    ctx.padding = padding
    ctx.backend = backend
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = need_b and ctx.has_bias
    dx, dw, db = torch.ops.rsn_fast.depthwise_conv2d_backward(
        grad, x, weight, ctx.padding, need_x, need_w, need_b, ctx.backend
    )
    return (dx if need_x else None, dw if need_w else None, db if need_b else None, None, None)


_depthwise_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Depthwise convolution, stride 1: ``F.conv2d(x, weight, bias, padding=padding, groups=C)``.

    Args:
        x: (N, C, H, W), contiguous or channels-last (other strides are copied), float16/bfloat16/float32
            (float64 on the reference and Triton).
        weight: (C, 1, k, k), k odd in [3, 31], same dtype and device as x.
        bias: optional (C,).
        padding: zero padding on each side; defaults to k // 2 (output size equals input size).
        backend: "cuda", "triton" or "reference"; default: RSN_FAST_BACKEND, then the first that can run.

    Returns:
        (N, C, H + 2p - k + 1, W + 2p - k + 1) in x's dtype and memory format.
    """
    if padding is None and isinstance(weight, torch.Tensor) and weight.dim() == 4:
        padding = weight.shape[-1] // 2
    if isinstance(x, torch.Tensor) and torch.is_autocast_enabled(x.device.type):
        # behave like F.conv2d under autocast: compute in the autocast dtype (custom ops are not cast for us)
        dt = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dt), weight.to(dt)
        bias = bias.to(dt) if bias is not None else None
    check_inputs(x, weight, bias, padding)
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    if exporting():
        return _reference.depthwise_conv2d_forward(x, weight, bias, padding)  # a grouped Conv when exported
    name = DISPATCHER.choose(x, weight, bias, padding, backend=backend).name
    return torch.ops.rsn_fast.depthwise_conv2d(x, weight, bias, padding, name)
