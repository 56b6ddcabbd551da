"""Batched pure-torch heatmap decoding: the specification the fused kernels must match (RSN_SPEC.md §12, §16.4).

Four modes, each a faithful batched version of a per-keypoint NumPy/cv2 procedure:

* ``rsn``: the official RSN test code (§12.1). Zero-pad every map by 10 px, blur it with ``cv2.GaussianBlur((k,k),0)``
  (OpenCV's default border, reflect-101, applied to the *padded* map), take the top-1 pixel, zero it, take the
  top-2 pixel, move 0.25 px from the top-1 toward the top-2 along the unit vector (when they are more than 1e-3
  apart), remove the padding, clamp to the heatmap, map to input pixels with ``stride·x + stride/2`` (``4x+2`` for
  stride 4; stride = input size / heatmap size per axis), score = unblurred map at the rounded location /255 + 0.5.
* ``megvii``: MMPose 1.x ``MegviiHeatmap.decode`` (§12.2). MMPose's ``gaussian_blur`` (pad (k-1)/2 zeros, blur,
  crop, rescale so the max equals the original max, NaN for an all-zero map as in MMPose), argmax, locations of maps
  whose max is ≤ 0 become -1, then for 1 < x < W-1 and 1 < y < H-1 only: ``+ sign(gradient)·0.25 + 0.5`` per axis.
  Score = blurred max /255 + 0.5.
* ``standard``: MMPose 1.x ``MSRAHeatmap.decode`` with ``unbiased=False``: argmax on the raw map (-1 when max ≤ 0),
  ``refine_keypoints`` (per-axis ``sign·0.25`` with MMPose's exact bounds). Score = raw max (not rescaled).
* ``dark``: MMPose 1.x ``MSRAHeatmap.decode`` with ``unbiased=True``: argmax on the raw map, then on MMPose's
  ``gaussian_blur`` of the map (kernel ``blur_kernel``), ``log(max(h, 1e-10))`` and one Newton step
  ``-H⁻¹∇`` for 1 < x < W-2 and 1 < y < H-2 when det H ≠ 0. Score = raw max.

Back-transform. ``rsn`` follows §12.1 step 9 exactly. The MMPose modes decode in heatmap pixels and MMPose maps
them to input pixels by ``× input_size / heatmap_size`` and then to the image in
``TopdownPoseEstimator.add_pred_to_datasample`` by ``p / input_size · box_size + center − box_size / 2``; we apply
the same two steps (algebraically ``p_hm / heatmap_size · box_size + center − box_size / 2``). All modes share
that last formula, so ``x_img = x_in / W_in · S_w + c_x − S_w / 2``.

Arithmetic runs in float64 for float64 heatmaps and in float32 otherwise (fp16/bf16 are upcast). Ties are broken
as NumPy's argmax does (first index in row-major order; a NaN wins, first NaN first). There is no Python loop over
persons or keypoints and no host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

MODES = ("rsn", "megvii", "standard", "dark")
RSN_BORDER = 10  # zero padding of the official RSN decoder (§12.1 step 5)

# cv2.getGaussianKernel(k, sigma<=0) uses these fixed tables for k <= 9 (checked against OpenCV 5.0 here);
# all entries are multiples of 1/256, so they are exact in every float type.
_CV2_SMALL_GAUSSIAN = {
    1: [256],
    3: [64, 128, 64],
    5: [16, 64, 96, 64, 16],
    7: [8, 28, 56, 72, 56, 28, 8],
    9: [4, 13, 30, 51, 60, 51, 30, 13, 4],
}


def cv2_gaussian_kernel(ksize: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """1-D kernel equal to ``cv2.getGaussianKernel(ksize, 0)``.

    Args:
        ksize: odd kernel size ≥ 1.
    Returns:
        (ksize,) tensor. Fixed OpenCV tables for k ≤ 9; otherwise σ = 0.3·((k−1)/2 − 1) + 0.8, computed in float64
        and normalised to sum 1 as OpenCV does, then cast.
    """
    if ksize < 1 or ksize % 2 != 1:
        raise ValueError(f"Gaussian kernel size must be odd and >= 1, got {ksize}")
    if ksize in _CV2_SMALL_GAUSSIAN:
        vals = [v / 256.0 for v in _CV2_SMALL_GAUSSIAN[ksize]]
    else:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
        scale2x = -0.5 / (sigma * sigma)
        raw = [math.exp(scale2x * (i - (ksize - 1) * 0.5) ** 2) for i in range(ksize)]
        total = sum(raw)
        vals = [v * (1.0 / total) for v in raw]
    return torch.tensor(vals, dtype=torch.float64, device=device).to(dtype)


def _blur_1d(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Valid correlation along ``dim`` of an already border-extended tensor, symmetric taps summed in pairs."""
    r = kernel.numel() // 2
    n = x.shape[dim] - 2 * r
    out = x.narrow(dim, r, n) * kernel[r]
    for j in range(1, r + 1):
        out = out + kernel[r + j] * (x.narrow(dim, r - j, n) + x.narrow(dim, r + j, n))
    return out


def cv2_gaussian_blur(maps: torch.Tensor, ksize: int) -> torch.Tensor:
    """``cv2.GaussianBlur(m, (ksize, ksize), 0)`` with the default border (reflect-101) on every map.

    Args:
        maps: (M, H, W) float tensor, H and W larger than ksize // 2.
    Returns:
        (M, H, W) blurred maps (row filter first, then column filter, as OpenCV's separable filter).
    """
    r = ksize // 2
    if r == 0:
        return maps.clone()
    kernel = cv2_gaussian_kernel(ksize, maps.dtype, maps.device)
    x = F.pad(maps.unsqueeze(1), (r, r, r, r), mode="reflect").squeeze(1)  # torch 'reflect' == reflect-101
    x = _blur_1d(x, kernel, dim=2)
    return _blur_1d(x, kernel, dim=1)


def argmax_first(flat: torch.Tensor) -> torch.Tensor:
    """NumPy ``argmax`` along the last dim: first maximal index; if a row holds NaN, its first NaN."""
    idx = flat.argmax(dim=-1)
    nan = torch.isnan(flat)
    return torch.where(nan.any(dim=-1), nan.to(torch.uint8).argmax(dim=-1), idx)


def flip_back_average(heatmaps: torch.Tensor, flipped: torch.Tensor, flip_pairs: Sequence) -> torch.Tensor:
    """0.5·(heatmaps + mirror(flipped) with left/right channels swapped); no pixel shift (§12.1 step 3).

    Args:
        heatmaps: (N, K, H, W) maps of the original input.
        flipped: (N, K, H, W) raw maps of the horizontally mirrored input.
        flip_pairs: (i, j) channel pairs to swap.
    """
    k = heatmaps.shape[1]
    perm = list(range(k))
    for i, j in flip_pairs:
        perm[int(i)], perm[int(j)] = int(j), int(i)
    back = flipped.flip(-1)[:, perm]
    return (heatmaps + back) * 0.5


def _mmpose_gaussian_blur(maps: torch.Tensor, ksize: int) -> torch.Tensor:
    """MMPose ``codecs.utils.gaussian_blur``: zero-pad (k−1)/2, cv2 blur, crop, rescale to the original max."""
    r = (ksize - 1) // 2
    origin_max = maps.amax(dim=(-2, -1), keepdim=True)
    padded = F.pad(maps, (r, r, r, r))
    blurred = cv2_gaussian_blur(padded, ksize)[:, r : r + maps.shape[-2], r : r + maps.shape[-1]]
    # 0/0 gives NaN for an all-zero map, exactly as MMPose does
    return blurred * (origin_max / blurred.amax(dim=(-2, -1), keepdim=True))


def _heatmap_maximum(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MMPose ``get_heatmap_maximum``: integer (x, y) of the first max, -1 where the max is ≤ 0; and the max."""
    m, h, w = maps.shape
    flat = maps.reshape(m, h * w)
    idx = argmax_first(flat)
    vals = flat.amax(dim=-1)
    bad = vals <= 0
    x = torch.where(bad, -1, idx % w)
    y = torch.where(bad, -1, idx // w)
    return x, y, vals, idx


def _pick(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """maps[m, y+dy, x+dx] with indices clamped into the map (callers mask the clamped ones)."""
    m, h, w = maps.shape
    yy = (y + dy).clamp(0, h - 1)
    xx = (x + dx).clamp(0, w - 1)
    return maps.reshape(m, h * w).gather(1, (yy * w + xx).unsqueeze(1)).squeeze(1)


def _decode_rsn(maps: torch.Tensor, ksize: int, stride: tuple[float, float]):
    m, h, w = maps.shape
    p = RSN_BORDER
    padded = F.pad(maps, (p, p, p, p))
    flat = cv2_gaussian_blur(padded, ksize).reshape(m, -1)
    wp = w + 2 * p
    i1 = argmax_first(flat)
    flat = flat.scatter(1, i1.unsqueeze(1), 0.0)
    i2 = argmax_first(flat)
    y1, x1 = i1 // wp, i1 % wp
    ddx = (i2 % wp - x1).to(maps.dtype)
    ddy = (i2 // wp - y1).to(maps.dtype)
    ln = torch.sqrt(ddx * ddx + ddy * ddy)
    move = ln > 1e-3
    safe = torch.where(move, ln, torch.ones_like(ln))
    x = (x1 - p).to(maps.dtype) + torch.where(move, 0.25 * ddx / safe, torch.zeros_like(ln))
    y = (y1 - p).to(maps.dtype) + torch.where(move, 0.25 * ddy / safe, torch.zeros_like(ln))
    x = x.clamp(0, w - 1)
    y = y.clamp(0, h - 1)
    # score from the unblurred map at the rounded (half-to-even, as Python's round) location
    score_map = maps / 255 + 0.5
    sx = torch.round(x).long()
    sy = torch.round(y).long()
    scores = score_map.reshape(m, h * w).gather(1, (sy * w + sx).unsqueeze(1)).squeeze(1)
    return x * stride[0] + stride[0] / 2, y * stride[1] + stride[1] / 2, scores


def _decode_megvii(maps: torch.Tensor, ksize: int):
    m, h, w = maps.shape
    blurred = _mmpose_gaussian_blur(maps, ksize)
    x, y, vals, _ = _heatmap_maximum(blurred)
    inner = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    gx = _pick(blurred, x, y, 1, 0) - _pick(blurred, x, y, -1, 0)
    gy = _pick(blurred, x, y, 0, 1) - _pick(blurred, x, y, 0, -1)
    zero = torch.zeros_like(vals)
    fx = x.to(maps.dtype) + torch.where(inner, torch.sign(gx) * 0.25 + 0.5, zero)
    fy = y.to(maps.dtype) + torch.where(inner, torch.sign(gy) * 0.25 + 0.5, zero)
    return fx, fy, vals / 255.0 + 0.5


def _decode_standard(maps: torch.Tensor):
    m, h, w = maps.shape
    x, y, vals, _ = _heatmap_maximum(maps)
    # MMPose refine_keypoints bounds, verbatim in meaning: dx needs 1<x<W-1 and 0<y<H; dy needs 1<y<H-1 and 0<x<W
    okx = (x > 1) & (x < w - 1) & (y > 0) & (y < h)
    oky = (y > 1) & (y < h - 1) & (x > 0) & (x < w)
    gx = _pick(maps, x, y, 1, 0) - _pick(maps, x, y, -1, 0)
    gy = _pick(maps, x, y, 0, 1) - _pick(maps, x, y, 0, -1)
    zero = torch.zeros_like(vals)
    fx = x.to(maps.dtype) + torch.where(okx, torch.sign(gx), zero) * 0.25
    fy = y.to(maps.dtype) + torch.where(oky, torch.sign(gy), zero) * 0.25
    return fx, fy, vals


def _decode_dark(maps: torch.Tensor, ksize: int):
    m, h, w = maps.shape
    x, y, vals, _ = _heatmap_maximum(maps)
    lg = torch.log(torch.maximum(_mmpose_gaussian_blur(maps, ksize), maps.new_tensor(1e-10)))

    def at(dx: int, dy: int) -> torch.Tensor:
        return _pick(lg, x, y, dx, dy)

    c = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    dyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    det = dxx * dyy - dxy**2
    ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & (det != 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    # offset = -H^{-1} g with the 2x2 inverse written out
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(dxx * dy - dxy * dx) / safe
    zero = torch.zeros_like(vals)
    fx = x.to(maps.dtype) + torch.where(ok, ox, zero)
    fy = y.to(maps.dtype) + torch.where(ok, oy, zero)
    return fx, fy, vals


def _check(heatmaps, centers, box_sizes, input_size, mode, blur_kernel, flipped, flip_pairs) -> None:
    if mode not in MODES:
        raise ValueError(f"decode mode must be one of {MODES}, got {mode!r}")
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {tuple(heatmaps.shape)}")
    n = heatmaps.shape[0]
    for name, t in (("centers", centers), ("box_sizes", box_sizes)):
        if tuple(t.shape) != (n, 2):
            raise ValueError(f"{name} must be ({n}, 2), got {tuple(t.shape)}")
    if len(input_size) != 2:
        raise ValueError(f"input_size must be (W_in, H_in), got {input_size}")
    if blur_kernel < 1 or blur_kernel % 2 != 1:
        raise ValueError(f"blur_kernel must be odd and >= 1, got {blur_kernel}")
    if mode in ("megvii", "dark") and blur_kernel < 3:
        raise ValueError(f"mode {mode!r} needs blur_kernel >= 3 (MMPose pads (k-1)/2), got {blur_kernel}")
    if flipped is not None:
        if flipped.shape != heatmaps.shape:
            raise ValueError(f"flipped must have the shape of heatmaps {tuple(heatmaps.shape)}")
        if flip_pairs is None:
            raise ValueError("flipped heatmaps need flip_pairs (pass [] when the keypoint set has none)")


def decode_heatmaps_reference(
    heatmaps: torch.Tensor,
    centers: torch.Tensor,
    box_sizes: torch.Tensor,
    input_size: Sequence[float],
    mode: str = "rsn",
    blur_kernel: int = 5,
    flipped: torch.Tensor | None = None,
    flip_pairs: Sequence | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode keypoints from heatmaps (reference implementation; see the module docstring for each mode).

    Args:
        heatmaps: (N, K, H, W) float heatmaps (RSN: 0..255 scale) of the original input.
        centers: (N, 2) box centres in image pixels.
        box_sizes: (N, 2) box (w, h) in image pixels, after extension and aspect fit (not divided by 200).
        input_size: (W_in, H_in) of the network input.
        mode: "rsn" | "megvii" | "standard" | "dark".
        blur_kernel: odd Gaussian kernel size (rsn, megvii: the modulation blur; dark: DARK's blur).
        flipped: optional (N, K, H, W) raw heatmaps of the mirrored input; mirrored back, pair-swapped, averaged.
        flip_pairs: (i, j) pairs of left/right channels, required with ``flipped``.
    Returns:
        coords (N, K, 2) image pixels and scores (N, K), float64 for float64 heatmaps, else float32.
    """
    _check(heatmaps, centers, box_sizes, input_size, mode, blur_kernel, flipped, flip_pairs)
    dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
    hm = heatmaps.to(dtype)
    if flipped is not None:
        hm = flip_back_average(hm, flipped.to(dtype), flip_pairs)
    n, k, h, w = hm.shape
    maps = hm.reshape(n * k, h, w)
    w_in, h_in = float(input_size[0]), float(input_size[1])
    if mode == "rsn":
        x_in, y_in, scores = _decode_rsn(maps, blur_kernel, (w_in / w, h_in / h))
    else:
        if mode == "megvii":
            x_hm, y_hm, scores = _decode_megvii(maps, blur_kernel)
        elif mode == "standard":
            x_hm, y_hm, scores = _decode_standard(maps)
        else:
            x_hm, y_hm, scores = _decode_dark(maps, blur_kernel)
        x_in, y_in = x_hm * (w_in / w), y_hm * (h_in / h)
    c = centers.to(device=hm.device, dtype=dtype).unsqueeze(1)
    s = box_sizes.to(device=hm.device, dtype=dtype).unsqueeze(1)
    x_img = x_in.reshape(n, k) / w_in * s[..., 0] + c[..., 0] - s[..., 0] * 0.5
    y_img = y_in.reshape(n, k) / h_in * s[..., 1] + c[..., 1] - s[..., 1] * 0.5
    return torch.stack([x_img, y_img], dim=-1), scores.reshape(n, k)
