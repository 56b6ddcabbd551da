"""The compiled bn_add_relu (``torch.ops.rsn_fast.bn_add_relu``: C++ on CPU, CUDA on GPU).

Registers the fake (meta) rule, so torch.compile can trace the op, and an autograd rule, so the compiled
kernel also works where gradients flow. Both only when ``rsn_fast._C`` loaded (it defines the op).
"""

from __future__ import annotations

import torch

from rsn_fast import _ext
from rsn_fast.ops._dispatch import cuda_op

OP = "rsn_fast::bn_add_relu"


def bn_add_relu_compiled(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    residual: torch.Tensor | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """Calls the compiled op (shapes as in :func:`rsn_fast.ops.bn_add_relu`)."""
    return torch.ops.rsn_fast.bn_add_relu(x, scale, shift, residual, relu)


def bn_add_relu_cuda(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    residual: torch.Tensor | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """The CUDA kernel (the emulated one on CPU tensors in a CUDA emulation build)."""
    return cuda_op("bn_add_relu")(x, scale, shift, residual, relu)


def _output_format(x: torch.Tensor) -> torch.memory_format:
    # Same rule as csrc/common/checks.h use_channels_last(): dense channels-last stays channels-last.
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _fake(x, scale, shift, residual=None, relu=True):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device).contiguous(memory_format=_output_format(x))


def _setup_context(ctx, inputs, output):
    x, scale, shift, residual, relu = inputs
    ctx.relu = relu
    ctx.has_residual = residual is not None
    ctx.save_for_backward(x, scale, output if relu else None)


def _backward(ctx, grad):
    x, scale, y = ctx.saved_tensors
    c = x.shape[1]
    g = grad.float()
    if ctx.relu:
        g = g * (y > 0)  # relu'(0) = 0, as torch's threshold_backward
    grad_x = (g * scale.float().view(1, c, 1, 1)).to(x.dtype)
    grad_scale = (g * x.float()).sum((0, 2, 3)).to(scale.dtype)
    grad_shift = g.sum((0, 2, 3)).to(scale.dtype)
    grad_residual = g.to(x.dtype) if ctx.has_residual else None
    return grad_x, grad_scale, grad_shift, grad_residual, None


_registered = False


def register() -> bool:
    """Registers the fake and autograd rules once; False when the extension (and so the op) is missing."""
    global _registered
    if _registered:
        return True
    if not _ext.extension_available() or not hasattr(torch.ops.rsn_fast, "bn_add_relu"):
        return False
    ops = [OP, OP + "_emulated_cuda"] if _ext.extension_is_emulation() else [OP]
    for op in ops:
        torch.library.register_fake(op)(_fake)
        torch.library.register_autograd(op, _backward, setup_context=_setup_context)
    _registered = True
    return True
