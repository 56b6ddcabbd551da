"""Triton kernel of decode_heatmaps (launcher only; no gradient).

One program per (person, keypoint) map holds the blurred map in registers as one (BLOCK_H, BLOCK_W) tile: the
RSN zero grid (map + 10 px border) or, for the MMPose modes, the map itself. Each blurred cell is formed in the
reference's order (row filter, then column filter; centre tap first, symmetric pairs summed) from masked loads
of the flip-averaged map, with cv2's reflect-101 at the grid border. Argmax follows NumPy (first maximum in
row-major order; a NaN wins): the tile's row-major order is the grid's because masked cells hold -inf.
The launch disables FMA contraction, so the blurred values equal the C++ kernel's and the reference's.
Limits: the blur radius must be smaller than the grid (always true for heatmaps with k <= 2·10+1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from rsn_fast.ops._launch import record
from rsn_fast.ops.decode_heatmaps.cpp import flip_permutation
from rsn_fast.ops.decode_heatmaps.reference import RSN_BORDER, cv2_gaussian_kernel

_MODES = {"rsn": 0, "megvii": 1, "standard": 2, "dark": 3}
_PARAMS: dict[tuple, torch.Tensor] = {}


@triton.jit
def _reflect(i, n):
    i = tl.where(i < 0, -i, i)
    return tl.where(i >= n, 2 * (n - 1) - i, i)


@triton.jit
def _load_map(hm_ptr, fl_ptr, base, fbase, y, x, H, W, HAS_FLIP: tl.constexpr, ACC: tl.constexpr):
    """Flip-averaged map value at map cells (y, x) (broadcast), 0 outside the map."""
    ok = (y >= 0) & (y < H) & (x >= 0) & (x < W)
    v = tl.load(hm_ptr + base + y * W + x, mask=ok, other=0.0).to(ACC)
    if HAS_FLIP:
        f = tl.load(fl_ptr + fbase + y * W + (W - 1 - x), mask=ok, other=0.0).to(ACC)
        v = (v + f) * 0.5
    return v


@triton.jit
def _row_filter(hm_ptr, fl_ptr, base, fbase, gy, gx, g_ptr, H, W, GH, GW, PAD, R: tl.constexpr,
                HAS_FLIP: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Row-filtered grid cells (gy, gx): gy may lie outside the grid (reflected), gx inside."""
    my = _reflect(gy, GH) - PAD
    acc = _load_map(hm_ptr, fl_ptr, base, fbase, my, _reflect(gx, GW) - PAD, H, W, HAS_FLIP, ACC) * tl.load(
        g_ptr + R
    )
    for j in tl.static_range(1, R + 1):
        a = _load_map(hm_ptr, fl_ptr, base, fbase, my, _reflect(gx - j, GW) - PAD, H, W, HAS_FLIP, ACC)
        b = _load_map(hm_ptr, fl_ptr, base, fbase, my, _reflect(gx + j, GW) - PAD, H, W, HAS_FLIP, ACC)
        acc = acc + tl.load(g_ptr + R + j) * (a + b)
    return acc


@triton.jit
def _argmax(vals, idx, valid, BLOCK: tl.constexpr):
    """NumPy argmax over the valid cells of a tile: (flat tile index, value)."""
    nan = (vals != vals) & valid
    key = tl.where(valid & ~nan, vals, float("-inf"))
    flat_nan = tl.reshape(nan.to(tl.int32), [BLOCK])
    i_nan = tl.argmax(flat_nan, axis=0)
    i_val = tl.argmax(tl.reshape(key, [BLOCK]), axis=0)
    best = tl.where(tl.max(flat_nan, axis=0) > 0, i_nan, i_val)
    val = tl.sum(tl.reshape(tl.where(idx == best, vals, 0.0), [BLOCK]), axis=0)
    return best, val


@triton.jit
def _pick(vals, idx, target):
    return tl.sum(tl.sum(tl.where(idx == target, vals, 0.0), axis=1), axis=0)


@triton.jit
def _sign(v):
    return tl.where(v > 0, 1.0, tl.where(v < 0, -1.0, 0.0))


@triton.jit
def _decode_kernel(
    hm_ptr,  # (N, K, H, W) heatmaps, contiguous
    fl_ptr,  # (N, K, H, W) flipped heatmaps (dummy without HAS_FLIP)
    perm_ptr,  # int64 (K,) flip-back channel permutation (dummy without HAS_FLIP)
    g_ptr,  # (KS,) blur profile in the compute dtype
    prm_ptr,  # (6,) compute dtype: stride_x, stride_x / 2, stride_y, stride_y / 2, W_in, H_in
    c_ptr,  # (N, 2) centres, compute dtype
    s_ptr,  # (N, 2) box sizes, compute dtype
    coords_ptr,  # (N, K, 2) out
    scores_ptr,  # (N, K) out
    K,
    H,
    W,
    MODE: tl.constexpr,  # 0 rsn, 1 megvii, 2 standard, 3 dark
    R: tl.constexpr,  # blur radius
    PAD: tl.constexpr,  # zero border of the blurred grid (RSN 10, MMPose R)
    HAS_FLIP: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    item = tl.program_id(0).to(tl.int64)
    n = item // K
    base = item * H * W
    fbase = base
    if HAS_FLIP:
        fbase = (n * K + tl.load(perm_ptr + item % K)) * H * W
    GH = H + 2 * PAD
    GW = W + 2 * PAD
    iy = tl.arange(0, BLOCK_H)[:, None]
    ix = tl.arange(0, BLOCK_W)[None, :]
    idx = iy * BLOCK_W + ix
    BLOCK: tl.constexpr = BLOCK_H * BLOCK_W
    in_map = (iy < H) & (ix < W)
    raw = _load_map(hm_ptr, fl_ptr, base, fbase, iy, ix, H, W, HAS_FLIP, ACC)
    # tile cell (iy, ix) is grid cell (iy, ix) for RSN and (iy + PAD, ix + PAD) (= map cell) otherwise
    off = 0 if MODE == 0 else PAD
    valid = (iy < GH) & (ix < GW) if MODE == 0 else in_map
    zero = tl.zeros([BLOCK_H, BLOCK_W], dtype=ACC)
    fx = tl.sum(tl.sum(zero, axis=1), axis=0)
    fy = fx
    score = fx
    if MODE != 2:
        gy = iy + off
        gx = ix + off
        blur = _row_filter(hm_ptr, fl_ptr, base, fbase, gy, gx, g_ptr, H, W, GH, GW, PAD, R, HAS_FLIP, ACC)
        blur = blur * tl.load(g_ptr + R)
        for j in tl.static_range(1, R + 1):
            a = _row_filter(
                hm_ptr, fl_ptr, base, fbase, gy - j, gx, g_ptr, H, W, GH, GW, PAD, R, HAS_FLIP, ACC
            )
            b = _row_filter(
                hm_ptr, fl_ptr, base, fbase, gy + j, gx, g_ptr, H, W, GH, GW, PAD, R, HAS_FLIP, ACC
            )
            blur = blur + tl.load(g_ptr + R + j) * (a + b)
        blur = tl.where(valid, blur, zero)
    if MODE == 0:
        i1, v1 = _argmax(blur, idx, valid, BLOCK)
        second = tl.where(idx == i1, zero, blur)
        i2, v2 = _argmax(second, idx, valid, BLOCK)
        x1 = i1 % BLOCK_W
        y1 = i1 // BLOCK_W
        ddx = (i2 % BLOCK_W - x1).to(ACC)
        ddy = (i2 // BLOCK_W - y1).to(ACC)
        ln = tl.sqrt(ddx * ddx + ddy * ddy)
        move = ln > 1e-3
        safe = tl.where(move, ln, 1.0)
        x = (x1 - PAD).to(ACC) + tl.where(move, 0.25 * ddx / safe, 0.0)
        y = (y1 - PAD).to(ACC) + tl.where(move, 0.25 * ddy / safe, 0.0)
        x = tl.minimum(tl.maximum(x, 0.0), (W - 1).to(ACC))
        y = tl.minimum(tl.maximum(y, 0.0), (H - 1).to(ACC))
        # round half to even, as torch.round / Python's round
        rx = tl.floor(x + 0.5)
        rx = tl.where((rx - x == 0.5) & (rx % 2 == 1), rx - 1, rx).to(tl.int64)
        ry = tl.floor(y + 0.5)
        ry = tl.where((ry - y == 0.5) & (ry % 2 == 1), ry - 1, ry).to(tl.int64)
        score = _pick(raw, idx, ry * BLOCK_W + rx) / 255 + 0.5
        x_in = x * tl.load(prm_ptr + 0) + tl.load(prm_ptr + 1)
        y_in = y * tl.load(prm_ptr + 2) + tl.load(prm_ptr + 3)
    else:
        ri, rv = _argmax(raw, idx, in_map, BLOCK)
        if MODE == 2 or MODE == 3:
            bad = rv <= 0
            xi = tl.where(bad, -1, ri % BLOCK_W)
            yi = tl.where(bad, -1, ri // BLOCK_W)
            score = rv
            fx = xi.to(ACC)
            fy = yi.to(ACC)
        if MODE == 2:
            okx = (xi > 1) & (xi < W - 1) & (yi > 0) & (yi < H)
            oky = (yi > 1) & (yi < H - 1) & (xi > 0) & (xi < W)
            gxv = _pick(raw, idx, yi * BLOCK_W + xi + 1) - _pick(raw, idx, yi * BLOCK_W + xi - 1)
            gyv = _pick(raw, idx, (yi + 1) * BLOCK_W + xi) - _pick(raw, idx, (yi - 1) * BLOCK_W + xi)
            fx = fx + tl.where(okx, _sign(gxv), 0.0) * 0.25
            fy = fy + tl.where(oky, _sign(gyv), 0.0) * 0.25
        else:
            bi, bv = _argmax(blur, idx, valid, BLOCK)
            scaled = blur * (rv / bv)  # MMPose gaussian_blur's rescale; NaN for an all-zero map
            if MODE == 1:
                si, sv = _argmax(scaled, idx, valid, BLOCK)
                bad = sv <= 0
                xi = tl.where(bad, -1, si % BLOCK_W)
                yi = tl.where(bad, -1, si // BLOCK_W)
                inner = (xi > 1) & (xi < W - 1) & (yi > 1) & (yi < H - 1)
                gxv = _pick(scaled, idx, yi * BLOCK_W + xi + 1) - _pick(scaled, idx, yi * BLOCK_W + xi - 1)
                gyv = _pick(scaled, idx, (yi + 1) * BLOCK_W + xi) - _pick(
                    scaled, idx, (yi - 1) * BLOCK_W + xi
                )
                fx = xi.to(ACC) + tl.where(inner, _sign(gxv) * 0.25 + 0.5, 0.0)
                fy = yi.to(ACC) + tl.where(inner, _sign(gyv) * 0.25 + 0.5, 0.0)
                score = sv / 255.0 + 0.5
            else:
                lg = tl.log(tl.where(scaled != scaled, scaled, tl.maximum(scaled, 1e-10)))
                c0 = yi * BLOCK_W + xi
                cc = _pick(lg, idx, c0)
                dx = 0.5 * (_pick(lg, idx, c0 + 1) - _pick(lg, idx, c0 - 1))
                dy = 0.5 * (_pick(lg, idx, c0 + BLOCK_W) - _pick(lg, idx, c0 - BLOCK_W))
                dxx = 0.25 * (_pick(lg, idx, c0 + 2) - 2 * cc + _pick(lg, idx, c0 - 2))
                dxy = 0.25 * (
                    _pick(lg, idx, c0 + BLOCK_W + 1)
                    - _pick(lg, idx, c0 - BLOCK_W + 1)
                    - _pick(lg, idx, c0 + BLOCK_W - 1)
                    + _pick(lg, idx, c0 - BLOCK_W - 1)
                )
                dyy = 0.25 * (_pick(lg, idx, c0 + 2 * BLOCK_W) - 2 * cc + _pick(lg, idx, c0 - 2 * BLOCK_W))
                det = dxx * dyy - dxy * dxy
                ok = (xi > 1) & (xi < W - 2) & (yi > 1) & (yi < H - 2) & (det != 0)
                safe = tl.where(ok, det, 1.0)
                fx = fx + tl.where(ok, -(dyy * dx - dxy * dy) / safe, 0.0)
                fy = fy + tl.where(ok, -(dxx * dy - dxy * dx) / safe, 0.0)
        x_in = fx * tl.load(prm_ptr + 0)
        y_in = fy * tl.load(prm_ptr + 2)
    w_in = tl.load(prm_ptr + 4)
    h_in = tl.load(prm_ptr + 5)
    bw = tl.load(s_ptr + 2 * n)
    bh = tl.load(s_ptr + 2 * n + 1)
    tl.store(coords_ptr + 2 * item, x_in / w_in * bw + tl.load(c_ptr + 2 * n) - bw * 0.5)
    tl.store(coords_ptr + 2 * item + 1, y_in / h_in * bh + tl.load(c_ptr + 2 * n + 1) - bh * 0.5)
    tl.store(scores_ptr + item, score)


def _params(
    input_size: Sequence[float], h: int, w: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """(6,) scale constants in the compute dtype, cached per shape and device (no copy per call)."""
    key = (float(input_size[0]), float(input_size[1]), h, w, dtype, str(device))
    t = _PARAMS.get(key)
    if t is None:
        sx, sy = key[0] / w, key[1] / h
        t = torch.tensor([sx, sx / 2, sy, sy / 2, key[0], key[1]], dtype=torch.float64).to(dtype).to(device)
        _PARAMS[key] = t
    return t


def decode_heatmaps_triton(
    heatmaps: torch.Tensor,
    centers: torch.Tensor,
    box_sizes: torch.Tensor,
    input_size: Sequence[float],
    mode: str = "rsn",
    blur_kernel: int = 5,
    flipped: torch.Tensor | None = None,
    flip_pairs: Sequence | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same arguments and results as :func:`rsn_fast.ops.decode_heatmaps.decode_heatmaps`."""
    acc = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
    n, k, h, w = heatmaps.shape
    dev = heatmaps.device
    coords = torch.empty((n, k, 2), device=dev, dtype=acc)
    scores = torch.empty((n, k), device=dev, dtype=acc)
    if n * k == 0:
        return coords, scores
    r = blur_kernel // 2
    pad = RSN_BORDER if mode == "rsn" else (blur_kernel - 1) // 2
    tile_h, tile_w = (h + 2 * pad, w + 2 * pad) if mode == "rsn" else (h, w)
    hm = heatmaps.contiguous()
    perm = flip_permutation(k, flip_pairs, dev) if flipped is not None else None
    fl = flipped.to(heatmaps.dtype).contiguous() if flipped is not None else hm
    g = (
        cv2_gaussian_kernel(blur_kernel, acc, dev)
        if mode != "standard"
        else torch.ones(1, dtype=acc, device=dev)
    )
    # one program per (image, keypoint) map, the whole (bordered) map in one tile
    record(_decode_kernel, (n * k,), maps=(n * k, 1))
    _decode_kernel[(n * k,)](
        hm,
        fl,
        perm if perm is not None else hm,
        g,
        _params(input_size, h, w, acc, dev),
        centers.to(device=dev, dtype=acc).contiguous(),
        box_sizes.to(device=dev, dtype=acc).contiguous(),
        coords,
        scores,
        k,
        h,
        w,
        MODE=_MODES[mode],
        R=r if mode != "standard" else 0,
        PAD=pad,
        HAS_FLIP=flipped is not None,
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        BLOCK_H=triton.next_power_of_2(tile_h),
        BLOCK_W=triton.next_power_of_2(tile_w),
        enable_fp_fusion=False,
    )
    return coords, scores
