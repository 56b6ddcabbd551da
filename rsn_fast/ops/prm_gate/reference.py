"""Pure-torch PRM spatial gate (MMPose topology, spec 9.2 / 16.8): the specification for the kernels.

    z  = dw_k×k(u)                                (depthwise, no bias, padding k // 2)
    a  = ReLU(BN_d(z))                            (per channel C)
    p  = pw(a) = sum_c pw_weight[c] * a[:, c]     (1×1 conv C → 1, no bias)
    β  = sigmoid(ReLU(BN_p(p)))                   (one map, N×1×H×W)
    out = o1 ⊙ (1 + o2 ⊙ β)                       (o2: N×C×1×1 channel weights)

BatchNorm as nn.BatchNorm2d: batch statistics in training mode (running buffers updated in place with the
unbiased variance and ``momentum``), running statistics in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def prm_spatial_gate(
    o1: torch.Tensor,
    o2: torch.Tensor,
    u: torch.Tensor,
    dw_weight: torch.Tensor,
    bn_d_weight: torch.Tensor,
    bn_d_bias: torch.Tensor,
    bn_d_running_mean: torch.Tensor,
    bn_d_running_var: torch.Tensor,
    pw_weight: torch.Tensor,
    bn_p_weight: torch.Tensor,
    bn_p_bias: torch.Tensor,
    bn_p_running_mean: torch.Tensor,
    bn_p_running_var: torch.Tensor,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    depthwise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """out (N,C,H,W) = o1 ⊙ (1 + o2 ⊙ β); see the module docstring. Updates running stats when training.

    ``depthwise(u, dw_weight)`` replaces the depthwise convolution (the composite CUDA path passes our kernel).
    """
    C = u.shape[1]
    k = dw_weight.shape[-1]
    if depthwise is not None:
        z = depthwise(u, dw_weight)
    else:
        z = F.conv2d(u, dw_weight, None, padding=k // 2, groups=C)
    a = F.relu(
        F.batch_norm(z, bn_d_running_mean, bn_d_running_var, bn_d_weight, bn_d_bias, training, momentum, eps)
    )
    p = F.conv2d(a, pw_weight)
    q = F.relu(
        F.batch_norm(p, bn_p_running_mean, bn_p_running_var, bn_p_weight, bn_p_bias, training, momentum, eps)
    )
    beta = torch.sigmoid(q)
    return o1 * (1 + o2 * beta)
