"""Triton kernels for the depthwise convolution (stride 1, odd square kernel). Launchers only, no autograd.

Layout: x and y are (N, C, H, W) tensors with any strides; the tile shape is chosen from the layout so that
loads are contiguous (a spatial row strip for NCHW, a channel block for channels-last). Accumulation is in
float32 (float64 for float64 inputs). The weight is (C, 1, k, k) contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rsn_fast.ops._dispatch import triton_interpret
from rsn_fast.ops._launch import record, small_tiles


@triton.jit
def round_bf16(x):
    """float32 → the nearest bfloat16 value (ties to even), still float32. The interpreter's own cast
    truncates; the GPU cast already rounds, so this runs only under TRITON_INTERPRET=1 (ROUND flags)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _dw_conv_kernel(
    x_ptr,  # input (N, C, H_in, W_in), strides sx*
    w_ptr,  # weight (C, 1, K, K) contiguous
    b_ptr,  # bias (C,) or a dummy when HAS_BIAS is False
    y_ptr,  # output (N, C, H_out, W_out), strides sy*
    stats_ptr,  # float32 (N * tiles, 2, C): per-tile channel sum and sum of squares of y, when STATS
    C,
    H_in,
    W_in,
    H_out,
    W_out,
    pad,
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    FLIP: tl.constexpr,  # use weight[c, K-1-i, K-1-j] (the input gradient is this convolution of grad)
    STATS: tl.constexpr,
    ROUND: tl.constexpr,  # round to bfloat16 by hand (interpreter only)
    ACC: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """y[n,c,h,w] = b[c] + sum_{i,j} x[n,c,h+i-pad,w+j-pad] * w[c,i,j], zero outside x."""
    pid_hw = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    tiles_w = tl.cdiv(W_out, BLOCK_W)
    th = pid_hw // tiles_w
    tw = pid_hw % tiles_w
    offs_p = tl.arange(0, BLOCK_H * BLOCK_W)
    oh = th * BLOCK_H + offs_p // BLOCK_W
    ow = tw * BLOCK_W + offs_p % BLOCK_W
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask_p = (oh < H_out) & (ow < W_out)
    x_base = x_ptr + n * sxn + offs_c[None, :].to(tl.int64) * sxc
    w_base = w_ptr + offs_c * (K * K)
    acc = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_C), dtype=ACC)
    for i in range(K):
        ih = oh + i - pad
        mh = mask_p & (ih >= 0) & (ih < H_in)
        for j in range(K):
            iw = ow + j - pad
            m = mh & (iw >= 0) & (iw < W_in)
            xv = tl.load(
                x_base + (ih * sxh + iw * sxw)[:, None], mask=m[:, None] & mask_c[None, :], other=0.0
            )
            if FLIP:
                widx = (K - 1 - i) * K + (K - 1 - j)
            else:
                widx = i * K + j
            wv = tl.load(w_base + widx, mask=mask_c, other=0.0)
            acc += xv.to(ACC) * wv.to(ACC)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)[None, :]
    m2 = mask_p[:, None] & mask_c[None, :]
    y_off = n * syn + offs_c[None, :].to(tl.int64) * syc + (oh * syh + ow * syw)[:, None]
    if ROUND:
        acc = round_bf16(acc)
    out = acc.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + y_off, out, mask=m2)
    if STATS:
        # statistics of the stored (rounded) values, as BatchNorm after an eager convolution sees them
        v = tl.where(m2, out.to(tl.float32), 0.0)
        slot = (n * tl.num_programs(0) + pid_hw) * 2 * C
        tl.store(stats_ptr + slot + offs_c, tl.sum(v, axis=0), mask=mask_c)
        tl.store(stats_ptr + slot + C + offs_c, tl.sum(v * v, axis=0), mask=mask_c)


@triton.jit
def _dw_wgrad_kernel(
    g_ptr,  # upstream gradient (N, C, H_out, W_out), strides sg*
    x_ptr,  # forward input (N, C, H_in, W_in), strides sx*
    part_ptr,  # float32/float64 partial sums (N-chunks * tiles, K*K, C), contiguous
    N,
    C,
    H_in,
    W_in,
    H_out,
    W_out,
    pad,
    sgn,
    sgc,
    sgh,
    sgw,
    sxn,
    sxc,
    sxh,
    sxw,
    N_CHUNK,
    K: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """part[chunk*tiles + tile, i*K+j, c] = sum over the chunk's n and the tile's (h, w) of
    g[n,c,h,w] * x[n,c,h+i-pad,w+j-pad]."""
    pid_hw = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_n = tl.program_id(2)
    tiles_w = tl.cdiv(W_out, BLOCK_W)
    th = pid_hw // tiles_w
    tw = pid_hw % tiles_w
    offs_p = tl.arange(0, BLOCK_H * BLOCK_W)
    oh = th * BLOCK_H + offs_p // BLOCK_W
    ow = tw * BLOCK_W + offs_p % BLOCK_W
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask_p = (oh < H_out) & (ow < W_out)
    n0 = pid_n * N_CHUNK
    slot = (pid_n * tl.num_programs(0) + pid_hw).to(tl.int64) * (K * K * C)
    g_off = offs_c[None, :].to(tl.int64) * sgc + (oh * sgh + ow * sgw)[:, None]
    x_off = offs_c[None, :].to(tl.int64) * sxc
    for t in range(K * K):
        i = t // K
        j = t % K
        ih = oh + i - pad
        iw = ow + j - pad
        m = mask_p & (ih >= 0) & (ih < H_in) & (iw >= 0) & (iw < W_in)
        m2 = m[:, None] & mask_c[None, :]
        s = tl.zeros((BLOCK_C,), dtype=ACC)
        for dn in range(N_CHUNK):
            n = n0 + dn
            # the batch bound as a block mask: triton 3.9's interpreter rejects a block & scalar mask
            mn = m2 & ((offs_c * 0 + n) < N)[None, :]
            gv = tl.load(g_ptr + n.to(tl.int64) * sgn + g_off, mask=mn, other=0.0)
            xv = tl.load(
                x_ptr + n.to(tl.int64) * sxn + x_off + (ih * sxh + iw * sxw)[:, None], mask=mn, other=0.0
            )
            s += tl.sum(gv.to(ACC) * xv.to(ACC), axis=0)
        tl.store(part_ptr + slot + t * C + offs_c, s, mask=mask_c)


def needs_rounding(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and triton_interpret()


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def channels_last(t: torch.Tensor) -> bool:
    """True when t is channels-last in memory and not also plain contiguous."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _tile(C: int, cl: bool) -> tuple[int, int, int, int]:
    """(BLOCK_H, BLOCK_W, BLOCK_C, num_warps) for a layout: contiguous loads along W (NCHW) or C (NHWC)."""
    if small_tiles():  # multi-tile tests under the interpreter (see rsn_fast.ops._launch)
        return 8, 8, min(8, triton.next_power_of_2(C)), 4
    if triton_interpret():
        # the interpreter's cost is per program and per op, not per element: few, large programs
        return 16, 16, min(32, triton.next_power_of_2(C)), 4
    if cl:
        bc = min(64, triton.next_power_of_2(C))
        return (4, 8, bc, 4) if bc >= 32 else (8, 8, bc, 4)
    return 8, 32, 1, 4


def new_output(shape, like: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """Uninitialised output buffer (tests replace this to poison outputs with NaN)."""
    return torch.empty(shape, device=like.device, dtype=like.dtype, memory_format=memory_format)


def out_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if channels_last(x) else torch.contiguous_format


def conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: int,
    flip: bool = False,
    out_hw: tuple[int, int] | None = None,
    stats: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Depthwise convolution of x (N,C,H,W) by weight (C,1,k,k) (flipped when ``flip``).

    Returns (y (N,C,Ho,Wo) in x's dtype and layout, stats (2, C) float64 [sum, sum of squares] of y or None).
    """
    N, C, H, W = x.shape
    k = weight.shape[-1]
    Ho, Wo = out_hw if out_hw is not None else (H + 2 * padding - k + 1, W + 2 * padding - k + 1)
    cl = channels_last(x)
    y = new_output((N, C, Ho, Wo), x, out_format(x))
    bh, bw, bc, nw = _tile(C, cl)
    tiles = triton.cdiv(Ho, bh) * triton.cdiv(Wo, bw)
    part = torch.empty((N * tiles, 2, C) if stats else (1,), device=x.device, dtype=torch.float32)
    w = weight.contiguous()
    grid = (tiles, triton.cdiv(C, bc), N)
    record(_dw_conv_kernel, grid, h=(Ho, bh), w=(Wo, bw), c=(C, bc))
    _dw_conv_kernel[grid](
        x, w, bias if bias is not None else w, y, part, C, H, W, Ho, Wo, padding,
        *x.stride(), *y.stride(),
        K=k, HAS_BIAS=bias is not None, FLIP=flip, STATS=stats, ROUND=needs_rounding(x.dtype), ACC=_acc_dtype(x.dtype),
        BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc, num_warps=nw,
    )  # fmt: skip
    return y, (part.sum(0, dtype=torch.float64) if stats else None)


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    return conv(x, weight, bias, padding)[0]


def weight_grad(grad: torch.Tensor, x: torch.Tensor, k: int, padding: int) -> torch.Tensor:
    """dweight (C,1,k,k) in x's dtype: sum over n, h, w of grad[n,c,h,w] * x[n,c,h+i-p,w+j-p]."""
    N, C, H, W = x.shape
    Ho, Wo = grad.shape[-2:]
    cl = channels_last(x)
    bh, bw, bc, nw = _tile(C, cl)
    tiles = triton.cdiv(Ho, bh) * triton.cdiv(Wo, bw)
    cblocks = triton.cdiv(C, bc)
    # enough programs to fill a GPU (about 4 per SM on 132 SMs), each summing over a chunk of the batch
    n_chunks = max(1, min(N, triton.cdiv(512, tiles * cblocks)))
    if triton_interpret():
        n_chunks = 1
    n_chunk = triton.cdiv(N, n_chunks)
    if small_tiles():
        n_chunk = min(N, 2)  # chunks of 2: a batch of 3 gives two chunks, the last one partial
    n_chunks = triton.cdiv(N, n_chunk)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    part = torch.empty((n_chunks * tiles, k * k, C), device=x.device, dtype=acc)
    record(_dw_wgrad_kernel, (tiles, cblocks, n_chunks), h=(Ho, bh), w=(Wo, bw), c=(C, bc), n=(N, n_chunk))
    _dw_wgrad_kernel[(tiles, cblocks, n_chunks)](
        grad, x, part, N, C, H, W, Ho, Wo, padding, *grad.stride(), *x.stride(), n_chunk,
        K=k, ACC=_acc_dtype(x.dtype), BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc, num_warps=nw,
    )  # fmt: skip
    return part.sum(0).t().reshape(C, 1, k, k).to(x.dtype)


def backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    padding: int,
    need_input: bool = True,
    need_weight: bool = True,
    need_bias: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(dx, dweight, dbias) for upstream ``grad`` (N,C,Ho,Wo); any strides, stride-0 views included."""
    k = weight.shape[-1]
    H, W = x.shape[-2:]
    dx = dw = db = None
    if need_input:
        # dx = grad convolved with the flipped kernel, padding k-1-p; grad's layout follows x's
        g = grad.contiguous(memory_format=out_format(x))
        dx = conv(g, weight, None, k - 1 - padding, flip=True, out_hw=(H, W))[0]
    if need_weight:
        dw = weight_grad(grad, x, k, padding)
    if need_bias:
        acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
        db = grad.sum(dim=(0, 2, 3), dtype=acc).to(grad.dtype)
    return dx, dw, db
