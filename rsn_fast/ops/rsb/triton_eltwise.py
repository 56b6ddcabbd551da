"""Triton elementwise / per-channel-reduction kernels of the RSB (the backward of the conv op and the block's
final epilogue). Launchers only, no autograd. Math: :mod:`rsn_fast.ops.rsb.reference`.

Every kernel walks (BLOCK_P pixels x BLOCK_C channels) tiles of maps that are dense in one layout (NCHW, or
NHWC when CL); sources of the prologue backward are read in place through their strides. Per-channel sums are
written per pixel tile (``part`` (tiles, rows, C)) and reduced by torch afterwards in a fixed order, so results
are deterministic on a GPU (no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rsn_fast.ops._launch import record, small_tiles
from rsn_fast.ops.depthwise_conv2d.triton import needs_rounding, round_bf16
from rsn_fast.ops.rsb.reference import channels_last_like

BLOCK_P_GPU = 64
BLOCK_P_SMALL = 16  # the multi-tile tests' tiles under the interpreter (see rsn_fast.ops._launch)


@triton.jit
def _tile(C, HW, CL: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, M):
    """Pixel / channel indices of this program's tile, masks, and dense offsets (BLOCK_P, BLOCK_C)."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mp = p < M
    mc = c < C
    n = (p // HW).to(tl.int64)
    hw = (p % HW).to(tl.int64)
    if CL:
        off = (n * HW + hw)[:, None] * C + c[None, :]
    else:
        off = (n * C * HW + hw)[:, None] + c[None, :].to(tl.int64) * HW
    return p, c, mp, mc, n, hw, off


@triton.jit
def _store(ptr, off, v, mask, ROUND: tl.constexpr):
    if ROUND:
        v = round_bf16(v)
    tl.store(ptr + off, v.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _epilogue_kernel(z_ptr, a_ptr, b_ptr, r_ptr, ra_ptr, rb_ptr, out_ptr, M, C, HW,
                     HAS_RA: tl.constexpr, CL: tl.constexpr, ROUND: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    p, c, mp, mc, n, hw, off = _tile(C, HW, CL, BLOCK_P, BLOCK_C, M)
    m2 = mp[:, None] & mc[None, :]
    a = tl.load(a_ptr + c, mask=mc, other=0.0)
    b = tl.load(b_ptr + c, mask=mc, other=0.0)
    y = tl.load(z_ptr + off, mask=m2, other=0.0).to(tl.float32) * a[None, :] + b[None, :]
    r = tl.load(r_ptr + off, mask=m2, other=0.0).to(tl.float32)
    if HAS_RA:
        r = (
            r * tl.load(ra_ptr + c, mask=mc, other=0.0)[None, :]
            + tl.load(rb_ptr + c, mask=mc, other=0.0)[None, :]
        )
    _store(out_ptr, off, tl.maximum(y + r, 0.0), m2, ROUND)


@triton.jit
def _epilogue_bwd_kernel(g_ptr, out_ptr, z_ptr, r_ptr, a_ptr, ra_ptr, dz_ptr, dr_ptr, part_ptr, M, C, HW,
                         HAS_RA: tl.constexpr, CL: tl.constexpr, ROUND: tl.constexpr,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    p, c, mp, mc, n, hw, off = _tile(C, HW, CL, BLOCK_P, BLOCK_C, M)
    m2 = mp[:, None] & mc[None, :]
    o = tl.load(out_ptr + off, mask=m2, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + off, mask=m2, other=0.0).to(tl.float32)
    m = tl.where(o > 0.0, g, 0.0)
    a = tl.load(a_ptr + c, mask=mc, other=0.0)
    _store(dz_ptr, off, m * a[None, :], m2, ROUND)
    if HAS_RA:
        _store(dr_ptr, off, m * tl.load(ra_ptr + c, mask=mc, other=0.0)[None, :], m2, ROUND)
    else:
        _store(dr_ptr, off, m, m2, ROUND)
    z = tl.load(z_ptr + off, mask=m2, other=0.0).to(tl.float32)
    r = tl.load(r_ptr + off, mask=m2, other=0.0).to(tl.float32)
    base = part_ptr + tl.program_id(0).to(tl.int64) * 3 * C
    tl.store(base + c, tl.sum(m * z, axis=0), mask=mc)
    tl.store(base + C + c, tl.sum(m, axis=0), mask=mc)
    tl.store(base + 2 * C + c, tl.sum(m * r, axis=0), mask=mc)


@triton.jit
def _grad_fold_kernel(gz_ptr, gs_ptr, gq_ptr, z_ptr, g_ptr, M, C, HW, HAS_GZ: tl.constexpr, HAS_GS: tl.constexpr,
                      HAS_GQ: tl.constexpr, CL: tl.constexpr, ROUND: tl.constexpr, BLOCK_P: tl.constexpr,
                      BLOCK_C: tl.constexpr):  # fmt: skip
    p, c, mp, mc, n, hw, off = _tile(C, HW, CL, BLOCK_P, BLOCK_C, M)
    m2 = mp[:, None] & mc[None, :]
    v = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    if HAS_GZ:
        v += tl.load(gz_ptr + off, mask=m2, other=0.0).to(tl.float32)
    if HAS_GS:
        v += tl.load(gs_ptr + c, mask=mc, other=0.0)[None, :]
    if HAS_GQ:
        z = tl.load(z_ptr + off, mask=m2, other=0.0).to(tl.float32)
        v += 2.0 * z * tl.load(gq_ptr + c, mask=mc, other=0.0)[None, :]
    _store(g_ptr, off, v, m2, ROUND)


@triton.jit
def _src_grad(x_ptr, sn, sc, sh, sw, d_ptr, scale_ptr, shift_ptr, k, g, n, hw, W, c, C_src, m2, mc, part_base,
              d_off, HAS_AFFINE: tl.constexpr, RELU: tl.constexpr, ROUND: tl.constexpr):  # fmt: skip
    """Source k's gradient tile (stored to d_ptr) and its d scale / d shift tile sums (stored to part)."""
    h = hw // W
    w = hw % W
    x_off = (n * sn + h * sh + w * sw)[:, None] + c[None, :].to(tl.int64) * sc
    v = tl.load(x_ptr + x_off, mask=m2, other=0.0).to(tl.float32)
    d = g
    if HAS_AFFINE:
        a = tl.load(scale_ptr + k * C_src + c, mask=mc, other=0.0)
        if RELU:
            b = tl.load(shift_ptr + k * C_src + c, mask=mc, other=0.0)
            d = tl.where(v * a[None, :] + b[None, :] > 0.0, d, 0.0)
        tl.store(part_base + 2 * k * C_src + c, tl.sum(d * v, axis=0), mask=mc)
        tl.store(part_base + (2 * k + 1) * C_src + c, tl.sum(d, axis=0), mask=mc)
        d = d * a[None, :]
    elif RELU:
        d = tl.where(v > 0.0, d, 0.0)
    _store(d_ptr, d_off, d, m2, ROUND)


@triton.jit
def _prologue_bwd_kernel(du_ptr, x0, x1, x2, x3, s0n, s0c, s0h, s0w, s1n, s1c, s1h, s1w, s2n, s2c, s2h, s2w,
                         s3n, s3c, s3h, s3w, scale_ptr, shift_ptr, d0, d1, d2, d3, part_ptr, M, C_src, HW, W,
                         NSRC: tl.constexpr, CAT: tl.constexpr, HAS_AFFINE: tl.constexpr, RELU: tl.constexpr,
                         CL: tl.constexpr, ROUND: tl.constexpr, BLOCK_P: tl.constexpr,
                         BLOCK_C: tl.constexpr):  # fmt: skip
    # tile over the sources' channels; du has C_src (sum) or NSRC * C_src (cat) channels
    p, c, mp, mc, n, hw, d_off = _tile(C_src, HW, CL, BLOCK_P, BLOCK_C, M)
    m2 = mp[:, None] & mc[None, :]
    part_base = part_ptr + tl.program_id(0).to(tl.int64) * 2 * NSRC * C_src
    C_u = NSRC * C_src if CAT else C_src
    for k in tl.static_range(NSRC):
        cu = c + k * C_src if CAT else c
        if CL:
            u_off = (n * HW + hw)[:, None] * C_u + cu[None, :]
        else:
            u_off = (n * C_u * HW + hw)[:, None] + cu[None, :].to(tl.int64) * HW
        if CAT or k == 0:
            g = tl.load(du_ptr + u_off, mask=m2, other=0.0).to(tl.float32)
        if k == 0:
            _src_grad(x0, s0n, s0c, s0h, s0w, d0, scale_ptr, shift_ptr, k, g, n, hw, W, c, C_src, m2, mc, part_base,
                      d_off, HAS_AFFINE, RELU, ROUND)  # fmt: skip
        elif k == 1:
            _src_grad(x1, s1n, s1c, s1h, s1w, d1, scale_ptr, shift_ptr, k, g, n, hw, W, c, C_src, m2, mc, part_base,
                      d_off, HAS_AFFINE, RELU, ROUND)  # fmt: skip
        elif k == 2:
            _src_grad(x2, s2n, s2c, s2h, s2w, d2, scale_ptr, shift_ptr, k, g, n, hw, W, c, C_src, m2, mc, part_base,
                      d_off, HAS_AFFINE, RELU, ROUND)  # fmt: skip
        else:
            _src_grad(x3, s3n, s3c, s3h, s3w, d3, scale_ptr, shift_ptr, k, g, n, hw, W, c, C_src, m2, mc, part_base,
                      d_off, HAS_AFFINE, RELU, ROUND)  # fmt: skip


@triton.jit
def _act(x_ptr, sn, sc, sh, sw, scale_ptr, shift_ptr, k, n, hw, W, c, C_src, m2, mc, HAS_AFFINE: tl.constexpr,
         RELU: tl.constexpr):  # fmt: skip
    h = hw // W
    w = hw % W
    x_off = (n * sn + h * sh + w * sw)[:, None] + c[None, :].to(tl.int64) * sc
    v = tl.load(x_ptr + x_off, mask=m2, other=0.0).to(tl.float32)
    if HAS_AFFINE:
        a = tl.load(scale_ptr + k * C_src + c, mask=mc, other=0.0)
        b = tl.load(shift_ptr + k * C_src + c, mask=mc, other=0.0)
        v = v * a[None, :] + b[None, :]
    if RELU:
        v = tl.maximum(v, 0.0)
    return v


@triton.jit
def _prologue_kernel(u_ptr, x0, x1, x2, x3, s0n, s0c, s0h, s0w, s1n, s1c, s1h, s1w, s2n, s2c, s2h, s2w,
                     s3n, s3c, s3h, s3w, scale_ptr, shift_ptr, M, C_src, HW, W, NSRC: tl.constexpr,
                     CAT: tl.constexpr, HAS_AFFINE: tl.constexpr, RELU: tl.constexpr, CL: tl.constexpr,
                     ROUND: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """u (dense) = sum (or channel concat) of act(src_k * scale_k + shift_k); tiles over the sources' channels."""
    p, c, mp, mc, n, hw, _ = _tile(C_src, HW, CL, BLOCK_P, BLOCK_C, M)
    m2 = mp[:, None] & mc[None, :]
    C_u = NSRC * C_src if CAT else C_src
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(NSRC):
        if k == 0:
            v = _act(
                x0, s0n, s0c, s0h, s0w, scale_ptr, shift_ptr, k, n, hw, W, c, C_src, m2, mc, HAS_AFFINE, RELU
            )
        elif k == 1:
            v = _act(
                x1, s1n, s1c, s1h, s1w, scale_ptr, shift_ptr, k, n, hw, W, c, C_src, m2, mc, HAS_AFFINE, RELU
            )
        elif k == 2:
            v = _act(
                x2, s2n, s2c, s2h, s2w, scale_ptr, shift_ptr, k, n, hw, W, c, C_src, m2, mc, HAS_AFFINE, RELU
            )
        else:
            v = _act(
                x3, s3n, s3c, s3h, s3w, scale_ptr, shift_ptr, k, n, hw, W, c, C_src, m2, mc, HAS_AFFINE, RELU
            )
        if CAT:
            cu = c + k * C_src
            if CL:
                u_off = (n * HW + hw)[:, None] * C_u + cu[None, :]
            else:
                u_off = (n * C_u * HW + hw)[:, None] + cu[None, :].to(tl.int64) * HW
            _store(u_ptr, u_off, v, m2, ROUND)
        else:
            acc += v
    if not CAT:
        if CL:
            u_off = (n * HW + hw)[:, None] * C_u + c[None, :]
        else:
            u_off = (n * C_u * HW + hw)[:, None] + c[None, :].to(tl.int64) * HW
        _store(u_ptr, u_off, acc, m2, ROUND)


def _fmt(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if channels_last_like(t) else torch.contiguous_format


def _grid(kernel, m: int, c: int) -> tuple[tuple[int, int], int, int]:
    """(grid, BLOCK_P, BLOCK_C) for m pixels x c channels; the launch is recorded for the tests."""
    if small_tiles():
        block_p, block_c = BLOCK_P_SMALL, min(8, triton.next_power_of_2(c))
    else:
        block_p, block_c = BLOCK_P_GPU, min(64, max(16, triton.next_power_of_2(c)))
    grid = (triton.cdiv(m, block_p), triton.cdiv(c, block_c))
    record(kernel, grid, p=(m, block_p), c=(c, block_c))
    return grid, block_p, block_c


def epilogue_forward(z, scale, shift, r, r_scale, r_shift):
    """out = relu(z * scale + shift + (r * r_scale + r_shift, or r)), z's dtype and layout."""
    fmt = _fmt(z)
    z = z.contiguous(memory_format=fmt)
    r = r.to(z.dtype).contiguous(memory_format=fmt)
    out = torch.empty_like(z, memory_format=fmt)
    n, c, h, w = z.shape
    grid, bp, bc = _grid(_epilogue_kernel, n * h * w, c)
    has_ra = r_scale is not None
    a, b = scale.float().contiguous(), shift.float().contiguous()
    ra = r_scale.float().contiguous() if has_ra else a
    rb = r_shift.float().contiguous() if has_ra else a
    _epilogue_kernel[grid](z, a, b, r, ra, rb, out, n * h * w, c, h * w, HAS_RA=has_ra, CL=fmt == torch.channels_last,
                           ROUND=needs_rounding(z.dtype), BLOCK_P=bp, BLOCK_C=bc)  # fmt: skip
    return out


def epilogue_backward(grad, out, z, r, scale, r_scale):
    """(dz, dr, sums float64 (3, C) of m * z, m, m * r) with m = grad * [out > 0]; z's dtype and layout."""
    fmt = _fmt(z)
    z = z.contiguous(memory_format=fmt)
    r = r.to(z.dtype).contiguous(memory_format=fmt)
    out = out.contiguous(memory_format=fmt)
    grad = grad.to(z.dtype).contiguous(memory_format=fmt)
    n, c, h, w = z.shape
    grid, bp, bc = _grid(_epilogue_bwd_kernel, n * h * w, c)
    dz, dr = torch.empty_like(z, memory_format=fmt), torch.empty_like(z, memory_format=fmt)
    part = torch.zeros((grid[0], 3, c), dtype=torch.float32, device=z.device)
    has_ra = r_scale is not None
    a = scale.float().contiguous()
    ra = r_scale.float().contiguous() if has_ra else a
    _epilogue_bwd_kernel[grid](grad, out, z, r, a, ra, dz, dr, part, n * h * w, c, h * w, HAS_RA=has_ra,
                               CL=fmt == torch.channels_last, ROUND=needs_rounding(z.dtype), BLOCK_P=bp,
                               BLOCK_C=bc)  # fmt: skip
    return dz, dr, part.sum(0, dtype=torch.float64)


def grad_fold(grad_z, grad_sum, grad_sumsq, z):
    """g = grad_z + grad_sum + 2 z grad_sumsq (None / empty terms are zero), z's dtype and layout."""
    fmt = _fmt(z)
    z = z.contiguous(memory_format=fmt)
    n, c, h, w = z.shape
    gz = grad_z.to(z.dtype).contiguous(memory_format=fmt) if grad_z is not None else None
    gs = grad_sum.float().contiguous() if grad_sum is not None and grad_sum.numel() else None
    gq = grad_sumsq.float().contiguous() if grad_sumsq is not None and grad_sumsq.numel() else None
    g = torch.empty_like(z, memory_format=fmt)
    grid, bp, bc = _grid(_grad_fold_kernel, n * h * w, c)
    dummy = z.new_empty((1,), dtype=torch.float32)
    _grad_fold_kernel[grid](gz if gz is not None else z, gs if gs is not None else dummy,
                            gq if gq is not None else dummy, z, g, n * h * w, c, h * w, HAS_GZ=gz is not None,
                            HAS_GS=gs is not None, HAS_GQ=gq is not None, CL=fmt == torch.channels_last,
                            ROUND=needs_rounding(z.dtype), BLOCK_P=bp, BLOCK_C=bc)  # fmt: skip
    return g


def prologue_backward(du, srcs, scale, shift, relu, cat):
    """(d srcs (dense, du's layout and dtype), sums float64 (2, sum C_k) [d scale; d shift]) of the prologue."""
    fmt = _fmt(du)
    du = du.contiguous(memory_format=fmt)
    n, c_src, h, w = srcs[0].shape
    nsrc = len(srcs)
    ds = [torch.empty((n, c_src, h, w), dtype=du.dtype, device=du.device).contiguous(memory_format=fmt)
          for _ in srcs]  # fmt: skip
    grid, bp, bc = _grid(_prologue_bwd_kernel, n * h * w, c_src)
    part = torch.zeros((grid[0], 2 * nsrc, c_src), dtype=torch.float32, device=du.device)
    has_aff = scale is not None
    a = scale.float().contiguous() if has_aff else part
    b = shift.float().contiguous() if has_aff else part
    xs = [s.to(du.dtype) for s in srcs] + [srcs[0].to(du.dtype)] * (4 - nsrc)
    dd = ds + [ds[0]] * (4 - nsrc)
    _prologue_bwd_kernel[grid](du, *xs, *[st for x in xs for st in x.stride()], a, b, *dd, part, n * h * w, c_src,
                               h * w, w, NSRC=nsrc, CAT=cat, HAS_AFFINE=has_aff, RELU=relu,
                               CL=fmt == torch.channels_last, ROUND=needs_rounding(du.dtype), BLOCK_P=bp,
                               BLOCK_C=bc)  # fmt: skip
    sums = part.sum(0, dtype=torch.float64).view(nsrc, 2, c_src).transpose(0, 1).reshape(2, nsrc * c_src)
    return ds, sums


def prologue(srcs, scale, shift, relu, cat, dtype):
    """The conv input u (dense, the first source's layout, ``dtype``) in one kernel."""
    fmt = _fmt(srcs[0])
    n, c_src, h, w = srcs[0].shape
    nsrc = len(srcs)
    u = torch.empty((n, nsrc * c_src if cat else c_src, h, w), dtype=dtype, device=srcs[0].device)
    u = u.contiguous(memory_format=fmt)
    grid, bp, bc = _grid(_prologue_kernel, n * h * w, c_src)
    has_aff = scale is not None
    a = scale.float().contiguous() if has_aff else u
    b = shift.float().contiguous() if has_aff else u
    xs = list(srcs) + [srcs[0]] * (4 - nsrc)
    _prologue_kernel[grid](u, *xs, *[st for x in xs for st in x.stride()], a, b, n * h * w, c_src, h * w, w,
                           NSRC=nsrc, CAT=cat, HAS_AFFINE=has_aff, RELU=relu, CL=fmt == torch.channels_last,
                           ROUND=needs_rounding(dtype), BLOCK_P=bp, BLOCK_C=bc)  # fmt: skip
    return u


def conv_bnact_stats_backward(
    grad_z, grad_sum, grad_sumsq, z, srcs, scale, shift, weight, has_bias, stride, padding, relu, cat, u=None
):
    """Same contract as :func:`rsn_fast.ops.rsb.reference.conv_bnact_stats_backward`: our fold kernel, torch's
    convolution backward (cuDNN on a GPU), then our one-pass prologue backward (ReLU mask, affine, fan-out,
    d scale / d shift). A recomputed conv input comes from one prologue kernel."""
    c = z.shape[1]
    g = grad_fold(grad_z, grad_sum, grad_sumsq, z.to(weight.dtype))
    if u is None:
        if len(srcs) == 1 and scale is None and not relu:
            u = srcs[0].to(weight.dtype)
        else:
            u = prologue(srcs, scale, shift, relu, cat, weight.dtype)
    du, dw, db = torch.ops.aten.convolution_backward(
        g, u, weight, [c] if has_bias else None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
        [True, True, has_bias],
    )  # fmt: skip
    if len(srcs) == 1 and scale is None and not relu:
        return [du.to(srcs[0].dtype)], None, None, dw, db if has_bias else None
    dsrcs, sums = prologue_backward(du.to(weight.dtype), srcs, scale, shift, relu, cat)
    dsrcs = [d.to(s.dtype) for d, s in zip(dsrcs, srcs)]
    dscale = sums[0].to(scale.dtype) if scale is not None else None
    dshift = sums[1].to(shift.dtype) if shift is not None else None
    return dsrcs, dscale, dshift, dw, db if has_bias else None
