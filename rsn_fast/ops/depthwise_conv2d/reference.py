"""Pure-torch depthwise convolution: the specification the kernels are tested against.

Math (stride 1, square odd kernel k, zero padding p):
    y[n, c, h, w] = b[c] + sum_{i,j < k} x[n, c, h + i - p, w + j - p] * weight[c, 0, i, j]
Output size: H + 2p - k + 1 by W + 2p - k + 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def depthwise_conv2d_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> torch.Tensor:
    """y = depthwise conv of x (N,C,H,W) with weight (C,1,k,k) and optional bias (C,)."""
    return F.conv2d(x, weight, bias, stride=1, padding=padding, groups=x.shape[1])


def depthwise_conv2d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    padding: int,
    need_input: bool = True,
    need_weight: bool = True,
    need_bias: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients (dx (N,C,H,W), dweight (C,1,k,k), dbias (C,)) of the forward for upstream ``grad``.

    dx is the convolution of grad with the spatially flipped kernel and padding k-1-p; dweight[c,i,j] =
    sum_{n,h,w} grad[n,c,h,w] * x[n,c,h+i-p,w+j-p]; dbias[c] = sum_{n,h,w} grad[n,c,h,w].
    """
    C = x.shape[1]
    grad_input = grad_weight = grad_bias = None
    if need_input:
        grad_input = torch.nn.grad.conv2d_input(x.shape, weight, grad, stride=1, padding=padding, groups=C)
    if need_weight:
        grad_weight = torch.nn.grad.conv2d_weight(x, weight.shape, grad, stride=1, padding=padding, groups=C)
    if need_bias:
        acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
        grad_bias = grad.sum(dim=(0, 2, 3), dtype=acc).to(grad.dtype)
    return grad_input, grad_weight, grad_bias
