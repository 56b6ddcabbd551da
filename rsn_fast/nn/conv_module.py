"""``ConvModule``: Conv2d (no bias) + BatchNorm2d (+ ReLU) with MMCV's names, the building block of every model
file (RSN_SPEC section 2: biases fold into BN)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvModule"]


class ConvModule(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + optional ReLU, with MMCV ``ConvModule``'s parameter names.

    State-dict keys: ``conv.weight``, ``bn.{weight,bias,running_mean,running_var,num_batches_tracked}``.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: square kernel size.
        stride: conv stride.
        padding: conv padding.
        groups: conv groups (C_in for a depthwise conv).
        relu: apply ReLU after BN.

    Shapes: (N, C_in, H, W) -> (N, C_out, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.with_relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.with_relu else x
