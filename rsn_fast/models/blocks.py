"""Residual blocks of the RSN down path: the RSB, the paper's two branching baselines and the ResNet block.

See RSN_SPEC section 4 (RSB) and the paper's Tables 2 and 3 (ablations). Parameter names follow MMPose's ``RSB``:
``downsample``, ``conv_bn_relu1``, ``conv_bn_relu2_{i}_{j}``, ``conv_bn3``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rsn_fast.nn.conv_module import ConvModule

__all__ = ["ResidualStepsBlock", "ResNetBlock", "branch_width", "block_macs_per_pixel"]


def _branch_lengths(num_steps: int, block: str) -> list[int]:
    """Number of 3x3 convs on each branch: 1, 2, ..., n for the RSB and Baseline1; 3 each for Baseline2."""
    if block == "baseline2":
        return [3] * num_steps
    return list(range(1, num_steps + 1))


def block_macs_per_pixel(in_ch: int, out_ch: int, width: int, num_steps: int, block: str) -> int:
    """Conv MACs per output pixel of one block's main path (1x1 in, the 3x3 convs, 1x1 out; no downsample)."""
    n3 = sum(_branch_lengths(num_steps, block))
    return in_ch * num_steps * width + 9 * n3 * width * width + num_steps * width * out_ch


def branch_width(
    in_ch: int,
    out_ch: int,
    num_steps: int = 4,
    block: str = "rsb",
    expand_times: int = 26,
    res_top_channels: int = 64,
) -> int:
    """Channels b of each branch of a block.

    The reference is the paper's 4-branch RSB: ``b4 = in_ch * expand_times // res_top_channels`` (spec 4:
    26/52/104/208 for in_ch 64/128/256/512). The 4-branch RSB and Baseline1 use b4 as is. Every other layout
    (2, 3, 5 or 6 branches, paper Table 3; Baseline2, Table 2) uses the integer b >= 1 whose block conv MACs per
    output pixel, ``in*n*b + 9*T*b^2 + n*b*out`` with T the number of 3x3 convs, are closest to the 4-branch
    RSB's at b4 (ties go to the smaller b). So FLOPs stay about equal, as the paper requires ("keeping the model
    capacity unchanged by adapting channels").
    """
    b4 = in_ch * expand_times // res_top_channels
    if num_steps == 4 and block in ("rsb", "baseline1"):
        return b4
    target = block_macs_per_pixel(in_ch, out_ch, b4, 4, "rsb")
    a = 9 * sum(_branch_lengths(num_steps, block))
    lin = num_steps * (in_ch + out_ch)
    root = (-lin + math.sqrt(lin * lin + 4 * a * target)) / (2 * a)
    candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}
    return min(
        sorted(candidates),
        key=lambda b: abs(block_macs_per_pixel(in_ch, out_ch, b, num_steps, block) - target),
    )


class ResidualStepsBlock(nn.Module):
    """RSB (spec 4) and its ablations, expansion 1.

    ``block="rsb"``: branch i's j-th conv takes (s_i if j == 1 else y_i,j-1) + y_i-1,j (when branch i-1 has a
    j-th conv); the last output of every branch is concatenated. ``"baseline1"``: the same convs without the
    sums from the previous branch. ``"baseline2"``: every branch has three 3x3 convs, no sums.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        stride: stride of the first 1x1 conv and of the downsample.
        num_steps: number of branches n.
        block: ``"rsb"`` | ``"baseline1"`` | ``"baseline2"``.
        expand_times, res_top_channels: width rule, see :func:`branch_width`.

    Shapes: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        num_steps: int = 4,
        block: str = "rsb",
        expand_times: int = 26,
        res_top_channels: int = 64,
    ) -> None:
        super().__init__()
        # Assigned first so that it comes first in the state dict, as in MMPose (spec 14.1).
        self.downsample = (
            ConvModule(in_channels, out_channels, 1, stride=stride, relu=False)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.num_steps = num_steps
        self.block = block
        self.width = branch_width(in_channels, out_channels, num_steps, block, expand_times, res_top_channels)
        b = self.width
        self.conv_bn_relu1 = ConvModule(in_channels, num_steps * b, 1, stride=stride)
        self.lengths = _branch_lengths(num_steps, block)
        for i, length in enumerate(self.lengths):
            for j in range(length):
                self.add_module(f"conv_bn_relu2_{i + 1}_{j + 1}", ConvModule(b, b, 3, padding=1))
        self.conv_bn3 = ConvModule(num_steps * b, out_channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        splits = torch.split(self.conv_bn_relu1(x), self.width, dim=1)
        fuse = self.block == "rsb"
        prev: list[torch.Tensor] = []
        last: list[torch.Tensor] = []
        for i, length in enumerate(self.lengths):
            cur: list[torch.Tensor] = []
            for j in range(length):
                inp = splits[i] if j == 0 else cur[j - 1]
                if fuse and j < len(prev):
                    inp = inp + prev[j]
                cur.append(getattr(self, f"conv_bn_relu2_{i + 1}_{j + 1}")(inp))
            last.append(cur[-1])
            prev = cur
        out = self.conv_bn3(torch.cat(last, dim=1))
        return torch.relu(out + identity)


class ResNetBlock(nn.Module):
    """The official code's ResNet-18 baseline block (OFF ``exps/Res18.coco`` ``Bottleneck``, expansion 1).

    1x1 conv + BN + ReLU (C_in -> C_out), 3x3 conv + BN + ReLU with the block's stride, 1x1 conv + BN (no ReLU),
    plus identity or a 1x1 strided conv + BN downsample, then ReLU. Names as the RSB's: ``conv_bn_relu1``,
    ``conv_bn_relu2``, ``conv_bn3``, ``downsample``.

    Shapes: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.downsample = (
            ConvModule(in_channels, out_channels, 1, stride=stride, relu=False)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.conv_bn_relu1 = ConvModule(in_channels, out_channels, 1)
        self.conv_bn_relu2 = ConvModule(out_channels, out_channels, 3, stride=stride, padding=1)
        self.conv_bn3 = ConvModule(out_channels, out_channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv_bn3(self.conv_bn_relu2(self.conv_bn_relu1(x)))
        return torch.relu(out + identity)
