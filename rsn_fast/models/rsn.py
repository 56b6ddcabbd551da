"""The RSN network family: stem, down path, up path, cross-stage skips, heads (RSN_SPEC sections 3-8).

Module paths and state-dict keys equal MMPose 1.x's ``TopdownPoseEstimator`` with an ``RSN`` backbone and an
``MSPNHead`` (spec 14.1): ``backbone.top.top.0``, ``backbone.multi_stage_rsn.{s}.downsample.layer{u}.{n}.*``,
``backbone.multi_stage_rsn.{s}.upsample.up{u}.*``, ``head.predict_layers.{4s+u}.conv_layers.{0,1}``.

Where attention sits (``ModelConfig.attention`` / ``prm_variant``):

* ``prm`` + ``paper`` (spec 16.1): ``head.prm`` = PoseRefineMachine(C=256) on the features of the last unit (up4)
  of the last stage, before its predict layer.
* ``prm`` + ``mmpose``: ``head.predict_layers.{i}.prm`` = PoseRefineMachine(C=K) in every predict layer, after
  the resize (as MMPose's ``use_prm=True``).
* ``prm`` + ``official``: ``head.prm`` = the official PRM (C=K) on the final heatmap (index 4S-1 only).
* ``se`` / ``cbam``: ``head.attention`` on the same features as the paper PRM (paper Table 4 swaps them in).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsn_fast.config.model import ModelConfig
from rsn_fast.models.attention import CBAM, SqueezeExcitation
from rsn_fast.models.blocks import ResidualStepsBlock, ResNetBlock
from rsn_fast.nn.conv_module import ConvModule
from rsn_fast.nn.prm import PoseRefineMachine

__all__ = ["RSNBackbone", "MSPNHead", "RSNPoseModel", "init_weights"]

UNIT_OUT = (64, 128, 256, 512)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # A same-size bilinear resize with align_corners=True samples exact pixel centres: skip it.
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class _Stem(nn.Module):
    """``top``: 7x7/2 conv + BN + ReLU, then 3x3/2 max pool (spec 3). (N, C_in, H, W) -> (N, 64, H/4, W/4)."""

    def __init__(self, in_channels: int = 3, channels: int = 64) -> None:
        super().__init__()
        self.top = nn.Sequential(
            ConvModule(in_channels, channels, 7, stride=2, padding=3), nn.MaxPool2d(3, stride=2, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(x)


class DownsampleModule(nn.Module):
    """Four units ``layer1..layer4`` (64/128/256/512 ch, strides 1/2/2/2) with optional skip injection (spec 5).

    Returns the unit outputs coarse-first (x4, x3, x2, x1).
    """

    def __init__(self, cfg: ModelConfig, has_skip: bool) -> None:
        super().__init__()
        self.has_skip = has_skip
        in_ch = cfg.res_top_channels
        for u, (out_ch, blocks) in enumerate(zip(UNIT_OUT, cfg.num_blocks)):
            stride = 1 if u == 0 else 2
            layers = []
            for n in range(blocks):
                layers.append(self._block(cfg, in_ch, out_ch, stride if n == 0 else 1))
                in_ch = out_ch
            self.add_module(f"layer{u + 1}", nn.Sequential(*layers))

    @staticmethod
    def _block(cfg: ModelConfig, in_ch: int, out_ch: int, stride: int) -> nn.Module:
        if cfg.arch == "resnet":
            return ResNetBlock(in_ch, out_ch, stride)
        return ResidualStepsBlock(
            in_ch, out_ch, stride, cfg.num_steps, cfg.block, cfg.expand_times, cfg.res_top_channels
        )

    def forward(
        self, x: torch.Tensor, skip1: list[torch.Tensor] | None, skip2: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, ...]:
        outs = []
        for u in range(4):
            x = getattr(self, f"layer{u + 1}")(x)
            if self.has_skip:
                x = x + skip1[u] + skip2[u]
            outs.append(x)
        return tuple(reversed(outs))


class UpsampleUnit(nn.Module):
    """One up unit (spec 6): ``in_skip`` (+ ``up_conv`` of the resized previous output), ReLU, and for non-last
    stages ``out_skip1``/``out_skip2`` and, on the finest unit, ``cross_conv``."""

    def __init__(self, ind: int, in_ch: int, channels: int, gen_skip: bool, gen_cross_conv: bool, top: int):
        super().__init__()
        self.ind = ind
        self.in_skip = ConvModule(in_ch, channels, 1, relu=False)
        self.up_conv = ConvModule(channels, channels, 1, relu=False) if ind > 0 else None
        self.gen_skip = gen_skip
        if gen_skip:
            self.out_skip1 = ConvModule(in_ch, in_ch, 1)
            self.out_skip2 = ConvModule(channels, in_ch, 1)
        self.cross_conv = ConvModule(channels, top, 1) if ind == 3 and gen_cross_conv else None

    def forward(self, x: torch.Tensor, up_x: torch.Tensor | None):
        out = self.in_skip(x)
        if self.up_conv is not None:
            out = out + self.up_conv(_resize(up_x, tuple(x.shape[-2:])))
        out = torch.relu(out)
        skip1 = skip2 = cross = None
        if self.gen_skip:
            skip1 = self.out_skip1(x)
            skip2 = self.out_skip2(out)
        if self.cross_conv is not None:
            cross = self.cross_conv(out)
        return out, skip1, skip2, cross


class UpsampleModule(nn.Module):
    """Units ``up1..up4`` over (x4, x3, x2, x1). Returns features coarse-first, skips finest-first, cross."""

    def __init__(self, channels: int, gen_skip: bool, gen_cross_conv: bool, top: int) -> None:
        super().__init__()
        for ind, in_ch in enumerate(reversed(UNIT_OUT)):
            self.add_module(f"up{ind + 1}", UpsampleUnit(ind, in_ch, channels, gen_skip, gen_cross_conv, top))

    def forward(self, xs: tuple[torch.Tensor, ...]):
        feats, skip1, skip2 = [], [], []
        out, cross = None, None
        for ind, x in enumerate(xs):
            out, s1, s2, c = getattr(self, f"up{ind + 1}")(x, out)
            feats.append(out)
            skip1.append(s1)
            skip2.append(s2)
            cross = c if c is not None else cross
        return feats, skip1[::-1], skip2[::-1], cross


class SingleStage(nn.Module):
    """One RSN stage: ``downsample`` (down path) and ``upsample`` (up path)."""

    def __init__(self, cfg: ModelConfig, has_skip: bool, gen_skip: bool, gen_cross_conv: bool) -> None:
        super().__init__()
        self.downsample = DownsampleModule(cfg, has_skip)
        self.upsample = UpsampleModule(cfg.unit_channels, gen_skip, gen_cross_conv, cfg.res_top_channels)

    def forward(self, x, skip1, skip2):
        return self.upsample(self.downsample(x, skip1, skip2))


class RSNBackbone(nn.Module):
    """Stem ``top`` plus ``multi_stage_rsn`` (spec 7). forward returns the S*4 unit features (N, 256, h_u, w_u),
    index 4s+u with u=0 the coarsest (1/32) and u=3 the finest (1/4)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.top = _Stem(cfg.in_channels, cfg.res_top_channels)
        s_total = cfg.num_stages
        self.multi_stage_rsn = nn.ModuleList(
            SingleStage(cfg, has_skip=s > 0, gen_skip=s < s_total - 1, gen_cross_conv=s < s_total - 1)
            for s in range(s_total)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.top(x)
        skip1 = skip2 = None
        feats: list[torch.Tensor] = []
        for stage in self.multi_stage_rsn:
            f, skip1, skip2, x = stage(x, skip1, skip2)
            feats.extend(f)
        return feats


class PredictHeatmap(nn.Module):
    """``conv_layers``: 1x1 conv+BN+ReLU (C->C), 3x3 conv+BN (C->K); bilinear resize; optional MMPose PRM."""

    def __init__(self, channels: int, num_keypoints: int, use_prm: bool) -> None:
        super().__init__()
        self.conv_layers = nn.Sequential(
            ConvModule(channels, channels, 1), ConvModule(channels, num_keypoints, 3, padding=1, relu=False)
        )
        self.prm = PoseRefineMachine(num_keypoints, "mmpose") if use_prm else None

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = _resize(self.conv_layers(x), size)
        return self.prm(x) if self.prm is not None else x


class MSPNHead(nn.Module):
    """``predict_layers`` (S*4 of them) plus the optional attention module (see the module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_outputs = cfg.num_stages * 4
        c, k = cfg.unit_channels, cfg.num_keypoints
        prm_variant = cfg.prm_variant if cfg.attention == "prm" else None
        self.predict_layers = nn.ModuleList(
            PredictHeatmap(c, k, prm_variant == "mmpose") for _ in range(self.num_outputs)
        )
        self.prm = None
        self.attention = None
        if prm_variant == "paper":
            self.prm = PoseRefineMachine(c, "paper")
        elif prm_variant == "official":
            self.prm = PoseRefineMachine(k, "official")
        elif cfg.attention == "se":
            self.attention = SqueezeExcitation(c)
        elif cfg.attention == "cbam":
            self.attention = CBAM(c)
        self.prm_on_features = prm_variant == "paper"

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int], all_outputs: bool = True):
        """feats: S*4 features; size: heatmap (h, w). Returns all S*4 heatmaps or only the last one."""
        last = self.num_outputs - 1
        outs = []
        for i in range(last + 1) if all_outputs else [last]:
            f = feats[i]
            if i == last:
                if self.prm_on_features:
                    f = self.prm(f)
                elif self.attention is not None:
                    f = self.attention(f)
            hm = self.predict_layers[i](f, size)
            if i == last and self.prm is not None and not self.prm_on_features:
                hm = self.prm(hm)
            outs.append(hm)
        return outs


def init_weights(model: nn.Module) -> None:
    """MMPose's init: Kaiming normal (fan_out, relu) for convs, BN weight 1 / bias 0, Linear Normal(0, 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class RSNPoseModel(nn.Module):
    """Top-down RSN: ``backbone`` + ``head``.

    forward(img (N, C_in, H, W), H and W multiples of 32): in training mode a list of S*4 heatmaps
    (N, K, H/4, W/4), index 4s+u (u=0: the coarsest source up1); in eval mode only the last one, a tensor
    (N, K, H/4, W/4). Heatmaps are on the 0..255 scale of the targets.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.num_stages = cfg.num_stages
        self.num_keypoints = cfg.num_keypoints
        self.in_channels = cfg.in_channels
        self.backbone = RSNBackbone(cfg)
        self.head = MSPNHead(cfg)
        init_weights(self)

    def check_input(self, img: torch.Tensor) -> None:
        """Raise ValueError naming the expected and the actual shape."""
        expected = f"(N, {self.in_channels}, H, W) with H and W multiples of 32"
        if not isinstance(img, torch.Tensor):
            raise ValueError(f"expected a tensor of shape {expected}, got {type(img).__name__}")
        shape = tuple(img.shape)
        if img.dim() != 4:
            raise ValueError(f"expected input of shape {expected}, got {img.dim()} dims with shape {shape}")
        if shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape {expected}, got {shape[1]} channels in shape {shape}")
        if shape[2] % 32 or shape[3] % 32 or shape[2] == 0 or shape[3] == 0:
            raise ValueError(f"expected input of shape {expected}, got H={shape[2]}, W={shape[3]} in {shape}")

    def forward(self, img: torch.Tensor):
        self.check_input(img)
        size = (img.shape[2] // 4, img.shape[3] // 4)
        feats = self.backbone(img)
        outs = self.head(feats, size, all_outputs=self.training)
        return outs if self.training else outs[-1]
