"""Thin calls into the compiled CUDA kernels (csrc/depthwise_conv2d). Importing this needs no extension."""

from __future__ import annotations

import torch

from rsn_fast import _ext

FWD_OP = "depthwise_conv2d_fwd_cuda"
BWD_OP = "depthwise_conv2d_bwd_cuda"
STATS_OP = "depthwise_conv2d_stats_cuda"


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    _ext.require_extension()
    return torch.ops.rsn_fast.depthwise_conv2d_fwd_cuda(x, weight, bias, padding)


def conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: int,
    stats: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(y, float64 (2, C) [sum, sum of squares] of y or None): the interface of the Triton launcher ``conv``."""
    _ext.require_extension()
    if not stats:
        return torch.ops.rsn_fast.depthwise_conv2d_fwd_cuda(x, weight, bias, padding), None
    if bias is not None:
        raise ValueError("depthwise_conv2d: the CUDA statistics kernel takes no bias")
    y, sums = torch.ops.rsn_fast.depthwise_conv2d_stats_cuda(x, weight, padding)
    return y, sums


def backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    padding: int,
    need_input: bool = True,
    need_weight: bool = True,
    need_bias: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    _ext.require_extension()
    dx, dw, db = torch.ops.rsn_fast.depthwise_conv2d_bwd_cuda(
        grad, x, weight, padding, need_input, need_weight, need_bias
    )
    return (dx if need_input else None, dw if need_weight else None, db if need_bias else None)
