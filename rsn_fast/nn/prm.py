"""Pose Refine Machine (RSN paper section 3.3). ``ConvModule`` lives in :mod:`rsn_fast.nn.conv_module` (still
importable from here).

Three variants (RSN_SPEC sections 9 and 16.1/16.8):

* ``paper`` and ``mmpose``: MMPose's module (spec 9.2). Parameter names follow MMPose exactly
  (``conv_bn_relu_prm_1``, ``middle_path.{0,1,3,4}``, ``bottom_path.0``,
  ``bottom_path.1.depthwise_conv`` / ``bottom_path.1.pointwise_conv``). The spatial attention is one map shared by
  all channels (depthwise 9x9 then pointwise C -> 1). ``paper`` and ``mmpose`` differ only in where the model
  places the module and in its width (256 features vs K heatmaps); the module is the same.
* ``official``: the module defined (never used) in the official code (spec 9.1): the channel path is two 1x1
  conv + BN + ReLU on the pooled map, and the spatial path is a 1x1 and a depthwise 9x9 conv + BN + ReLU giving
  one map per channel. Names ``conv_bn_relu_prm_1``, ``_2_1``, ``_2_2``, ``_3_1``, ``_3_2``; convs have no bias
  (official biases fold into the BN running mean, see ``rsn_fast.models.checkpoint``).

All variants compute ``out = o1 * (1 + o2 * o3)`` with ``o1`` the 3x3 conv + BN + ReLU of the input, ``o2`` the
channel weights (N, C, 1, 1) and ``o3`` the sigmoid spatial map ((N, 1, H, W) or (N, C, H, W)).

``paper`` / ``mmpose`` run their spatial gate (depthwise 9x9 + BN + ReLU, pointwise C->1 + BN + ReLU, sigmoid,
combination) as the fused op :func:`rsn_fast.ops.prm_gate.prm_spatial_gate` whenever the module keeps the
conventions the op assumes (see ``_fused_gate_bns``); otherwise, and for ``official``, the eager modules run.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from rsn_fast.nn.conv_module import ConvModule
from rsn_fast.ops.prm_gate import prm_spatial_gate

__all__ = ["ConvModule", "PoseRefineMachine", "PRM_VARIANTS"]

PRM_VARIANTS = ("paper", "mmpose", "official")


class _DepthwiseSeparable(nn.Module):
    """MMCV ``DepthwiseSeparableConvModule`` names: ``depthwise_conv`` (k x k, groups=C) then ``pointwise_conv``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class PoseRefineMachine(nn.Module):
    """Pose Refine Machine: ``out = o1 * (1 + o2 * o3)``.

    Args:
        channels: C, the channels of the input and output (256 for ``paper``, K for ``mmpose`` / ``official``).
        variant: ``"paper"`` | ``"mmpose"`` (MMPose module, spec 9.2) or ``"official"`` (spec 9.1).
        kernel_size: the depthwise kernel of the spatial path (9 in all sources).
        backend: backend of the fused spatial gate (``paper`` / ``mmpose``): "cuda", "triton", "reference" or
            None (``RSN_FAST_BACKEND``, then automatic: the fused kernels on a GPU; on the CPU the reference,
            never the Triton interpreter unless asked for). The attribute may be changed after construction.

    Shapes: (N, C, H, W) -> (N, C, H, W). In training mode the channel path's BatchNorm needs N > 1.
    """

    def __init__(
        self, channels: int, variant: str = "paper", kernel_size: int = 9, backend: str | None = None
    ) -> None:
        super().__init__()
        if variant not in PRM_VARIANTS:
            raise ValueError(f"PRM variant must be one of {PRM_VARIANTS}, got {variant!r}")
        if channels < 1:
            raise ValueError(f"PRM channels must be >= 1, got {channels}")
        self.channels = channels
        self.variant = variant
        self.backend = backend
        c = channels
        self.conv_bn_relu_prm_1 = ConvModule(c, c, 3, padding=1)
        if variant == "official":
            self.conv_bn_relu_prm_2_1 = ConvModule(c, c, 1)
            self.conv_bn_relu_prm_2_2 = ConvModule(c, c, 1)
            self.conv_bn_relu_prm_3_1 = ConvModule(c, c, 1)
            self.conv_bn_relu_prm_3_2 = ConvModule(c, c, kernel_size, padding=kernel_size // 2, groups=c)
        else:
            self.global_pooling = nn.AdaptiveAvgPool2d(1)
            self.middle_path = nn.Sequential(
                nn.Linear(c, c),
                nn.BatchNorm1d(c),
                nn.ReLU(),
                nn.Linear(c, c),
                nn.BatchNorm1d(c),
                nn.ReLU(),
                nn.Sigmoid(),
            )
            self.bottom_path = nn.Sequential(
                ConvModule(c, c, 1),
                _DepthwiseSeparable(c, 1, kernel_size),
                nn.Sigmoid(),
            )

    def channel_weights(self, o1: torch.Tensor) -> torch.Tensor:
        """o2 = sigmoid(ReLU(BN(W2 ReLU(BN(W1 avgpool(o1)))))), shape (N, C, 1, 1)."""
        if self.variant == "official":
            p = o1.mean(dim=(2, 3), keepdim=True)
            return torch.sigmoid(self.conv_bn_relu_prm_2_2(self.conv_bn_relu_prm_2_1(p)))
        n, c = o1.shape[:2]
        p = self.global_pooling(o1).reshape(n, c)
        return self.middle_path(p).reshape(n, c, 1, 1)

    def spatial_input(self, o1: torch.Tensor) -> torch.Tensor:
        """u: the 1x1 conv + BN + ReLU of o1 that feeds the 9x9 depthwise conv, shape (N, C, H, W)."""
        if self.variant == "official":
            return self.conv_bn_relu_prm_3_1(o1)
        return self.bottom_path[0](o1)

    def _fused_gate_bns(
        self, o1: torch.Tensor, u: torch.Tensor
    ) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d] | None:
        """(BN_d, BN_p) when the fused op computes exactly what the eager spatial path does, else None.

        The op assumes: no conv biases, a stride-1 odd k x k depthwise conv with padding k // 2, ReLU after both
        BatchNorms and a sigmoid, affine BatchNorms tracking running stats with equal float momentum and eps and
        the same mode, and o1 in u's dtype. Only module attributes are read, so torch.compile guards on them.
        """
        if self.variant == "official":
            return None
        dw, pw = self.bottom_path[1].depthwise_conv, self.bottom_path[1].pointwise_conv
        bn_d, bn_p = dw.bn, pw.bn
        k = dw.conv.kernel_size[0]
        if (
            dw.conv.bias is not None
            or pw.conv.bias is not None
            or not (dw.with_relu and pw.with_relu and isinstance(self.bottom_path[2], nn.Sigmoid))
            or dw.conv.kernel_size != (k, k)
            or k % 2 == 0
            or not 3 <= k <= 31
            or dw.conv.padding != (k // 2, k // 2)
            or dw.conv.stride != (1, 1)
            or dw.conv.dilation != (1, 1)
            or dw.conv.padding_mode != "zeros"
            or o1.dtype != u.dtype
        ):
            return None
        for bn in (bn_d, bn_p):
            if not (bn.affine and bn.track_running_stats and isinstance(bn.momentum, float)):
                return None
        if bn_d.momentum != bn_p.momentum or bn_d.eps != bn_p.eps or bn_d.training != bn_p.training:
            return None
        return bn_d, bn_p

    def _fused_backend(self, u: torch.Tensor) -> str | None:
        if self.backend is None and u.device.type == "cpu":
            # the automatic choice would be the Triton interpreter under TRITON_INTERPRET=1: far too slow for a
            # model; the reference is the same math as the eager modules
            return os.environ.get("RSN_FAST_BACKEND") or "reference"
        return self.backend

    def _spatial_gate(self, o1: torch.Tensor, o2: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """out = o1 * (1 + o2 * sigmoid(spatial(u))): the part worth fusing (depthwise 9x9 at full resolution).

        ``spatial`` is depthwise 9x9 conv + BN + ReLU, then (paper/mmpose) pointwise C->1 conv + BN + ReLU.
        A fused implementation replaces only this method.

        Args:
            o1: (N, C, H, W) output of ``conv_bn_relu_prm_1``.
            o2: (N, C, 1, 1) channel weights.
            u: (N, C, H, W) output of ``spatial_input``.
        """
        bns = self._fused_gate_bns(o1, u)
        if bns is not None:
            bn_d, bn_p = bns
            sep = self.bottom_path[1]
            out = prm_spatial_gate(
                o1, o2, u,
                sep.depthwise_conv.conv.weight, bn_d.weight, bn_d.bias, bn_d.running_mean, bn_d.running_var,
                sep.pointwise_conv.conv.weight, bn_p.weight, bn_p.bias, bn_p.running_mean, bn_p.running_var,
                training=bn_d.training, momentum=bn_d.momentum, eps=bn_d.eps, backend=self._fused_backend(u),
            )  # fmt: skip
            if bn_d.training:
                # the op updates the running statistics; the batch counter is the module's (as in BatchNorm2d)
                with torch.no_grad():
                    for bn in bns:
                        if bn.num_batches_tracked is not None:
                            bn.num_batches_tracked.add_(1)
            return out
        if self.variant == "official":
            o3 = torch.sigmoid(self.conv_bn_relu_prm_3_2(u))
        else:
            o3 = self.bottom_path[2](self.bottom_path[1](u))
        return o1 * (1 + o2 * o3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv_bn_relu_prm_1(x)
        return self._spatial_gate(o1, self.channel_weights(o1), self.spatial_input(o1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, variant={self.variant!r}, backend={self.backend!r}"
