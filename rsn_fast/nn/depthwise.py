"""DepthwiseConv2d: a drop-in for ``nn.Conv2d(C, C, k, padding=k // 2, groups=C)`` on the fused op."""

from __future__ import annotations

import torch
from torch import nn

from rsn_fast.ops.depthwise_conv2d import depthwise_conv2d


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise convolution, stride 1, odd kernel 3..31, with ``nn.Conv2d``'s parameters (``weight``
    (C, 1, k, k), ``bias`` (C,) or None) and initialisation, so state dicts move between the two.

    Args:
        channels: C, input and output channels.
        kernel_size: k, odd, 3..31.
        padding: zero padding; default k // 2 (same spatial size).
        bias: whether to learn a bias.
        backend: force "cuda", "triton" or "reference" (default: automatic, see rsn_fast.ops).

    Shape: (N, C, H, W) → (N, C, H + 2p - k + 1, W + 2p - k + 1), contiguous or channels-last.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        padding: int | None = None,
        bias: bool = True,
        backend: str | None = None,
        device=None,
        dtype=None,
    ) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"DepthwiseConv2d: kernel_size must be odd, got {kernel_size}")
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(
            channels, channels, kernel_size, stride=1, padding=padding, groups=channels, bias=bias,
            device=device, dtype=dtype,
        )  # fmt: skip
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, self.padding[0], backend=self.backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", backend={self.backend}" if self.backend else "")
