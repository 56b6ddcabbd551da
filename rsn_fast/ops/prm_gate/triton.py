"""Triton kernels of the fused PRM spatial gate (see reference.py for the math). Launchers only, no autograd.

Tensors (N, C, H, W) may be contiguous or channels-last (strides are passed). Per-pixel maps p, dq, dp are
float32 (N, H*W) contiguous. Small per-channel vectors are float32. Everything accumulates in float32.
Training forward: [depthwise conv + channel statistics] → [BN_d + ReLU + pointwise reduction + its statistics]
→ [BN_p + ReLU + sigmoid + gate]. Eval forward with no gradient: one kernel with BN_d folded into the conv.
Backward: [gate backward + reduction over channels + BN_p statistics] → [BN_d backward statistics] →
[BN_d backward, writes dz] → depthwise input and weight gradients of dz.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rsn_fast.ops._dispatch import triton_interpret
from rsn_fast.ops._launch import record, small_tiles
from rsn_fast.ops.depthwise_conv2d import triton as dw_triton
from rsn_fast.ops.depthwise_conv2d.triton import round_bf16


@triton.jit
def _gate_eval_kernel(
    u_ptr,  # (N, C, H, W) input of the depthwise conv, strides su*
    w_ptr,  # float32 (C, K*K) depthwise weight with BN_d's scale folded in
    bd_ptr,  # float32 (C,) BN_d shift (folded bias)
    wp_ptr,  # float32 (C,) pointwise weight
    bnp_ptr,  # float32 (2,) BN_p folded [scale, shift]
    o1_ptr,  # (N, C, H, W), strides so*
    o2_ptr,  # (N, C) channel weights, strides (so2n, so2c)
    out_ptr,  # (N, C, H, W), strides sy*
    C, H, W, pad,
    sun, suc, suh, suw,
    son, soc, soh, sow,
    so2n, so2c,
    syn, syc, syh, syw,
    K: tl.constexpr, ROUND: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs < H * W
    oh = offs // W
    ow = offs % W
    pacc = tl.zeros((BLOCK_P,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        base = u_ptr + n * sun + offs_c[None, :].to(tl.int64) * suc
        acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        for i in range(K):
            ih = oh + i - pad
            mh = mask_p & (ih >= 0) & (ih < H)
            for j in range(K):
                iw = ow + j - pad
                m = mh & (iw >= 0) & (iw < W)
                xv = tl.load(
                    base + (ih * suh + iw * suw)[:, None], mask=m[:, None] & mask_c[None, :], other=0.0
                )
                wv = tl.load(w_ptr + offs_c * (K * K) + i * K + j, mask=mask_c, other=0.0)
                acc += xv.to(tl.float32) * wv[None, :]
        a = tl.maximum(acc + tl.load(bd_ptr + offs_c, mask=mask_c, other=0.0)[None, :], 0.0)
        pacc += tl.sum(a * tl.load(wp_ptr + offs_c, mask=mask_c, other=0.0)[None, :], axis=1)
    beta = tl.sigmoid(tl.maximum(pacc * tl.load(bnp_ptr) + tl.load(bnp_ptr + 1), 0.0))
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        m2 = mask_p[:, None] & mask_c[None, :]
        cc = offs_c[None, :].to(tl.int64)
        o1 = tl.load(o1_ptr + n * son + cc * soc + (oh * soh + ow * sow)[:, None], mask=m2, other=0.0)
        o2 = tl.load(o2_ptr + n * so2n + offs_c * so2c, mask=mask_c, other=0.0).to(tl.float32)
        out = o1.to(tl.float32) * (1.0 + o2[None, :] * beta[:, None])
        if ROUND:
            out = round_bf16(out)
        tl.store(
            out_ptr + n * syn + cc * syc + (oh * syh + ow * syw)[:, None],
            out.to(out_ptr.dtype.element_ty),
            mask=m2,
        )


@triton.jit
def _pointwise_kernel(
    z_ptr,  # (N, C, H, W) depthwise output, strides sz*
    sd_ptr,  # float32 (2, C): BN_d folded [scale; shift]
    wp_ptr,  # float32 (C,) pointwise weight
    p_ptr,  # float32 (N, H*W) out: p = sum_c wp[c] * relu(z * scale + shift)
    part_ptr,  # float32 (N * tiles, 2) out: per-program sum and sum of squares of p
    C, HW, W,
    szn, szc, szh, szw,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs < HW
    pix = (offs // W) * szh + (offs % W) * szw
    pacc = tl.zeros((BLOCK_P,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        m2 = mask_p[:, None] & mask_c[None, :]
        z = tl.load(z_ptr + n * szn + offs_c[None, :].to(tl.int64) * szc + pix[:, None], mask=m2, other=0.0)
        sc = tl.load(sd_ptr + offs_c, mask=mask_c, other=0.0)
        sh = tl.load(sd_ptr + C + offs_c, mask=mask_c, other=0.0)
        a = tl.maximum(z.to(tl.float32) * sc[None, :] + sh[None, :], 0.0)
        pacc += tl.sum(a * tl.load(wp_ptr + offs_c, mask=mask_c, other=0.0)[None, :], axis=1)
    tl.store(p_ptr + n * HW + offs, pacc, mask=mask_p)
    v = tl.where(mask_p, pacc, 0.0)
    slot = (n * tl.num_programs(0) + pid) * 2
    tl.store(part_ptr + slot, tl.sum(v, axis=0))
    tl.store(part_ptr + slot + 1, tl.sum(v * v, axis=0))


@triton.jit
def _gate_kernel(
    p_ptr,  # float32 (N, H*W)
    bnp_ptr,  # float32 (2,) BN_p folded [scale, shift]
    o1_ptr, o2_ptr, out_ptr,  # as in _gate_eval_kernel
    C, HW, W,
    son, soc, soh, sow,
    so2n, so2c,
    syn, syc, syh, syw,
    ROUND: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """out = o1 * (1 + o2 * sigmoid(relu(p * scale + shift)))."""
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs < HW
    oh = offs // W
    ow = offs % W
    p = tl.load(p_ptr + n * HW + offs, mask=mask_p, other=0.0)
    beta = tl.sigmoid(tl.maximum(p * tl.load(bnp_ptr) + tl.load(bnp_ptr + 1), 0.0))
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    m2 = mask_p[:, None] & mask_c[None, :]
    cc = offs_c[None, :].to(tl.int64)
    o1 = tl.load(o1_ptr + n * son + cc * soc + (oh * soh + ow * sow)[:, None], mask=m2, other=0.0)
    o2 = tl.load(o2_ptr + n * so2n + offs_c * so2c, mask=mask_c, other=0.0).to(tl.float32)
    out = o1.to(tl.float32) * (1.0 + o2[None, :] * beta[:, None])
    if ROUND:
        out = round_bf16(out)
    tl.store(
        out_ptr + n * syn + cc * syc + (oh * syh + ow * syw)[:, None],
        out.to(out_ptr.dtype.element_ty),
        mask=m2,
    )


@triton.jit
def _gate_bwd_kernel(
    g_ptr,  # (N, C, H, W) upstream gradient, strides sg*
    o1_ptr,  # (N, C, H, W), strides so*
    o2_ptr,  # (N, C), strides so2*
    p_ptr,  # float32 (N, H*W)
    bnp_ptr,  # float32 (4,) [scale, shift, mean_p, rstd_p] of BN_p
    do1_ptr,  # (N, C, H, W) out, strides sd*
    do2_ptr,  # float32 (N, tiles, C) out: per-tile sum over pixels of g * o1 * beta
    dq_ptr,  # float32 (N, H*W) out: gradient at BN_p's output (before its ReLU's mask is applied: after)
    part_ptr,  # float32 (N * tiles, 2) out: per-tile sum of dq and of dq * p_hat
    C, HW, W,
    sgn, sgc, sgh, sgw,
    son, soc, soh, sow,
    so2n, so2c,
    sdn, sdc, sdh, sdw,
    ROUND: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs < HW
    oh = offs // W
    ow = offs % W
    p = tl.load(p_ptr + n * HW + offs, mask=mask_p, other=0.0)
    q = p * tl.load(bnp_ptr) + tl.load(bnp_ptr + 1)
    beta = tl.sigmoid(tl.maximum(q, 0.0))
    dbeta = tl.zeros((BLOCK_P,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        m2 = mask_p[:, None] & mask_c[None, :]
        cc = offs_c[None, :].to(tl.int64)
        g = tl.load(g_ptr + n * sgn + cc * sgc + (oh * sgh + ow * sgw)[:, None], mask=m2, other=0.0).to(
            tl.float32
        )
        o1 = tl.load(o1_ptr + n * son + cc * soc + (oh * soh + ow * sow)[:, None], mask=m2, other=0.0).to(
            tl.float32
        )
        o2 = tl.load(o2_ptr + n * so2n + offs_c * so2c, mask=mask_c, other=0.0).to(tl.float32)
        do1 = g * (1.0 + o2[None, :] * beta[:, None])
        if ROUND:
            do1 = round_bf16(do1)
        tl.store(
            do1_ptr + n * sdn + cc * sdc + (oh * sdh + ow * sdw)[:, None],
            do1.to(do1_ptr.dtype.element_ty),
            mask=m2,
        )
        go1 = g * o1
        dbeta += tl.sum(go1 * o2[None, :], axis=1)
        tl.store(
            do2_ptr + (n * tl.num_programs(0) + pid) * C + offs_c,
            tl.sum(go1 * beta[:, None], axis=0),
            mask=mask_c,
        )
    dq = tl.where(mask_p & (q > 0.0), dbeta * beta * (1.0 - beta), 0.0)
    tl.store(dq_ptr + n * HW + offs, dq, mask=mask_p)
    phat = (p - tl.load(bnp_ptr + 2)) * tl.load(bnp_ptr + 3)
    slot = (n * tl.num_programs(0) + pid) * 2
    tl.store(part_ptr + slot, tl.sum(dq, axis=0))
    tl.store(part_ptr + slot + 1, tl.sum(dq * phat, axis=0))


@triton.jit
def _bn_d_bwd_kernel(
    z_ptr,  # (N, C, H, W) depthwise output, strides sz*
    dp_ptr,  # float32 (N, H*W) gradient at the pointwise output
    cv_ptr,  # float32 (6, C): [mean_d, rstd_d, gamma_d, beta_d, mean(dr), mean(dr * z_hat)] (last two: stage 1)
    wp_ptr,  # float32 (C,) pointwise weight
    part_ptr,  # stage 0 out: float32 (N * tiles, 3, C) per-tile sums of dp * a, dr, dr * z_hat
    dz_ptr,  # stage 1 out: (N, C, H, W) gradient at z, strides sd*
    C, HW, W,
    szn, szc, szh, szw,
    sdn, sdc, sdh, sdw,
    STAGE: tl.constexpr, ROUND: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """dr = dp * wp[c] * [a > 0]; stage 0 sums; stage 1: dz = gamma * rstd * (dr - mean(dr) - z_hat * mean(dr z_hat))."""
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs < HW
    oh = offs // W
    ow = offs % W
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    m2 = mask_p[:, None] & mask_c[None, :]
    cc = offs_c[None, :].to(tl.int64)
    z = tl.load(z_ptr + n * szn + cc * szc + (oh * szh + ow * szw)[:, None], mask=m2, other=0.0).to(
        tl.float32
    )
    mean = tl.load(cv_ptr + offs_c, mask=mask_c, other=0.0)
    rstd = tl.load(cv_ptr + C + offs_c, mask=mask_c, other=0.0)
    gamma = tl.load(cv_ptr + 2 * C + offs_c, mask=mask_c, other=0.0)
    shift = tl.load(cv_ptr + 3 * C + offs_c, mask=mask_c, other=0.0)
    zhat = (z - mean[None, :]) * rstd[None, :]
    y = zhat * gamma[None, :] + shift[None, :]
    dp = tl.load(dp_ptr + n * HW + offs, mask=mask_p, other=0.0)
    wp = tl.load(wp_ptr + offs_c, mask=mask_c, other=0.0)
    dr = tl.where(m2 & (y > 0.0), dp[:, None] * wp[None, :], 0.0)
    if STAGE == 0:
        a = tl.where(m2, tl.maximum(y, 0.0), 0.0)
        slot = (n * tl.num_programs(0) + pid) * 3 * C
        tl.store(part_ptr + slot + offs_c, tl.sum(a * dp[:, None], axis=0), mask=mask_c)
        tl.store(part_ptr + slot + C + offs_c, tl.sum(dr, axis=0), mask=mask_c)
        tl.store(part_ptr + slot + 2 * C + offs_c, tl.sum(dr * zhat, axis=0), mask=mask_c)
    else:
        m_dr = tl.load(cv_ptr + 4 * C + offs_c, mask=mask_c, other=0.0)
        m_drz = tl.load(cv_ptr + 5 * C + offs_c, mask=mask_c, other=0.0)
        dz = (gamma * rstd)[None, :] * (dr - m_dr[None, :] - zhat * m_drz[None, :])
        if ROUND:
            dz = round_bf16(dz)
        tl.store(
            dz_ptr + n * sdn + cc * sdc + (oh * sdh + ow * sdw)[:, None],
            dz.to(dz_ptr.dtype.element_ty),
            mask=m2,
        )


def _blocks(C: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C): pixels per program and channels per inner step."""
    if small_tiles():  # multi-tile tests under the interpreter (see rsn_fast.ops._launch)
        return 32, min(8, triton.next_power_of_2(C))
    if triton_interpret():
        return 256, min(32, triton.next_power_of_2(C))
    return 64, min(32, triton.next_power_of_2(C))


def new_like(t: torch.Tensor) -> torch.Tensor:
    """Uninitialised output shaped and laid out like t (tests replace this to poison outputs with NaN)."""
    return torch.empty_like(t, memory_format=dw_triton.out_format(t))


def _o2_2d(o2: torch.Tensor) -> torch.Tensor:
    return o2.reshape(o2.shape[0], o2.shape[1])


def gate_eval(o1, o2, u, w_folded, shift_d, pw, bnp):
    """One-kernel eval forward. w_folded float32 (C, k*k), shift_d/pw float32 (C,), bnp float32 (2,)."""
    N, C, H, W = u.shape
    k = int(round(w_folded.shape[1] ** 0.5))
    out = new_like(o1)
    o2 = _o2_2d(o2)
    bp, bc = _blocks(C)
    grid = (triton.cdiv(H * W, bp), N)
    record(_gate_eval_kernel, grid, p=(H * W, bp), c_step=(C, bc))
    _gate_eval_kernel[grid](
        u, w_folded, shift_d, pw, bnp, o1, o2, out, C, H, W, k // 2,
        *u.stride(), *o1.stride(), *o2.stride(), *out.stride(), K=k, ROUND=dw_triton.needs_rounding(o1.dtype), BLOCK_P=bp, BLOCK_C=bc,
    )  # fmt: skip
    return out


def pointwise(z, scale_shift_d, pw):
    """p (N, H*W) float32 and its (sum, sum of squares) in float64 (2,)."""
    N, C, H, W = z.shape
    bp, bc = _blocks(C)
    tiles = triton.cdiv(H * W, bp)
    p = torch.empty((N, H * W), device=z.device, dtype=torch.float32)
    part = torch.empty((N * tiles, 2), device=z.device, dtype=torch.float32)
    record(_pointwise_kernel, (tiles, N), p=(H * W, bp), c_step=(C, bc))
    _pointwise_kernel[(tiles, N)](
        z, scale_shift_d, pw, p, part, C, H * W, W, *z.stride(), BLOCK_P=bp, BLOCK_C=bc
    )
    return p, part.sum(0, dtype=torch.float64)


def gate(p, bnp, o1, o2):
    N, C, H, W = o1.shape
    out = new_like(o1)
    o2 = _o2_2d(o2)
    bp, bc = _blocks(C)
    grid = (triton.cdiv(H * W, bp), N, triton.cdiv(C, bc))
    record(_gate_kernel, grid, p=(H * W, bp), c=(C, bc))
    _gate_kernel[grid](
        p,
        bnp,
        o1,
        o2,
        out,
        C,
        H * W,
        W,
        *o1.stride(),
        *o2.stride(),
        *out.stride(),
        ROUND=dw_triton.needs_rounding(o1.dtype),
        BLOCK_P=bp,
        BLOCK_C=bc,
    )
    return out


def gate_backward(grad, o1, o2, p, bnp4):
    """(do1, do2 (N, C) float32, dq (N, H*W) float32, sums (2,) float64 of dq and dq * p_hat)."""
    N, C, H, W = o1.shape
    bp, bc = _blocks(C)
    tiles = triton.cdiv(H * W, bp)
    do1 = new_like(o1)
    do2 = torch.empty((N, tiles, C), device=o1.device, dtype=torch.float32)
    dq = torch.empty((N, H * W), device=o1.device, dtype=torch.float32)
    part = torch.empty((N * tiles, 2), device=o1.device, dtype=torch.float32)
    o2 = _o2_2d(o2)
    record(_gate_bwd_kernel, (tiles, N), p=(H * W, bp), c_step=(C, bc))
    _gate_bwd_kernel[(tiles, N)](
        grad, o1, o2, p, bnp4, do1, do2, dq, part, C, H * W, W,
        *grad.stride(), *o1.stride(), *o2.stride(), *do1.stride(),
        ROUND=dw_triton.needs_rounding(o1.dtype), BLOCK_P=bp, BLOCK_C=bc,
    )  # fmt: skip
    return do1, do2.sum(1), dq, part.sum(0, dtype=torch.float64)


def bn_d_backward_sums(z, dp, cv, pw):
    """float64 (3, C): sums over (n, h, w) of dp * a, dr and dr * z_hat."""
    N, C, H, W = z.shape
    bp, bc = _blocks(C)
    tiles = triton.cdiv(H * W, bp)
    part = torch.empty((N * tiles, 3, C), device=z.device, dtype=torch.float32)
    grid = (tiles, N, triton.cdiv(C, bc))
    record(_bn_d_bwd_kernel, grid, p=(H * W, bp), c=(C, bc))
    _bn_d_bwd_kernel[grid](
        z,
        dp,
        cv,
        pw,
        part,
        z,
        C,
        H * W,
        W,
        *z.stride(),
        *z.stride(),
        STAGE=0,
        ROUND=False,
        BLOCK_P=bp,
        BLOCK_C=bc,
    )
    return part.sum(0, dtype=torch.float64)


def bn_d_backward(z, dp, cv, pw):
    """dz (N, C, H, W) in z's dtype and layout."""
    N, C, H, W = z.shape
    bp, bc = _blocks(C)
    dz = new_like(z)
    grid = (triton.cdiv(H * W, bp), N, triton.cdiv(C, bc))
    record(_bn_d_bwd_kernel, grid, p=(H * W, bp), c=(C, bc))
    _bn_d_bwd_kernel[grid](
        z,
        dp,
        cv,
        pw,
        dz,
        dz,
        C,
        H * W,
        W,
        *z.stride(),
        *dz.stride(),
        STAGE=1,
        ROUND=dw_triton.needs_rounding(z.dtype),
        BLOCK_P=bp,
        BLOCK_C=bc,
    )
    return dz
