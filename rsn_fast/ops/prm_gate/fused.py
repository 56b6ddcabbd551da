"""Phase orchestration of the fused PRM spatial gate over a kernel module (triton.py or cuda.py, same interface).

The heavy passes are kernels; what runs in torch here touches only (C,)-sized vectors or the (N, H*W)
single-channel maps, 1/C of a feature map. Saved for backward: z (the depthwise output, input dtype), p (the
pointwise output, float32 (N, H*W)) and the batch statistics; nothing else.
"""

from __future__ import annotations

import importlib

import torch


def _kernels(backend: str):
    if backend in ("triton", "cuda"):
        return importlib.import_module(f"rsn_fast.ops.prm_gate.{backend}")
    raise ValueError(f"prm_spatial_gate: no fused kernels for backend {backend!r}")


def _dw(backend: str):
    """The depthwise launchers of the same backend: ``conv(x, w, None, pad, stats=)`` and ``backward``."""
    if backend in ("triton", "cuda"):
        return importlib.import_module(f"rsn_fast.ops.depthwise_conv2d.{backend}")
    raise ValueError(f"prm_spatial_gate: no depthwise kernels for backend {backend!r}")


def _fold(weight, bias, mean, rstd):
    scale = weight.float() * rstd
    return scale, bias.float() - mean * scale


def forward(
    o1, o2, u, dw_weight, gd, bd, rmd, rvd, pw_weight, gp, bp, rmp, rvp, training: bool, eps: float,
    need_saved: bool, backend: str,
):  # fmt: skip
    """Returns (out, z, p, stats_d float32 (3, C) [mean, rstd, unbiased var], stats_p float32 (3,))."""
    K = _kernels(backend)
    N, C, H, W = u.shape
    k = dw_weight.shape[-1]
    M = N * H * W
    pw = pw_weight.reshape(C).float().contiguous()
    empty = u.new_empty((0,))
    if not training and not need_saved:
        rstd_d = (rvd.float() + eps).rsqrt()
        scale_d, shift_d = _fold(gd, bd, rmd.float(), rstd_d)
        rstd_p = (rvp.float() + eps).rsqrt()
        scale_p, shift_p = _fold(gp, bp, rmp.float(), rstd_p)
        w_f = (dw_weight.reshape(C, k * k).float() * scale_d[:, None]).contiguous()
        bnp = torch.cat([scale_p, shift_p]).contiguous()
        out = K.gate_eval(o1, o2, u, w_f, shift_d.contiguous(), pw, bnp)
        stats_d = torch.stack([rmd.float(), rstd_d, rvd.float()])
        stats_p = torch.cat([rmp.float(), rstd_p, rvp.float()])
        return out, empty, torch.empty((0,), device=u.device), stats_d, stats_p
    z, sums = _dw(backend).conv(u, dw_weight, None, k // 2, stats=training)
    if training:
        mean_d = sums[0] / M
        var_d = (sums[1] / M - mean_d * mean_d).clamp_min(0)
        unb_d = var_d * (M / (M - 1))
    else:
        mean_d, var_d = rmd.double(), rvd.double()
        unb_d = var_d
    rstd_d = (var_d + eps).rsqrt().float()
    scale_d, shift_d = _fold(gd, bd, mean_d.float(), rstd_d)
    p, psums = K.pointwise(z, torch.stack([scale_d, shift_d]).contiguous(), pw)
    if training:
        mean_p = psums[0:1] / M
        var_p = (psums[1:2] / M - mean_p * mean_p).clamp_min(0)
        unb_p = var_p * (M / (M - 1))
    else:
        mean_p, var_p = rmp.double(), rvp.double()
        unb_p = var_p
    rstd_p = (var_p + eps).rsqrt().float()
    scale_p, shift_p = _fold(gp, bp, mean_p.float(), rstd_p)
    out = K.gate(p, torch.cat([scale_p, shift_p]).contiguous(), o1, o2)
    stats_d = torch.stack([mean_d.float(), rstd_d, unb_d.float()])
    stats_p = torch.cat([mean_p.float(), rstd_p, unb_p.float()])
    return out, z, p, stats_d, stats_p


def backward(
    grad,
    o1,
    o2,
    u,
    dw_weight,
    gd,
    bd,
    pw_weight,
    gp,
    bp,
    z,
    p,
    stats_d,
    stats_p,
    training: bool,
    backend: str,
):
    """Gradients (do1, do2, du, d_dw_weight, d_gd, d_bd, d_pw_weight, d_gp, d_bp), shaped like the inputs."""
    K = _kernels(backend)
    N, C, H, W = u.shape
    k = dw_weight.shape[-1]
    M = N * H * W
    pw = pw_weight.reshape(C).float().contiguous()
    mean_p, rstd_p = stats_p[0:1], stats_p[1:2]
    scale_p, shift_p = _fold(gp, bp, mean_p, rstd_p)
    bnp4 = torch.cat([scale_p, shift_p, mean_p, rstd_p]).contiguous()
    do1, do2, dq, sq = K.gate_backward(grad, o1, o2, p, bnp4)
    d_bp, d_gp = sq[0:1], sq[1:2]
    g_r = gp.float() * rstd_p
    if training:
        phat = (p - mean_p) * rstd_p
        dp = g_r * (dq - (sq[0] / M).float() - phat * (sq[1] / M).float())
    else:
        dp = g_r * dq
    zeros = torch.zeros_like(stats_d[0])
    cv = torch.stack([stats_d[0], stats_d[1], gd.float(), bd.float(), zeros, zeros]).contiguous()
    s3 = K.bn_d_backward_sums(z, dp.contiguous(), cv, pw)
    if training:
        cv = torch.cat([cv[:4], (s3[1:3] / M).float()]).contiguous()
    dz = K.bn_d_backward(z, dp.contiguous(), cv, pw)
    du, d_dw, _ = _dw(backend).backward(dz, u, dw_weight, k // 2, True, True, False)
    return (
        do1,
        do2.reshape(o2.shape).to(o2.dtype),
        du,
        d_dw,
        s3[2].to(gd.dtype),
        s3[1].to(bd.dtype),
        s3[0].reshape(pw_weight.shape).to(pw_weight.dtype),
        d_gp.to(gp.dtype),
        d_bp.to(bp.dtype),
    )
