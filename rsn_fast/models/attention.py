"""SE and CBAM attention, the paper's Table 4 alternatives to PRM (placed where the paper's PRM sits)."""

from __future__ import annotations

import torch
from torch import nn

from rsn_fast.nn.conv_module import ConvModule

__all__ = ["SqueezeExcitation", "CBAM"]


class SqueezeExcitation(nn.Module):
    """Squeeze-and-Excitation (Hu et al.): x * sigmoid(W2 ReLU(W1 avgpool(x))).

    Args:
        channels: C.
        reduction: hidden width is max(1, C // reduction).

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * w


class CBAM(nn.Module):
    """CBAM (Woo et al.): channel attention from avg- and max-pooled features through a shared MLP, then spatial
    attention from a 7x7 conv + BN over the channel-wise mean and max.

    Args:
        channels: C.
        reduction: hidden width of the shared MLP is max(1, C // reduction).
        kernel_size: spatial attention kernel.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.channel_mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial = ConvModule(2, 1, kernel_size, padding=kernel_size // 2, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.channel_mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.channel_mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + mx)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))
