"""Parameter and MAC counts, measured with torch's own FLOP counter on meta tensors (no memory, no compute)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_gmacs"]


def count_params(model: nn.Module) -> int:
    """Number of learnable parameter elements (BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, input_size: tuple[int, int], in_channels: int = 3) -> float:
    """Conv (and Linear) GMACs per image of the full training-mode forward: all S*4 heads, as MMPose counts.

    The model is copied to the meta device, so this is cheap at any size. MACs = FLOPs / 2 as counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; pooling, resizing, BN and
    element-wise ops are not counted, as in the spec's numbers). A batch of 2 is used because BatchNorm1d in
    training mode refuses a batch of 1; the count is divided by 2.

    Args:
        model: the network; it is not modified.
        input_size: (W, H), as in the configs.
        in_channels: image channels.
    """
    w, h = input_size
    meta = _meta_copy(model)
    meta.train()
    x = torch.empty(2, in_channels, h, w, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    return counter.get_total_flops() / 2 / 2 / 1e9


def _meta_copy(model: nn.Module) -> nn.Module:
    # deepcopy of a meta module is free; copying real weights first would cost memory for big models.
    params = {id(p): p for p in model.parameters()}
    memo = {
        pid: nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for pid, p in params.items()
    }
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)
