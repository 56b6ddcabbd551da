"""Triton implicit-GEMM convolution with the RSB prologue/epilogue fusions. Launcher only, no autograd.

Math (see :mod:`rsn_fast.ops.rsb.reference`): ``z = conv(u, W) (+ bias)`` with ``u`` the sum (or channel concat)
of ``act(src_k * scale_k + shift_k)``, zero padding applied to ``u`` (after the activation, as the module does);
per-channel sum and sum of squares of z in fp32.

Layout: the output is written NHWC (channels-last). Sources may have any strides (channel slices of a
channels-last tensor are read in place: channel stride 1, so a channel block is one contiguous load). The
weight is re-laid out as (k, k, C_in, C_out) so a (BLOCK_K, BLOCK_N) tile is contiguous along C_out.
GEMM view: M = N*H'*W' output pixels, N = C_out, K = k*k*C_in; nine (or one) taps x channel blocks of
``tl.dot``. The statistics are written per M-tile (no atomics) and reduced by torch afterwards, so they are
deterministic on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rsn_fast.ops._dispatch import triton_interpret
from rsn_fast.ops._launch import record, small_tiles
from rsn_fast.ops.depthwise_conv2d.triton import needs_rounding, round_bf16


@triton.jit
def _load_act(
    ptr,  # source base pointer
    sn,
    sc,
    sh,
    sw,  # source strides (elements)
    scale_ptr,  # fp32 (sum C_k,) per-channel scale, or dummy when not HAS_AFFINE
    shift_ptr,  # fp32 (sum C_k,) per-channel shift
    aff_off,  # offset of this source's channels in scale/shift
    n,
    ih,
    iw,  # (BLOCK_M,) batch index (int64) and input coordinates of each output pixel for this tap
    valid,  # (BLOCK_M,) pixel inside the image (else zero padding)
    ci,  # (BLOCK_K,) channel indices
    mask_c,  # (BLOCK_K,) ci < C_k
    HAS_AFFINE: tl.constexpr,
    RELU: tl.constexpr,
):
    """A (BLOCK_M, BLOCK_K) fp32 tile of act(src * scale + shift), zero where padding or out of range."""
    m2 = valid[:, None] & mask_c[None, :]
    offs = (n * sn + ih.to(tl.int64) * sh + iw.to(tl.int64) * sw)[:, None] + ci[None, :].to(tl.int64) * sc
    v = tl.load(ptr + offs, mask=m2, other=0.0).to(tl.float32)
    if HAS_AFFINE:
        a = tl.load(scale_ptr + aff_off + ci, mask=mask_c, other=0.0)
        b = tl.load(shift_ptr + aff_off + ci, mask=mask_c, other=0.0)
        v = v * a[None, :] + b[None, :]
    if RELU:
        v = tl.maximum(v, 0.0)
    return tl.where(m2, v, 0.0)


@triton.jit
def _mma(acc, u, wt, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr, ROUND: tl.constexpr):
    """acc + u @ wt with u rounded to the weight dtype first (as the module's conv input would be)."""
    if ROUND:
        u = round_bf16(u)
    if UPCAST_DOT:
        return acc + tl.dot(u.to(wt.dtype).to(tl.float32), wt.to(tl.float32), input_precision="ieee")
    return acc + tl.dot(u.to(wt.dtype), wt, input_precision=DOT_PRECISION)


@triton.jit
def _conv_bnact_stats_kernel(
    x0_ptr,
    x1_ptr,
    x2_ptr,
    x3_ptr,  # sources (N, C_src, H, W), any strides; unused ones alias x0
    s0n,
    s0c,
    s0h,
    s0w,
    s1n,
    s1c,
    s1h,
    s1w,
    s2n,
    s2c,
    s2h,
    s2w,
    s3n,
    s3c,
    s3h,
    s3w,  # their strides
    scale_ptr,
    shift_ptr,  # fp32 (NSRC * C_src,) prologue affine, dummies when not HAS_AFFINE
    w_ptr,  # (KS, KS, C_in, C_out) contiguous, C_in = C_src (sum) or NSRC * C_src (cat)
    bias_ptr,  # (C_out,) or dummy when not HAS_BIAS
    z_ptr,  # output (N, H_out, W_out, C_out) contiguous (NHWC)
    part_ptr,  # fp32 (num M tiles, 2, C_out): per-tile sum and sum of squares, when STATS
    M,
    H,
    W,
    H_out,
    W_out,
    C_src,
    C_out,
    STRIDE: tl.constexpr,
    KS: tl.constexpr,
    PAD: tl.constexpr,
    NSRC: tl.constexpr,
    CAT: tl.constexpr,
    HAS_AFFINE: tl.constexpr,
    RELU: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    STATS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,  # dot in fp32: the interpreter's bf16 tl.dot returns garbage (triton 3.8)
    ROUND: tl.constexpr,  # round to nearest bf16 by hand: the interpreter's cast truncates (triton 3.8)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    hw = H_out * W_out
    n = (offs_m // hw).to(tl.int64)
    rem = offs_m % hw
    oh = rem // W_out
    ow = rem % W_out
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < C_out
    c_in = C_src * NSRC if CAT else C_src
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in tl.static_range(KS):
        for kw in tl.static_range(KS):
            ih = oh * STRIDE + kh - PAD
            iw = ow * STRIDE + kw - PAD
            valid = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            w_tap = w_ptr + (kh * KS + kw) * c_in * C_out
            for c0 in range(0, C_src, BLOCK_K):
                ci = c0 + tl.arange(0, BLOCK_K)
                mask_c = ci < C_src
                if CAT:
                    # concat of sources = sum of per-source GEMMs over their rows of the weight
                    for k in tl.static_range(NSRC):
                        if k == 0:
                            u = _load_act(x0_ptr, s0n, s0c, s0h, s0w, scale_ptr, shift_ptr, 0, n, ih, iw,
                                          valid, ci, mask_c, HAS_AFFINE, RELU)  # fmt: skip
                        elif k == 1:
                            u = _load_act(x1_ptr, s1n, s1c, s1h, s1w, scale_ptr, shift_ptr, C_src, n, ih, iw,
                                          valid, ci, mask_c, HAS_AFFINE, RELU)  # fmt: skip
                        elif k == 2:
                            u = _load_act(x2_ptr, s2n, s2c, s2h, s2w, scale_ptr, shift_ptr, 2 * C_src, n, ih,
                                          iw, valid, ci, mask_c, HAS_AFFINE, RELU)  # fmt: skip
                        else:
                            u = _load_act(x3_ptr, s3n, s3c, s3h, s3w, scale_ptr, shift_ptr, 3 * C_src, n, ih,
                                          iw, valid, ci, mask_c, HAS_AFFINE, RELU)  # fmt: skip
                        rows = k * C_src + ci
                        wt = tl.load(w_tap + rows[:, None] * C_out + offs_n[None, :],
                                     mask=mask_c[:, None] & mask_n[None, :], other=0.0)  # fmt: skip
                        acc = _mma(acc, u, wt, DOT_PRECISION, UPCAST_DOT, ROUND)
                else:
                    u = _load_act(x0_ptr, s0n, s0c, s0h, s0w, scale_ptr, shift_ptr, 0, n, ih, iw, valid, ci,
                                  mask_c, HAS_AFFINE, RELU)  # fmt: skip
                    if NSRC > 1:
                        u += _load_act(x1_ptr, s1n, s1c, s1h, s1w, scale_ptr, shift_ptr, C_src, n, ih, iw,
                                       valid, ci, mask_c, HAS_AFFINE, RELU)  # fmt: skip
                    if NSRC > 2:
                        u += _load_act(x2_ptr, s2n, s2c, s2h, s2w, scale_ptr, shift_ptr, 2 * C_src, n, ih, iw,
                                       valid, ci, mask_c, HAS_AFFINE, RELU)  # fmt: skip
                    if NSRC > 3:
                        u += _load_act(x3_ptr, s3n, s3c, s3h, s3w, scale_ptr, shift_ptr, 3 * C_src, n, ih, iw,
                                       valid, ci, mask_c, HAS_AFFINE, RELU)  # fmt: skip
                    wt = tl.load(w_tap + ci[:, None] * C_out + offs_n[None, :],
                                 mask=mask_c[:, None] & mask_n[None, :], other=0.0)  # fmt: skip
                    acc = _mma(acc, u, wt, DOT_PRECISION, UPCAST_DOT, ROUND)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if ROUND:
        acc = round_bf16(acc)
    m2 = mask_m[:, None] & mask_n[None, :]
    z_offs = offs_m.to(tl.int64)[:, None] * C_out + offs_n[None, :]
    tl.store(z_ptr + z_offs, acc.to(z_ptr.dtype.element_ty), mask=m2)
    if STATS:
        # statistics of the value BatchNorm will see: z rounded to its storage dtype
        zr = tl.where(m2, acc.to(z_ptr.dtype.element_ty).to(tl.float32), 0.0)
        base = part_ptr + pid_m.to(tl.int64) * 2 * C_out
        tl.store(base + offs_n, tl.sum(zr, axis=0), mask=mask_n)
        tl.store(base + C_out + offs_n, tl.sum(zr * zr, axis=0), mask=mask_n)


def _blocks(c_out: int, c_src: int) -> tuple[int, int, int]:
    if small_tiles():  # tl.dot's smallest tile, for the multi-tile tests (see rsn_fast.ops._launch)
        return 16, 16, 16
    block_n = min(128, max(16, triton.next_power_of_2(c_out)))
    block_k = min(64, max(16, triton.next_power_of_2(c_src)))
    return 64, block_n, block_k


def conv_bnact_stats_forward(
    srcs: list[torch.Tensor],
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    padding: int,
    relu: bool,
    cat: bool,
    stats: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the kernel; returns (z NHWC-strided (N, C_out, H', W'), sum, sumsq) like the reference."""
    n, c_src, h, w = srcs[0].shape
    if any(s.shape[1] != c_src or s.shape[0] != n or s.shape[2:] != srcs[0].shape[2:] for s in srcs):
        raise ValueError("rsb_conv_bnact_stats (triton): all sources must have the same shape")
    c_out, c_in, ks, _ = weight.shape
    h_out = (h + 2 * padding - ks) // stride + 1
    w_out = (w + 2 * padding - ks) // stride + 1
    z = torch.empty((n, h_out, w_out, c_out), dtype=weight.dtype, device=weight.device).permute(0, 3, 1, 2)
    m = n * h_out * w_out
    block_m, block_n, block_k = _blocks(c_out, c_src)
    grid = (triton.cdiv(m, block_m), triton.cdiv(c_out, block_n))
    part = torch.empty((grid[0] if stats else 1, 2, c_out), dtype=torch.float32, device=weight.device)
    record(_conv_bnact_stats_kernel, grid, m=(m, block_m), n=(c_out, block_n), k_step=(c_src, block_k))
    w_t = weight.permute(2, 3, 1, 0).contiguous()
    xs = list(srcs) + [srcs[0]] * (4 - len(srcs))
    strides = [st for s in xs for st in s.stride()]
    has_affine = scale is not None
    aff_scale = scale.float().contiguous() if has_affine else part
    aff_shift = shift.float().contiguous() if has_affine else part
    fp32_dot = weight.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    _conv_bnact_stats_kernel[grid](
        *xs, *strides, aff_scale, aff_shift, w_t, bias if bias is not None else part, z, part,
        m, h, w, h_out, w_out, c_src, c_out,
        STRIDE=stride, KS=ks, PAD=padding, NSRC=len(srcs), CAT=cat, HAS_AFFINE=has_affine, RELU=relu,
        HAS_BIAS=bias is not None, STATS=stats, DOT_PRECISION="ieee" if fp32_dot else "tf32",
        UPCAST_DOT=triton_interpret() and weight.dtype == torch.bfloat16, ROUND=needs_rounding(weight.dtype),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )  # fmt: skip
    if stats:
        return z, part[:, 0].sum(0), part[:, 1].sum(0)
    empty = z.new_empty((0,), dtype=torch.float32)
    return z, empty, empty.clone()
